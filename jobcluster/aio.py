"""Small asyncio helpers shared by the programs.

We never use ``asyncio.wait_for`` on Python 3.11: when the awaited thing
finishes at the moment the calling task is cancelled, it returns the result
and the cancellation is lost (CPython gh-86296, fixed in 3.12), so a task
asked to stop keeps running. ``asyncio.timeout`` does not have this flaw.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from jobcluster import metrics
from jobcluster.errors import UNAVAILABLE, which

T = TypeVar("T")

#: While an outage lasts, say so again after this many failed tries.
_REPEAT_LOG_EVERY = 10


class Stopped(Exception):
    """The stop event was set before the operation succeeded."""


async def wait_within(aw: Awaitable[object], timeout: float | None) -> bool:
    """Await ``aw`` for at most ``timeout`` seconds (None: no limit). False when time ran out.

    When time runs out, ``aw`` is cancelled (a task too), as with ``asyncio.wait_for``.
    """
    try:
        async with asyncio.timeout(timeout):
            await aw
        return True
    except TimeoutError:
        return False


async def retrying(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    log: logging.Logger,
    errors: tuple[type[BaseException], ...] = UNAVAILABLE,
    stop: asyncio.Event | None = None,
    first_delay: float = 0.1,
    max_delay: float = 5.0,
) -> T:
    """Run ``op`` until it succeeds, waiting out outages (``errors``) with capped exponential backoff.

    The one retry loop of the programs: connecting at start, and every
    operation a worker must not give up on. Logs the outage when it begins
    (and every few tries while it lasts) and when it ends. Raises
    :class:`Stopped` when ``stop`` is set first.
    """
    delay, tries, since = first_delay, 0, 0.0
    while stop is None or not stop.is_set():
        try:
            result = await op()
        except errors as exc:
            if isinstance(exc, UNAVAILABLE):
                metrics.STORE_ERRORS.labels(which(exc).lower()).inc()
            if tries % _REPEAT_LOG_EVERY == 0:
                log.error("%s: %s unavailable (%s); retrying in %.1fs", what, which(exc), exc, delay)
            tries += 1
            since = since or time.monotonic()
            if stop is None:
                await asyncio.sleep(delay)
            else:
                await wait_within(stop.wait(), delay)
            delay = min(max_delay, delay * 2)
            continue
        if tries:
            log.info("%s: back after %.1fs", what, time.monotonic() - since)
        return result
    raise Stopped(what)
