"""What every part of the Redis queue protocol shares: the client, and a bound on each operation."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobcluster import keys

#: Bound on one queue operation (seconds). We do not use redis-py's
#: ``socket_timeout`` for this: on Python 3.11 it goes through
#: ``asyncio.wait_for``, which can swallow the cancellation of the calling task
#: (CPython gh-86296), and then a worker cannot be stopped. ``asyncio.timeout``
#: has no such flaw.
OP_TIMEOUT = 10.0
#: How long a worker's BLMOVE blocks before it looks around (seconds).
BLOCK_SECONDS = 1.0

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Part:
    """One concern's share of the protocol, over the shared client."""

    block_seconds = BLOCK_SECONDS

    def __init__(self, redis: aioredis.Redis, op_timeout: float = OP_TIMEOUT) -> None:
        self.redis = redis
        self.op_timeout = op_timeout


_Self = TypeVar("_Self", bound=Part)


def bounded(fn: Callable[Concatenate[_Self, _P], Awaitable[_T]]) -> Callable[Concatenate[_Self, _P], Awaitable[_T]]:
    """Give up on an operation after ``op_timeout`` (plus any blocking time), raising a Redis timeout."""

    @functools.wraps(fn)
    async def wrapper(self: _Self, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        blocking = kwargs.get("timeout")
        limit = self.op_timeout + (blocking if isinstance(blocking, (int, float)) else self.block_seconds)
        try:
            async with asyncio.timeout(limit):
                return await fn(self, *args, **kwargs)
        except TimeoutError as exc:
            raise RedisTimeoutError(f"Redis did not answer {fn.__name__} within {limit:g}s") from exc

    return wrapper


async def processing_lists(redis: aioredis.Redis, count: int = 500) -> list[str]:
    """The keys of every (non-empty) processing list."""
    return [str(key) async for key in redis.scan_iter(match=keys.PROCESSING_PREFIX + "*", count=count)]
