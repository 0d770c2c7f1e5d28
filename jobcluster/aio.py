"""Small asyncio helpers shared by the programs.

We never use ``asyncio.wait_for`` on Python 3.11: when the awaited thing
finishes at the moment the calling task is cancelled, it returns the result
and the cancellation is lost (CPython gh-86296, fixed in 3.12), so a task
asked to stop keeps running. ``asyncio.timeout`` does not have this flaw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


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
