"""The Host and Origin checks, on every request before anything else runs.

DNS rebinding: a page on ``evil.example`` whose name is re-pointed at the UI's
address becomes same-origin with it in the browser, but its requests still say
``Host: evil.example``; so a request must be addressed to one of the UI's own
names (:attr:`webui.config.UIConfig.names`), or it is refused with 400.

Cross-site requests: a state-changing request (anything but GET, HEAD,
OPTIONS) that carries an ``Origin`` (or, without one, a ``Referer``) must come
from the UI's own origin, the host and port it was sent to, or it is refused
with 403. This is on top of the forms' CSRF token and the JSON API's
content-type rule, not instead of them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from webui.config import UIConfig, bare_host

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(host: str) -> tuple[str, int | None]:
    """A Host header (``name``, ``name:port``, ``[v6]:port``) as (bare name, port or None)."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    else:
        name, port = host, ""
    return bare_host(name), int(port) if port.isdigit() else None


def origin_of(url: str) -> tuple[str, int | None] | None:
    """An Origin or Referer as (bare name, explicit non-default port or None); None when it has no host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    if port == DEFAULT_PORTS.get(parts.scheme):
        port = None
    return bare_host(parts.hostname), port


def same_origin(origin: str, host: str) -> bool:
    """True when the page that sent ``origin`` was served from ``host`` (the Host header), port included.

    Default ports count as none on both sides, so a UI behind a proxy on 443 matches its Host.
    """
    sent = origin_of(origin)
    name, port = split_host(host)
    if port in DEFAULT_PORTS.values():
        port = None
    return sent is not None and sent == (name, port)


def host_refusal(host: str, config: UIConfig) -> str | None:
    """Why a request addressed to ``host`` is refused, or None when it is one of the UI's names."""
    if split_host(host)[0] in config.names:
        return None
    names = ", ".join(sorted(config.names))
    return (
        f"Host not allowed: this web UI answers to {names}, not {host!r}. If you reach it by "
        f"another name (a DNS name, a proxy), add that name to WEBUI_HOSTS."
    )


def origin_refusal(method: str, headers: Headers) -> str | None:
    """Why a state-changing request from another origin is refused, or None."""
    if method in SAFE_METHODS:
        return None
    sent = headers.get("origin") or headers.get("referer")
    host = headers.get("host", "")
    if sent is None or same_origin(sent, host):
        return None
    return (
        f"Origin refused: this request came from {sent!r}, not from this web UI ({host}). "
        "Use the UI's own pages, or send API calls without a foreign Origin."
    )


class HostOriginGuard:
    """ASGI middleware: 400 for a Host that is not the UI's, 403 for a foreign Origin on a change."""

    def __init__(self, app: ASGIApp, config: UIConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = host_refusal(headers.get("host", ""), self.config)
        status = 400
        if refusal is None:
            refusal, status = origin_refusal(scope.get("method", "GET"), headers), 403
        if refusal is None:
            await self.app(scope, receive, send)
            return
        await refused(scope["path"], refusal, status)(scope, receive, send)


def refused(path: str, message: str, status: int) -> Response:
    """``{"error": message}`` for the JSON API and the live events, the message as text for pages."""
    if path.startswith("/api/") or path.endswith("/events"):
        return JSONResponse({"error": message}, status_code=status)
    return PlainTextResponse(message, status_code=status)
