"""A server's Prometheus metrics (jobcluster/metrics.py): every gRPC call through one interceptor (which also
names the RPC in the call's log lines), and the gauges a server reads on its own (queue depths, leader)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc

from jobcluster import logs, metrics
from jobcluster.election import Election
from jobcluster.errors import UNAVAILABLE
from jobcluster.queue import Queue

log = logging.getLogger("server")

#: How often a server reads the queue depths and its leadership into the gauges (seconds).
GAUGE_EVERY = 5.0


def _code_name(context: grpc.aio.ServicerContext, default: str) -> str:
    code = context.code()
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return code.name
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), default)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every call by method and status code, and times it (outermost: refused calls count too)."""

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_unary(method, handler.unary_unary))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_stream(method, handler.unary_stream))
        return handler  # no client-streaming RPCs here


@contextlib.contextmanager
def _observed(method: str, context: grpc.aio.ServicerContext) -> Iterator[None]:
    """Count and time one call, by the code it ends with; name the RPC in every line logged meanwhile
    (the call runs in its own task, so the context variable is the call's)."""
    started = time.perf_counter()
    code = "OK"
    logs.RPC.set(method)
    try:
        yield
    except (asyncio.CancelledError, GeneratorExit):
        code = "CANCELLED"  # the caller went away
        raise
    except Exception:
        code = _code_name(context, "UNKNOWN")
        raise
    finally:
        metrics.GRPC_REQUESTS.labels(method, code).inc()
        metrics.GRPC_SECONDS.labels(method).observe(time.perf_counter() - started)


def _unary(method: str, behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]) -> Any:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with _observed(method, context):
            return await behavior(request, context)

    return call


def _stream(method: str, behavior: Callable[[Any, grpc.aio.ServicerContext], Any]) -> Any:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        with _observed(method, context):
            answer = behavior(request, context)
            if inspect.isawaitable(answer):  # a handler that writes with context.write (a refusal) and returns
                await answer
                return
            async for item in answer:
                yield item

    return call


async def gauges(queue: Queue, election: Election | None) -> None:
    """Forever: every GAUGE_EVERY, the queue depths from Redis and whether this server leads."""
    while True:
        if election is not None:
            leading = election.leading()
            metrics.LEADER.set(1 if leading else 0)
            if leading:
                metrics.LEADER_TERM.set(election.token)
        try:
            for name, n in (await queue.jobs.depths()).items():
                metrics.QUEUE_DEPTH.labels(name).set(n)
        except UNAVAILABLE as exc:
            log.debug("queue depths for metrics skipped: %s", exc)
        await asyncio.sleep(GAUGE_EVERY)
