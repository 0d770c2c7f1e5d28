"""Dead-letter retry and purge on a long dlq_tasks: linear, in bounded steps, in order.

They once ran one LREM per id inside one Lua script: 63 s with 100,000 ids, during which Redis
answered nobody. Here every Redis command must stay under 50 ms (Redis' own SLOWLOG says).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from jobcluster import keys
from jobcluster.pb import scheduler_pb2 as pb
from tests.helpers import wait_for

N = 20_000
#: Redis' SLOWLOG records every command at least this long (µs): the project's budget per script.
SLOW_US = 50_000


async def _dead_letters(store, queue, n: int, stale_every: int = 0) -> tuple[list[str], set[str]]:
    """``n`` ids pushed to dlq_tasks oldest first; every ``stale_every``-th one's job is SUCCEEDED, not
    FAILED (a stale entry). Returns (ids oldest first, the stale ones)."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    stale = set(ids[::stale_every]) if stale_every else set()
    await store.pool.execute(
        "INSERT INTO jobs (id, command, status, max_retries, timeout_seconds, attempts) "
        "SELECT u, 'true', CASE WHEN u = ANY($2::uuid[]) THEN 'SUCCEEDED' ELSE 'FAILED' END, 0, 10, 1 "
        "FROM unnest($1::uuid[]) u",
        [uuid.UUID(i) for i in ids],
        [uuid.UUID(i) for i in stale],
    )
    for start in range(0, n, 5000):
        await queue.redis.lpush(keys.DLQ, *ids[start : start + 5000])
    return ids, stale


@pytest.fixture
async def slowlog(queue):
    """Redis' SLOWLOG, emptied, recording commands of SLOW_US or more; yields a function listing them."""
    before = (await queue.redis.config_get("slowlog-log-slower-than"))["slowlog-log-slower-than"]
    await queue.redis.config_set("slowlog-log-slower-than", SLOW_US)
    await queue.redis.slowlog_reset()

    async def slow() -> list[str]:
        return [f"{e['duration'] / 1000:.1f} ms {str(e['command'])[:60]}" for e in await queue.redis.slowlog_get(100)]

    yield slow
    await queue.redis.config_set("slowlog-log-slower-than", before)


async def test_retry_all_is_linear_and_keeps_the_order(stub, store, queue, slowlog):
    ids, stale = await _dead_letters(store, queue, N, stale_every=500)
    unknown = str(uuid.uuid4())  # an id with no job in PostgreSQL
    await queue.redis.rpush(keys.DLQ, unknown)  # the oldest of all
    await queue.redis.slowlog_reset()
    resp = await stub.RetryDeadLetters(pb.DeadLettersRequest(all=True), timeout=60)
    assert await slowlog() == []
    failed = [i for i in ids if i not in stale]
    assert resp.count == len(failed) and list(resp.ids) == failed
    # The jobs wait in the order they died (workers take from the right); the stale ids stay, in order.
    assert list(reversed(await queue.redis.lrange(keys.PENDING, 0, -1))) == failed
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == [i for i in reversed(ids) if i in stale] + [unknown]
    assert await store.pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'QUEUED'") == len(failed)


async def test_a_slow_retry_is_not_pushed_twice_by_reconciliation(server, stub, store, queue, monkeypatch):
    """A retry makes its jobs QUEUED in PostgreSQL, then moves their ids a chunk at a time; a leader whose
    reconciliation (RECONCILE_AFTER 1 s here) saw a job QUEUED for that long but still in dlq_tasks pushed
    it beside the retry's own push (a fresh-clone CI run: duplicates and a 73 ms script). The injected fault:
    each chunk after the first waits 1.5 s."""
    ids, _ = await _dead_letters(store, queue, 2500)
    take_oldest = server.service.queue.dead_letters.take_oldest
    chunks = []

    async def slow_chunks(*args, **kwargs):
        if chunks:
            await asyncio.sleep(1.5)
        chunks.append(1)
        return await take_oldest(*args, **kwargs)

    monkeypatch.setattr(server.service.queue.dead_letters, "take_oldest", slow_chunks)
    await wait_for(lambda: server.leader is not None and server.election.leading(), what="the server to lead")
    resp = await stub.RetryDeadLetters(pb.DeadLettersRequest(all=True), timeout=60)
    assert resp.count == len(ids) and len(chunks) == 3
    runs = server.leader.duties.runs
    after = runs["reconcile"]
    await wait_for(lambda: runs["reconcile"] >= after + 3, what="three reconciliation passes after the retry")
    pending = await queue.redis.lrange(keys.PENDING, 0, -1)
    assert len(pending) == len(set(pending)) == len(ids), "an id was pushed twice"


async def test_retry_and_purge_of_chosen_ids_are_one_pass(stub, store, queue, slowlog):
    ids, _ = await _dead_letters(store, queue, N)
    to_retry, to_purge = ids[::4], ids[1::4]
    await queue.redis.slowlog_reset()
    retried = await stub.RetryDeadLetters(pb.DeadLettersRequest(ids=list(reversed(to_retry))), timeout=60)
    purged = await stub.PurgeDeadLetters(pb.DeadLettersRequest(ids=to_purge), timeout=60)
    assert await slowlog() == []
    assert retried.count == len(to_retry) and purged.count == len(to_purge)
    assert list(reversed(await queue.redis.lrange(keys.PENDING, 0, -1))) == to_retry  # oldest dead letter first
    gone = set(to_retry) | set(to_purge)
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == [i for i in reversed(ids) if i not in gone]
    listed, token = [], ""
    while True:  # ListDeadLetters answers in pages of at most 1,000
        page = await stub.ListDeadLetters(pb.DeadLettersRequest(page_token=token), timeout=60)
        listed += [d.id for d in page.dead_letters]
        token = page.next_page_token
        if not token:
            break
    assert listed == [i for i in reversed(ids) if i not in gone]


async def test_purge_all_frees_the_list_without_blocking(stub, store, queue, slowlog):
    await _dead_letters(store, queue, N)
    await queue.redis.slowlog_reset()
    resp = await stub.PurgeDeadLetters(pb.DeadLettersRequest(all=True))
    assert resp.count == N and await queue.redis.llen(keys.DLQ) == 0
    assert await slowlog() == []
    assert await store.pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'FAILED'") == N


async def test_the_sweep_puts_back_a_scattered_loss_in_order_in_short_scripts(store, queue, slowlog):
    """2,000 of 20,000 dead letters lost from all over dlq_tasks (Redis kept the rest): the leader's sweep
    puts each back at its place in the order of deaths, over a few passes whose scripts stay under 50 ms."""
    from scheduler_server.healer import DEAD_PAGE, DeadLetterSweep

    ids = [str(uuid.uuid4()) for _ in range(N)]
    await store.pool.execute(  # each died a microsecond after the one before, once purges were recorded
        "INSERT INTO jobs (id, command, status, max_retries, timeout_seconds, attempts, updated_at) "
        "SELECT u, 'true', 'FAILED', 0, 10, 1, (SELECT applied_at FROM schema_migrations WHERE version = "
        "'0006_dead_letter_rebuild') + n * interval '1 microsecond' "
        "FROM unnest($1::uuid[]) WITH ORDINALITY AS t(u, n)",
        [uuid.UUID(i) for i in ids],
    )
    lost = set(ids[::10])
    kept = [i for i in ids if i not in lost]
    for start in range(0, len(kept), 5000):
        await queue.redis.lpush(keys.DLQ, *kept[start : start + 5000])
    await queue.redis.slowlog_reset()
    sweep = DeadLetterSweep()
    passes = 0
    while await queue.redis.llen(keys.DLQ) < N:
        await sweep.run(store, queue, 0.0)
        passes += 1
        # Each pass walks Redis' list at most PASS_WALK entries: 2,000 inserts walking ~10,000 each take ~10.
        assert passes <= 10 * N // DEAD_PAGE, "the sweep stopped putting dead letters back"
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == ids[::-1]
    assert await slowlog() == []
