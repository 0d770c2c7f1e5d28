"""SubmitJob calls in flight together are stored by one INSERT and pushed in one Redis round trip
(scheduler_server/batcher.py), and each caller still gets its own job, or its own error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from jobcluster import keys
from jobcluster.errors import POSTGRES_ERRORS
from jobcluster.pb import scheduler_pb2 as pb
from scheduler_server.errors import status_of
from tests.helpers import wait_for

CALLS = 16

#: A real refusal and a real stall inside PostgreSQL, for one job among others.
FAULT = """
CREATE FUNCTION test_submit_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.command = 'poison' THEN RAISE EXCEPTION 'poisoned job'; END IF;
    IF NEW.command = 'slow' THEN PERFORM pg_sleep(10); END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_submit_fault BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION test_submit_fault();
"""


@pytest.fixture
async def fault(store) -> AsyncIterator[None]:
    await store.pool.execute(FAULT)
    yield
    await store.pool.execute("DROP TRIGGER test_submit_fault ON jobs; DROP FUNCTION test_submit_fault()")


async def _calls(store, pattern: str) -> int:
    return int(
        await store.pool.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query ILIKE $1", pattern
        )
    )


def _spec(server, command: str, key: str = ""):
    return server.service.job_spec(pb.Job(command=command), run_at_ms=0, idempotency_key=key)


async def test_concurrent_submits_each_get_their_job_through_few_statements(server, stub, store, queue):
    await store.pool.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    await store.pool.execute("SELECT pg_stat_statements_reset()")
    batcher = server.service.submits
    flushes = batcher.flushes
    replies = await asyncio.gather(*(stub.SubmitJob(pb.Job(command=f"echo {n}")) for n in range(CALLS)))
    ids = [r.job_id for r in replies]
    assert all(r.success and not r.duplicate for r in replies) and len(set(ids)) == CALLS
    stored = {str(r["id"]): r["command"] for r in await store.pool.fetch("SELECT id, command FROM jobs")}
    assert stored == {job_id: f"echo {n}" for n, job_id in enumerate(ids)}  # each caller got its own job
    assert sorted(await queue.redis.lrange(keys.PENDING, 0, -1)) == sorted(ids)
    groups = batcher.flushes - flushes
    inserts = await _calls(store, "INSERT INTO jobs%unnest%")
    assert await _calls(store, "INSERT INTO jobs%VALUES%") == 0
    assert inserts == groups < CALLS, f"{CALLS} calls in {groups} groups, {inserts} INSERTs"


async def test_a_lone_call_is_flushed_at_once_as_a_group_of_one(server, stub):
    batcher = server.service.submits
    before = (batcher.flushes, batcher.items)
    for _ in range(3):
        assert (await stub.SubmitJob(pb.Job(command="true"))).success
    assert (batcher.flushes - before[0], batcher.items - before[1]) == (3, 3)


async def test_a_bad_job_fails_alone(server, stub, store, fault):
    # In one group (submitted in one loop turn): PostgreSQL refuses one job; its neighbours are stored.
    batcher = server.service.submits
    flushes = batcher.flushes
    specs = [_spec(server, "echo a"), _spec(server, "poison"), _spec(server, "echo b")]
    a, poisoned, b = await asyncio.gather(*(batcher.submit(s) for s in specs), return_exceptions=True)
    assert batcher.flushes - flushes == 1
    assert "poisoned job" in str(poisoned)
    assert not isinstance(a, BaseException) and not isinstance(b, BaseException) and a.inserted and b.inserted
    # Through gRPC, with a job refused by validation as well.
    jobs = [pb.Job(command=f"echo {n}") for n in range(6)] + [pb.Job(command=""), pb.Job(command="poison")]
    replies = await asyncio.gather(*(stub.SubmitJob(j) for j in jobs), return_exceptions=True)
    assert all(isinstance(r, pb.JobResponse) and r.success for r in replies[:6])
    assert isinstance(replies[6], grpc.aio.AioRpcError) and replies[6].code() is grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(replies[7], grpc.aio.AioRpcError)
    commands = sorted(await store.pool.fetchval("SELECT array_agg(command) FROM jobs"))
    assert commands == sorted(["echo a", "echo b", *(f"echo {n}" for n in range(6))])


async def test_one_idempotency_key_twice_in_one_group_is_one_job(server, stub, store, queue):
    batcher = server.service.submits
    flushes = batcher.flushes
    specs = [_spec(server, "true", "twice"), _spec(server, "true", "once"), _spec(server, "true", "twice")]
    first, other, again = await asyncio.gather(*(batcher.submit(s) for s in specs))
    assert batcher.flushes - flushes == 1
    assert first.inserted and other.inserted and not again.inserted and again.job_id == first.job_id
    # Through gRPC: many callers with one key all get the one job, and only one of them created it.
    replies = await asyncio.gather(*(stub.SubmitJob(pb.Job(command="true", idempotency_key="many")) for _ in range(8)))
    assert len({r.job_id for r in replies}) == 1 and sum(not r.duplicate for r in replies) == 1
    assert await store.pool.fetchval("SELECT count(*) FROM jobs") == 3
    assert sorted(await queue.redis.lrange(keys.PENDING, 0, -1)) == sorted(
        [first.job_id, other.job_id, replies[0].job_id]
    )


async def test_postgresql_lost_mid_group_fails_each_caller_and_stores_nothing(server, stub, store, queue, fault):
    batcher = server.service.submits
    specs = [_spec(server, f"echo {n}") for n in range(5)] + [_spec(server, "slow")]
    calls = asyncio.gather(*(batcher.submit(s) for s in specs), return_exceptions=True)
    # The group's INSERT is inside PostgreSQL (stalled on the slow row): its connection dies there.
    pid = await wait_for(
        lambda: store.pool.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query ILIKE 'INSERT INTO jobs%unnest%'"
        ),
        what="the group's INSERT running",
    )
    await store.pool.execute("SELECT pg_terminate_backend($1)", pid)
    outcomes = await calls
    assert all(isinstance(o, POSTGRES_ERRORS) for o in outcomes), outcomes
    assert all((status_of(o) or (None,))[0] is grpc.StatusCode.UNAVAILABLE for o in outcomes)
    assert await store.pool.fetchval("SELECT count(*) FROM jobs") == 0
    assert await queue.redis.llen(keys.PENDING) == 0
    assert (await stub.SubmitJob(pb.Job(command="true"))).success  # the pool heals
