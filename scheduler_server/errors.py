"""The one place where errors become gRPC status codes, for unary and streaming RPCs alike."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from jobcluster import metrics
from jobcluster.cron import InvalidSchedule
from jobcluster.errors import POSTGRES_ERRORS, REDIS_ERRORS
from jobcluster.lifecycle.policy import StoredNotQueued
from jobcluster.model import InvalidJob

R = TypeVar("R")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]
StreamHandler = Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[R]]


class NotReady(Exception):
    """The server has not reached PostgreSQL yet."""

    def __init__(self) -> None:
        super().__init__("server is starting: PostgreSQL is not reachable yet, try another server")


class NotFound(LookupError):
    """The job or schedule named does not exist."""


class Conflict(Exception):
    """The request cannot apply to the thing in its current state (e.g. cancelling an ended job)."""


class Forbidden(Exception):
    """The caller's role may make this call, but not with what it asked for (e.g. force needs admin)."""


class Exhausted(Exception):
    """A bound was reached (too many schedules or watch streams, a reply too large); the message names it."""


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status code and message for an error we expect; None for a bug (it propagates as UNKNOWN)."""
    if isinstance(exc, (InvalidJob, InvalidSchedule)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, Conflict):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, Forbidden):
        return grpc.StatusCode.PERMISSION_DENIED, str(exc)
    if isinstance(exc, Exhausted):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, (StoredNotQueued, NotReady)):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, REDIS_ERRORS):
        metrics.STORE_ERRORS.labels("redis").inc()
        return grpc.StatusCode.UNAVAILABLE, f"Redis unavailable: {exc}"
    if isinstance(exc, POSTGRES_ERRORS):
        metrics.STORE_ERRORS.labels("postgresql").inc()
        return grpc.StatusCode.UNAVAILABLE, f"PostgreSQL unavailable: {exc}"
    return None


def rpc(handler: Handler[R]) -> Handler[R]:
    """A unary RPC whose expected errors end the call with their status code."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await handler(self, request, context)
        except Exception as exc:
            mapped = status_of(exc)
            if mapped is None:
                raise
            await context.abort(*mapped)
        raise AssertionError("unreachable")  # context.abort raises

    return wrapper


def rpc_stream(handler: StreamHandler[R]) -> StreamHandler[R]:
    """A server-streaming RPC, with the same mapping as :func:`rpc`."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[R]:
        try:
            async for item in handler(self, request, context):
                yield item
        except Exception as exc:
            mapped = status_of(exc)
            if mapped is None:
                raise
            await context.abort(*mapped)

    return wrapper
