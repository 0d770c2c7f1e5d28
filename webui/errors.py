"""The one error path: an exception a person can act on becomes a message on the page they were
on, with the right HTTP status, or ``{"error": ...}`` for the JSON routes.

Handlers raise; they never catch. A page route declares, with :func:`on_error_render`,
its template and what that template needs besides the message (the typed form
values, the filters, the list it shows); a JSON route is wrapped in :func:`on_error_json`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from jobcluster.failover import FAILOVER_CODES, NotConfigured, ServerDown
from webui.web import UserError, render

Endpoint = Callable[[Request], Awaitable[Response]]
#: What a page's template needs when it is shown with an error instead of its data.
ErrorContext = Callable[[Request], Awaitable[dict[str, Any]]]
#: Errors shown to the person; anything else is a bug and answers 500.
PAGE_ERRORS: tuple[type[Exception], ...] = (UserError, NotConfigured, ServerDown, grpc.aio.AioRpcError)
#: The JSON API also answers 400 to values it cannot convert (bad JSON, ``limit=abc``).
API_ERRORS: tuple[type[Exception], ...] = (*PAGE_ERRORS, ValueError, TypeError)
GRPC_TO_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}


def describe(exc: Exception) -> tuple[str, int]:
    """The message a person sees for ``exc``, and the HTTP status it goes with."""
    if isinstance(exc, UserError):
        return str(exc), exc.status
    if isinstance(exc, ServerDown):
        exc = exc.last
    if isinstance(exc, grpc.RpcError):
        code = exc.code()
        if code in FAILOVER_CODES:
            return f"The server is not answering ({exc.details()}). Try another server.", 503
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return (
                f"The servers refused the token ({exc.details() or code.name}): log in again with a token "
                "they accept, or set the web UI's AUTH_TOKEN to one.",
                401,
            )
        return exc.details() or code.name, GRPC_TO_HTTP.get(code, 503)
    return str(exc), 400


def context(**values: Any) -> ErrorContext:
    """An :data:`ErrorContext` that is always ``values``."""

    async def fixed(request: Request) -> dict[str, Any]:
        return dict(values)

    return fixed


def on_error_render(template: str, error_context: ErrorContext) -> Callable[[Endpoint], Endpoint]:
    """A page route: on a :data:`PAGE_ERRORS` error, show ``template`` with the message and its status."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def page(request: Request) -> Response:
            try:
                return await endpoint(request)
            except PAGE_ERRORS as exc:
                message, status = describe(exc)
                return render(request, template, status, error=message, **await error_context(request))

        return page

    return wrap


def on_error_json(endpoint: Endpoint) -> Endpoint:
    """A JSON route: on an :data:`API_ERRORS` error, answer ``{"error": message}`` with its status."""

    @functools.wraps(endpoint)
    async def api(request: Request) -> Response:
        try:
            return await endpoint(request)
        except API_ERRORS as exc:
            message, status = describe(exc)
            return JSONResponse({"error": message}, status_code=status)

    return api
