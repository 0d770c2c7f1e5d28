"""The web UI: one Starlette process that talks to the servers over gRPC only.

Pages, one module per area under ``webui/pages/``: submit form (/), jobs (/jobs,
/jobs/{id} live through Server-Sent Events), dead letters (/dlq), schedules
(/schedules), cluster (/cluster), login (/login). JSON for curl in :mod:`webui.api`;
Prometheus metrics at /metrics.
What the pages share is in :mod:`webui.web`; how errors are shown, in :mod:`webui.errors`.

Safety, outermost first: X-Forwarded-For believed only from WEBUI_TRUSTED_PROXIES
(uvicorn's own trust is off); security headers on every answer; the Host and Origin
checks (:mod:`webui.guard`); the login when one is required (:mod:`webui.auth`);
then server addresses from the browser must be configured ones; every form
POST carries a CSRF token matching its cookie; the JSON API takes only
``application/json``; Jinja escapes everything; a strict Content-Security-Policy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from jobcluster.failover import AioConnector, AioPool
from webui import api
from webui.auth import Auth, RequireLogin
from webui.config import UIConfig
from webui.guard import HostOriginGuard
from webui.pages import cluster, dead_letters, jobs, login, schedules, submit
from webui.sessions import Clock
from webui.web import HERE, RequestMetrics, SecurityHeaders, favicon, metrics_page


def routes() -> list[BaseRoute]:
    """Every route of the UI, area by area, then the static files."""
    return [
        *submit.routes,
        *jobs.routes,
        *dead_letters.routes,
        *schedules.routes,
        *cluster.routes,
        *login.routes,
        *api.routes,
        Route("/metrics", metrics_page),
        Route("/favicon.ico", favicon),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]


def create_app(
    servers: Sequence[str],
    connector: AioConnector | None = None,
    config: UIConfig | None = None,
    clock: Clock = time.monotonic,
) -> Starlette:
    """The UI for these servers, as ``config`` says (default: on loopback, no login).

    ``connector`` stands in for real gRPC channels and ``clock`` for the sessions' time (tests).
    """
    pool = AioPool(servers, connector)
    config = config or UIConfig()
    auth = Auth.create(config, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await pool.close()

    # The client address (failed logins are counted against it) is the peer's, or what a trusted proxy says.
    proxies = (
        [Middleware(ProxyHeadersMiddleware, trusted_hosts=list(config.trusted_proxies))]
        if config.trusted_proxies
        else []
    )
    app = Starlette(
        routes=routes(),
        lifespan=lifespan,
        middleware=[
            *proxies,
            Middleware(RequestMetrics),
            Middleware(SecurityHeaders),
            Middleware(HostOriginGuard, config=config),
            Middleware(RequireLogin, auth=auth, pool=pool),
        ],
    )
    app.state.pool = pool
    app.state.config = config
    app.state.auth = auth
    return app
