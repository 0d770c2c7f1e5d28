"""The store's pool: a pooled statement is one round trip (no reset traffic on release), and no session
state leaks from one borrower to the next (a LISTEN, an open transaction)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from jobcluster.settings import Settings
from jobcluster.store import Store

STATEMENTS = 50


async def test_a_pooled_statement_is_one_round_trip(settings: Settings) -> None:
    store = await Store.connect(replace(settings, pg_min_conns=1, pg_max_conns=1))
    try:
        sent: list[str] = []
        async with store.pool.acquire() as conn:  # the pool's only connection: every release below is its own
            conn.add_query_logger(lambda q: sent.append(q.query))
        sent.clear()
        for n in range(STATEMENTS):
            assert await store.pool.fetchval("SELECT $1::int", n) == n
        # asyncpg's default reset would log "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
        # RESET ALL;" after each one: 2 * STATEMENTS round trips.
        assert sent == ["SELECT $1::int"] * STATEMENTS
    finally:
        await store.close()


async def test_no_reset_query_reaches_postgresql(store: Store) -> None:
    await store.pool.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    await store.pool.execute("SELECT pg_stat_statements_reset()")
    await asyncio.gather(*(store.pool.fetchval("SELECT 1") for _ in range(STATEMENTS)))
    resets = await store.pool.fetchval(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query IN ('RESET ALL', 'UNLISTEN *', "
        "'CLOSE ALL') OR query ILIKE '%pg_advisory_unlock_all%'"
    )
    assert resets == 0


async def test_a_listening_connection_goes_back_to_the_pool_unlistened(settings: Settings) -> None:
    store = await Store.connect(replace(settings, pg_min_conns=1, pg_max_conns=1))
    try:
        listener = await store.watchers.listen(lambda _job: None, lambda: None)
        await listener.close()
        # The pool's only connection, the one that listened: it hears nothing any more.
        assert await store.pool.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
    finally:
        await store.close()


async def test_a_transaction_left_open_is_rolled_back_before_the_next_borrower(settings: Settings) -> None:
    store = await Store.connect(replace(settings, pg_min_conns=1, pg_max_conns=1))
    try:
        conn = await store.pool.acquire()
        await conn.execute("BEGIN")  # not through conn.transaction(): as if a caller was cancelled mid-way
        await store.pool.release(conn)
        async with store.pool.acquire() as again:  # the same (only) connection
            assert not again.is_in_transaction()
    finally:
        await store.close()
