"""What every page shares: the server pool, the templates, rendering, forms with their CSRF check,
and the security headers.

Safety: every form POST carries a CSRF token matching its cookie; Jinja
escapes everything; a strict Content-Security-Policy (no inline scripts).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from markupsafe import Markup
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.templating import Jinja2Templates

from jobcluster import metrics
from jobcluster.failover import AioPool
from jobcluster.model import TERMINAL, InvalidJob, Status, validate_routing
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pbjson import to_dict
from webui.caller import CallerPool
from webui.config import UIConfig

HERE = Path(__file__).parent
CSRF_COOKIE = "jobcluster_csrf"
STATUSES = tuple(s.value for s in Status)
#: Rendered on <body> as data-terminal-statuses, so the script has no copy of its own.
TERMINAL_STATUSES = tuple(s for s in STATUSES if s in TERMINAL)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


class UserError(Exception):
    """Something the person can fix; shown on the page with this HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def when(ms: int) -> str:
    """Unix milliseconds as ``YYYY-MM-DD HH:MM:SS.mmmZ``; ``-`` for 0."""
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def relative(ms: int, now_ms: int | None = None) -> str:
    """``12 s ago``, ``3 min ago``, ``in 2 h``, ``5 d ago``; ``-`` for 0."""
    if not ms:
        return "-"
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    secs = abs(now_ms - ms) / 1000
    if secs < 1:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if secs >= size:
            amount = f"{int(secs // size)} {unit}"
            break
    return f"in {amount}" if ms > now_ms else f"{amount} ago"


def ago(ms: int) -> Markup:
    """A time for a page: relative (``3 min ago``), the exact one on hover (``title``) and for machines."""
    if not ms:
        return Markup("-")
    return Markup('<time datetime="{iso}" data-ms="{ms}" title="{exact}">{text}</time>').format(
        iso=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z",
        ms=ms,
        exact=when(ms),
        text=relative(ms),
    )


def duration(start_ms: int, end_ms: int) -> str:
    """How long an attempt took, ``-`` when it has not both started and finished."""
    if not start_ms or not end_ms:
        return "-"
    d = (end_ms - start_ms) / 1000
    return f"{d * 1000:.0f} ms" if d < 1 else f"{d:.1f} s"


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals.update(
    when=ago, exact=when, duration=duration, statuses=STATUSES, terminal_statuses=TERMINAL_STATUSES
)


def pool_of(request: Request) -> CallerPool:
    """The app's pool of gRPC servers, calling with this request's token (see :mod:`webui.caller`)."""
    pool: AioPool = request.app.state.pool
    return CallerPool(pool, request.scope.get("state", {}).get("caller_token"))


def config_of(request: Request) -> UIConfig:
    config: UIConfig = request.app.state.config
    return config


def csrf_token(request: Request) -> str:
    """The token for this browser's forms: its cookie's, else a new one that the response sets."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "csrf_token", None)
    if not token:
        token = secrets.token_urlsafe(24)
    request.state.csrf_token = token
    return token


def render(request: Request, name: str, code: int = 200, **ctx: Any) -> Response:
    """Render template ``name``; every page gets the servers, the CSRF token, its name and ``error``."""
    ctx.setdefault("error", None)
    session = request.scope.get("state", {}).get("session")
    return templates.TemplateResponse(
        request,
        name,
        {
            "servers": pool_of(request).addresses,
            "csrf": csrf_token(request),
            "page": name.split(".")[0],
            "session": session,
            "login_required": config_of(request).login_required,
            **ctx,
        },
        status_code=code,
    )


async def read_form(request: Request) -> dict[str, str]:
    """The posted form, once its CSRF token matches the cookie (403 otherwise); kept for re-rendering."""
    data = await request.form()
    sent = str(data.get("csrf", ""))
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not secrets.compare_digest(sent, cookie):
        raise UserError(
            "This form is missing its security token (CSRF) or it is stale. Reload the page and submit again.", 403
        )
    values = {k: str(v) for k, v in data.items()}
    request.state.form = values
    return values


def form_values(request: Request) -> dict[str, str]:
    """What :func:`read_form` accepted for this request, so a failed form shows the typed values again."""
    values: dict[str, str] = getattr(request.state, "form", {})
    return values


def _whole(field: str, value: Any) -> int:
    """A whole number from a form (text) or JSON (a number); blank is 0."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise UserError(f"{field} must be a whole number, got {str(value)[:40]!r}")


def routing_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The routing of a job from the submit form or a JSON body (queue, priority, constraints as a list
    or a comma-separated text, concurrency_key, max_concurrency), checked as the servers check them;
    :class:`UserError` naming what is wrong."""
    tags = values.get("constraints") or []
    if isinstance(tags, str):
        tags = [t for t in tags.split(",") if t.strip()]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise UserError("constraints must be a list of tags (or one text, comma-separated), such as gpu, region=eu")
    for field in ("queue", "concurrency_key"):
        if not isinstance(values.get(field) or "", str):
            raise UserError(f"{field} must be text")
    try:
        routing = validate_routing(
            queue=values.get("queue") or "",
            priority=_whole("priority", values.get("priority")),
            constraints=tags,
            concurrency_key=(values.get("concurrency_key") or "").strip(),
            max_concurrency=_whole("max_concurrency", values.get("max_concurrency")),
        )
    except InvalidJob as exc:
        raise UserError(str(exc)) from None
    return routing.routing()


def job_json(job: pb.JobStatus) -> dict[str, Any]:
    """A job as JSON for the API and the live page (the protobuf timestamps left out; integers as numbers)."""
    d = to_dict(job)
    d.pop("created_at", None)
    d.pop("updated_at", None)
    return d


class RequestMetrics(BaseHTTPMiddleware):
    """Counts and times every request (jobcluster_webui_requests_total, ..._duration_seconds)."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        started = time.perf_counter()
        code = 500
        try:
            response = await call_next(request)
            code = response.status_code
            return response
        finally:
            metrics.WEBUI_REQUESTS.labels(request.method, str(code)).inc()
            metrics.WEBUI_SECONDS.labels(request.method).observe(time.perf_counter() - started)


async def metrics_page(request: Request) -> Response:
    """GET /metrics: this process's Prometheus metrics (open, like /api/health: counts only)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def favicon(request: Request) -> Response:
    """GET /favicon.ico (browsers ask for it on their own): the SVG icon, cached for a day."""
    return FileResponse(
        HERE / "static" / "favicon.svg", media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"}
    )


class SecurityHeaders(BaseHTTPMiddleware):
    """The Content-Security-Policy and friends on every response, and the CSRF cookie when new."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        token = request.scope.get("state", {}).get("csrf_token")
        if token and request.cookies.get(CSRF_COOKIE) != token:
            response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", secure=config_of(request).tls)
        return response
