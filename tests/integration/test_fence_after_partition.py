"""A leader cut off in the middle of a fenced transaction does not block the next leader for good.

Found by ``make multihost``: host 2's server was partitioned while its fenced transaction held the
``leader_fence`` row FOR SHARE. PostgreSQL cannot tell a silent peer from a slow one (TCP keepalive
notices after hours), so the new leader's ``take_fence`` waited on the row lock until the partition
healed. Our sessions carry ``idle_in_transaction_session_timeout``: PostgreSQL ends such a transaction.
A connection that stops talking mid-transaction is what a partition looks like from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from jobcluster.settings import Settings
from jobcluster.store import IDLE_IN_TRANSACTION_TIMEOUT, Store


@pytest.mark.long("waits for PostgreSQL's idle-in-transaction timeout to end the silent leader's session: ~5 s")
async def test_a_silent_deposed_leader_releases_the_fence_for_the_next_term(store: Store, settings: Settings) -> None:
    assert await store.fencing.take(5, "old-leader")
    silent = asyncio.Event()

    async def old_leader() -> None:
        try:
            async with store.fencing.fenced(5):
                silent.set()
                await asyncio.sleep(3600)  # cut off: it never commits, never rolls back
        except Exception:  # noqa: BLE001 - PostgreSQL ended the session under it: what we want
            pass

    old = asyncio.create_task(old_leader())
    await silent.wait()
    other = await Store.connect(settings, migrate=False)
    try:
        t0 = time.monotonic()
        assert await other.fencing.take(6, "new-leader")  # waits on the row lock until the old one is gone
        waited = time.monotonic() - t0
    finally:
        old.cancel()
        await asyncio.gather(old, return_exceptions=True)
        await other.close()
    print(
        f"new term recorded after {waited:.1f}s (idle_in_transaction_session_timeout {IDLE_IN_TRANSACTION_TIMEOUT:g}s)"
    )
    assert waited < IDLE_IN_TRANSACTION_TIMEOUT + 3
