"""Taking back a gone worker's jobs, against real Redis and PostgreSQL: PostgreSQL commits before
Redis moves an id, and a recovery cut between the two is finished by the next one."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from jobcluster import keys
from jobcluster.lifecycle.recover import recover_worker
from jobcluster.model import JobSpec, Status
from jobcluster.queue import Queue
from jobcluster.rows import Claimed
from jobcluster.store import Store
from tests.helpers import group_members, wait_for

TERM = 7


async def _running_on(store: Store, queue: Queue, worker_id: str) -> str:
    """A job RUNNING on ``worker_id`` with its id in that worker's processing list."""
    sub = await store.jobs.insert(JobSpec("sleep 20", "", "", 3, 60.0, 0, ""), "test")
    await queue.jobs.enqueue(sub.job_id)
    assert await queue.jobs.dequeue(worker_id, timeout=0.1) == sub.job_id
    assert await store.jobs.claim(sub.job_id, worker_id) is not None
    await store.pool.execute("UPDATE leader_fence SET token = $1", TERM)
    return sub.job_id


async def test_a_worker_taking_the_id_at_once_can_claim_the_job(
    store: Store, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving that lost ids: a live worker BLMOVEs the id the moment Redis has it back.
    Before the fix the leader's transaction had not committed yet, the claim saw the job RUNNING,
    and the worker dropped the id (QUEUED, in no Redis list, until reconciliation)."""
    job_id = await _running_on(store, queue, "dead")
    claims: list[Claimed | None] = []
    move = queue.liveness.recover_processing

    async def move_then_a_worker_takes_it(worker_id: str, dead_ids: list[str], *lanes: dict[str, str]) -> int:
        moved = await move(worker_id, dead_ids, *lanes)
        taken = await queue.jobs.dequeue("alive", timeout=0.1)
        assert taken == job_id
        claims.append(await store.jobs.claim(taken, "alive"))
        return moved

    monkeypatch.setattr(queue.liveness, "recover_processing", move_then_a_worker_takes_it)
    back, dead = await recover_worker(
        store, queue, "dead", "worker lost: test", transaction=lambda: store.fencing.fenced(TERM)
    )
    assert (back, dead) == (1, 0)
    assert claims and claims[0] is not None and claims[0].attempt == 2
    state = await store.jobs.state(job_id)
    assert state is not None and state.status is Status.RUNNING


async def test_a_recovery_cut_between_the_stores_is_finished_by_the_next(
    store: Store, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader dies after PostgreSQL committed and before Redis moved: the processing list stays,
    and the next cleanup of the same worker moves the id back, so it is claimable from the queue."""
    job_id = await _running_on(store, queue, "dead")
    move = queue.liveness.recover_processing

    async def leader_dies(worker_id: str, dead_ids: list[str], *lanes: dict[str, str]) -> int:
        raise ConnectionError("leader died here")

    monkeypatch.setattr(queue.liveness, "recover_processing", leader_dies)
    with pytest.raises(ConnectionError):
        await recover_worker(store, queue, "dead", "worker lost: test", transaction=lambda: store.fencing.fenced(TERM))
    state = await store.jobs.state(job_id)
    assert state is not None and state.status is Status.QUEUED
    assert await queue.liveness.processing_ids("dead") == [job_id]

    monkeypatch.setattr(queue.liveness, "recover_processing", move)
    assert await recover_worker(
        store, queue, "dead", "worker lost: test", transaction=lambda: store.fencing.fenced(TERM)
    ) == (1, 0)
    assert await queue.jobs.dequeue("alive", timeout=0.1) == job_id
    assert await store.jobs.claim(job_id, "alive") is not None


async def test_a_worker_declared_dead_kills_its_attempt_and_records_nothing(
    store: Store, queue: Queue, make_worker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The leader declared a live worker dead (a stall) and requeued its job: the worker kills the old
    attempt at once rather than let it run beside the rerun, and writes nothing for it."""
    marks, pgid = tmp_path / "marks", tmp_path / "pgid"
    sub = await store.jobs.insert(
        JobSpec(
            f'echo $JOB_ATTEMPT >> {marks}; [ "$JOB_ATTEMPT" = 1 ] && {{ echo $$ > {pgid}; exec sleep 60; }}; true',
            "",
            "",
            3,
            120.0,
            0,
            "",
        ),
        "test",
    )
    await queue.jobs.enqueue(sub.job_id)
    worker = make_worker("w-stalled", burst=False, worker_concurrency=2, job_kill_grace=0.5)
    running = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: pgid.exists() and pgid.read_text().strip(), what="attempt 1 started")
        group = int(pgid.read_text())
        # What the leader's cleanup does to a worker it believes dead.
        assert await recover_worker(store, queue, "w-stalled", "worker lost: test") == (1, 0)
        await wait_for(lambda: not group_members(group), timeout=10, what="attempt 1 killed")

        async def succeeded() -> bool:
            state = await store.jobs.state(sub.job_id)
            return state is not None and state.status is Status.SUCCEEDED

        await wait_for(succeeded, timeout=15, what="the rerun succeeded")
    finally:
        worker.stop()
        await running
    rows = await store.pool.fetch(
        "SELECT attempt, error, output FROM job_attempts WHERE job_id = $1 ORDER BY attempt", uuid.UUID(sub.job_id)
    )
    assert [(r["attempt"], r["error"]) for r in rows] == [(1, "worker lost: test"), (2, "")]
    assert marks.read_text().split() == ["1", "2"]
    assert "nothing recorded" in caplog.text


@pytest.mark.parametrize("skew_ms", [30_000, -30_000])
async def test_a_workers_host_clock_decides_no_retry_time(
    store: Store, queue: Queue, make_worker, skew_ms: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose host clock is 30 s off retries a failed job after its backoff, not 30 s late (or in
    a claim/refuse loop): the retry is due by PostgreSQL's clock and waits in delayed_jobs by Redis'."""
    from jobcluster import clock

    monkeypatch.setattr(clock, "_skew_ms", skew_ms)
    sub = await store.jobs.insert(JobSpec('[ "$JOB_ATTEMPT" = 1 ] && exit 1; true', "", "", 3, 30.0, 0, ""), "test")
    await queue.jobs.enqueue(sub.job_id)
    worker = make_worker("w-skewed", retry_backoff_base=0.3, retry_backoff_max=0.3)
    async with asyncio.timeout(10):
        await worker.run()  # burst: returns once nothing is left
    state = await store.jobs.state(sub.job_id)
    assert state is not None and state.status is Status.SUCCEEDED
    claims = await store.pool.fetchval("SELECT count(*) FROM job_attempts WHERE job_id = $1", uuid.UUID(sub.job_id))
    assert claims == 2


async def test_a_retry_is_due_by_postgresql_and_waits_in_redis_by_redis(store: Store, queue: Queue) -> None:
    sub = await store.jobs.insert(JobSpec("false", "", "", 3, 30.0, 0, ""), "test")
    await queue.jobs.enqueue(sub.job_id)
    assert await queue.jobs.dequeue("w", timeout=0.1) == sub.job_id
    claimed = await store.jobs.claim(sub.job_id, "w")
    assert claimed is not None
    assert await store.jobs.finish_attempt(
        claimed,
        Status.PENDING,
        exit_code=1,
        error="exit code 1",
        output="",
        output_truncated=False,
        retry_delay_ms=60_000,
    )
    ahead = await store.pool.fetchval(
        "SELECT extract(epoch FROM not_before - now()) FROM jobs WHERE id = $1", uuid.UUID(sub.job_id)
    )
    assert 59 < ahead <= 60
    state = await store.jobs.state(sub.job_id)
    assert state is not None and not state.due and 59_000 < state.wait_ms <= 60_000
    await queue.jobs.retry_later("w", sub.job_id, state.wait_ms)
    secs, micros = await queue.redis.time()
    score = await queue.redis.zscore(keys.DELAYED, sub.job_id)
    assert 58_000 < score - (secs * 1000 + micros // 1000) <= 60_000
