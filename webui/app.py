"""The web UI: one Starlette process that talks to the servers over gRPC only.

Pages, one module per area under ``webui/pages/``: submit form (/), jobs (/jobs,
/jobs/{id} live through Server-Sent Events), dead letters (/dlq), schedules
(/schedules), cluster (/cluster). JSON for curl in :mod:`webui.api`. What the
pages share is in :mod:`webui.web`; how errors are shown, in :mod:`webui.errors`.

Safety: server addresses from the browser must be configured ones; every form
POST carries a CSRF token matching its cookie; the JSON API takes only
``application/json``; Jinja escapes everything; a strict Content-Security-Policy.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from jobcluster.failover import AioConnector, AioPool
from webui import api
from webui.pages import cluster, dead_letters, jobs, schedules, submit
from webui.web import HERE, SecurityHeaders


def routes() -> list[BaseRoute]:
    """Every route of the UI, area by area, then the static files."""
    return [*submit.routes, *jobs.routes, *dead_letters.routes, *schedules.routes, *cluster.routes,
            *api.routes, Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")]


def create_app(servers: Sequence[str], connector: AioConnector | None = None) -> Starlette:
    """The UI for these servers; ``connector`` stands in for real gRPC channels (tests pass a fake)."""
    pool = AioPool(servers, connector)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await pool.close()

    app = Starlette(routes=routes(), middleware=[Middleware(SecurityHeaders)], lifespan=lifespan)
    app.state.pool = pool
    return app
