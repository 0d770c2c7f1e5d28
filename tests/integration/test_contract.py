"""One contract for the store and the queue, run against the real PostgreSQL and Redis and against the
in-memory fakes (tests/fakes.py): the guards the lifecycle relies on, so the fakes cannot drift."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from jobcluster import keys
from jobcluster.model import Serving, Status
from jobcluster.rows import Claimed
from tests.fakes import FakeClock, FakeQueue, FakeStore, spec


@dataclass
class Stores:
    store: Any  # a Store or a FakeStore
    queue: Any  # a Queue or a FakeQueue
    kind: str

    async def held(self, worker_id: str) -> list[str]:
        """The ids in a worker's processing list, newest first."""
        if self.kind == "fake":
            return list(self.queue.processing.get(worker_id, []))
        return list(await self.queue.redis.lrange(keys.processing(worker_id), 0, -1))

    async def lane(self, lane: str = keys.PENDING) -> list[str]:
        if self.kind == "fake":
            return list(self.queue.lane(lane))
        return list(await self.queue.redis.lrange(lane, 0, -1))

    async def delayed(self) -> set[str]:
        if self.kind == "fake":
            return set(self.queue.delayed)
        return set(await self.queue.redis.zrange(keys.DELAYED, 0, -1))

    async def dlq(self) -> list[str]:
        if self.kind == "fake":
            return list(self.queue.dlq)
        return list(await self.queue.redis.lrange(keys.DLQ, 0, -1))


@pytest.fixture(params=["real", "fake"])
def s(request: pytest.FixtureRequest) -> Stores:
    if request.param == "real":  # the real ones, emptied for each test
        return Stores(request.getfixturevalue("store"), request.getfixturevalue("queue"), "real")
    clock = FakeClock()
    return Stores(FakeStore(clock), FakeQueue(clock), "fake")


async def _running(s: Stores, worker: str = "w", **fields: Any) -> Claimed:
    [sub] = await s.store.jobs.insert_many([spec(**fields)], "test")
    claimed = await s.store.jobs.claim(sub.job_id, worker, uuid.uuid4())
    assert claimed is not None
    return claimed


# --- the store ------------------------------------------------------------------


async def test_a_claim_opens_attempt_one_once_and_the_same_token_gets_it_again(s: Stores) -> None:
    [sub] = await s.store.jobs.insert_many([spec(command="echo hi")], "test")
    assert sub.inserted and sub.status is Status.QUEUED
    token = uuid.uuid4()
    first = await s.store.jobs.claim(sub.job_id, "w", token)
    assert first is not None and first.attempt == 1 and first.command == "echo hi"
    assert await s.store.jobs.claim(sub.job_id, "other", uuid.uuid4()) is None
    again = await s.store.jobs.claim(sub.job_id, "w", token)  # the reply was lost: the same attempt
    assert again is not None and again.attempt == 1
    owners = await s.store.liveness.job_owners([sub.job_id])
    assert owners[sub.job_id] == (Status.RUNNING.value, 1, "w")


async def test_an_attempt_that_lost_its_job_writes_nothing(s: Stores) -> None:
    claimed = await _running(s, max_retries=3)
    assert await s.store.liveness.recover_worker_jobs(["w"], "worker lost") == [(claimed.job_id, Status.QUEUED)]
    second = await s.store.jobs.claim(claimed.job_id, "w2", uuid.uuid4())
    assert second is not None and second.attempt == 2
    late = dict(exit_code=0, error="", output="late", output_truncated=False)
    assert not await s.store.jobs.finish_attempt(claimed, Status.SUCCEEDED, **late)  # fenced by its number
    assert await s.store.jobs.finish_attempt(second, Status.SUCCEEDED, **late)
    assert not await s.store.jobs.finish_attempt(second, Status.FAILED, **late)  # one terminal status
    state = await s.store.jobs.state(claimed.job_id)
    assert state is not None and state.status is Status.SUCCEEDED
    assert await s.store.jobs.claim(claimed.job_id, "w3", uuid.uuid4()) is None


async def test_a_retry_waits_by_the_stores_clock_and_a_due_one_is_claimable(s: Stores) -> None:
    claimed = await _running(s)
    ended = dict(exit_code=1, error="exit code 1", output="", output_truncated=False)
    assert await s.store.jobs.finish_attempt(claimed, Status.PENDING, retry_delay_ms=60_000, **ended)
    assert await s.store.jobs.claim(claimed.job_id, "w", uuid.uuid4()) is None
    state = await s.store.jobs.state(claimed.job_id)
    assert state is not None and state.status is Status.PENDING and not state.due
    assert 50_000 < state.wait_ms <= 60_000
    other = await _running(s)
    assert await s.store.jobs.finish_attempt(other, Status.PENDING, retry_delay_ms=0, **ended)
    again = await s.store.jobs.claim(other.job_id, "w", uuid.uuid4())
    assert again is not None and again.attempt == 2 and again.interruptions == 0


async def test_an_interrupted_attempt_does_not_count(s: Stores) -> None:
    claimed = await _running(s)
    cut = dict(exit_code=None, error="interrupted", output="", output_truncated=False)
    assert await s.store.jobs.finish_attempt(claimed, Status.QUEUED, interrupted=True, **cut)
    again = await s.store.jobs.claim(claimed.job_id, "w", uuid.uuid4())
    assert again is not None and again.attempt == 2 and again.interruptions == 1


async def test_cancel_a_waiting_a_running_and_an_ended_job(s: Stores) -> None:
    [waiting] = await s.store.jobs.insert_many([spec()], "test")
    done = await s.store.jobs.cancel(waiting.job_id, "cancelled")
    assert (done.found, done.cancelled, done.status) == (True, True, Status.QUEUED)
    assert await s.store.jobs.claim(waiting.job_id, "w", uuid.uuid4()) is None
    running = await _running(s)
    done = await s.store.jobs.cancel(running.job_id, "cancelled")
    assert (done.cancelled, done.status, done.worker_id) == (True, Status.RUNNING, "w")
    assert await s.store.jobs.cancelled_among([running.job_id, waiting.job_id]) == {running.job_id, waiting.job_id}
    ended = dict(exit_code=0, error="", output="out", output_truncated=False)
    assert not await s.store.jobs.finish_attempt(running, Status.SUCCEEDED, **ended)
    assert await s.store.jobs.close_cancelled_attempt(running, 0, "cancelled", "out", False)
    assert not await s.store.jobs.close_cancelled_attempt(running, 0, "again", "out", False)  # once
    again = await s.store.jobs.cancel(running.job_id, "cancelled")
    assert (again.found, again.cancelled, again.status) == (True, False, Status.CANCELLED)
    missing = await s.store.jobs.cancel(str(uuid.uuid4()), "cancelled")
    assert not missing.found


async def test_a_lost_workers_jobs_go_back_or_fail_when_their_retries_are_spent(s: Stores) -> None:
    back = await _running(s, "gone", max_retries=1)
    spent = await _running(s, "gone", max_retries=0)
    other = await _running(s, "alive")
    moved = dict(await s.store.liveness.recover_worker_jobs(["gone"], "worker lost"))
    assert moved == {back.job_id: Status.QUEUED, spent.job_id: Status.FAILED}
    assert (await s.store.liveness.job_owners([other.job_id]))[other.job_id][0] == Status.RUNNING.value
    assert await s.store.liveness.recover_worker_jobs(["gone"], "again") == []


async def test_a_dead_letter_retried_has_a_fresh_budget(s: Stores) -> None:
    claimed = await _running(s, max_retries=0)
    failed = dict(exit_code=1, error="exit code 1", output="", output_truncated=False)
    assert await s.store.jobs.finish_attempt(claimed, Status.FAILED, **failed)
    assert await s.store.dead_letters.retry([claimed.job_id, str(uuid.uuid4())]) == [claimed.job_id]
    assert await s.store.dead_letters.retry([claimed.job_id]) == []  # no longer FAILED
    again = await s.store.jobs.claim(claimed.job_id, "w", uuid.uuid4())
    assert again is not None and again.attempt == 2 and again.interruptions == 1  # attempts_base: a fresh budget


async def test_an_idempotency_key_names_the_first_job(s: Stores) -> None:
    [a, b] = await s.store.jobs.insert_many([spec(idempotency_key="k1"), spec(idempotency_key="k2")], "test")
    [again] = await s.store.jobs.insert_many([spec(idempotency_key="k1", command="other")], "test")
    assert again.job_id == a.job_id and not again.inserted and a.job_id != b.job_id
    single = await s.store.jobs.insert(spec(idempotency_key="k2"), "test")
    assert single.job_id == b.job_id and not single.inserted


async def test_a_claim_takes_only_what_the_worker_serves_and_what_its_key_allows(s: Stores) -> None:
    [gpu, slow] = await s.store.jobs.insert_many([spec(constraints=("gpu",)), spec(queue="slow")], "test")
    plain = Serving(queues=("default",))
    assert await s.store.jobs.claim(gpu.job_id, "w", uuid.uuid4(), serves=plain) is None
    assert await s.store.jobs.claim(slow.job_id, "w", uuid.uuid4(), serves=plain) is None
    state = await s.store.jobs.state(gpu.job_id)
    assert state is not None and state.lane == keys.lane("default", 0, ("gpu",)) and state.constraints == ("gpu",)
    both = Serving(queues=("default", "slow"), tags=frozenset({"gpu"}))
    assert await s.store.jobs.claim(gpu.job_id, "w", uuid.uuid4(), serves=both) is not None
    keyed = await s.store.jobs.insert_many([spec(concurrency_key="db", max_concurrency=2) for _ in range(3)], "test")
    got = [await s.store.jobs.claim(k.job_id, "w", uuid.uuid4()) for k in keyed]
    assert [c is not None for c in got] == [True, True, False]  # two may run at once


# --- the queue ------------------------------------------------------------------


async def test_ids_are_taken_in_order_and_one_put_back_at_the_front_goes_next(s: Stores) -> None:
    await s.queue.jobs.enqueue_many([("a", 0, keys.PENDING), ("b", 0, keys.PENDING), ("c", 0, keys.PENDING)])
    assert await s.queue.jobs.dequeue("w", timeout=0.01) == "a"
    assert await s.queue.jobs.dequeue("w", timeout=0.01) == "b"
    assert await s.held("w") == ["b", "a"]
    await s.queue.jobs.requeue_front("w", "a")
    assert await s.queue.jobs.dequeue("w", timeout=0.01) == "a"
    await s.queue.jobs.ack("w", "a")
    await s.queue.jobs.ack("w", "b")
    assert await s.held("w") == []
    assert await s.queue.jobs.dequeue("w", timeout=0.01) == "c"
    assert await s.queue.jobs.dequeue("w", timeout=0.01) is None


async def test_a_backed_off_id_waits_in_delayed_jobs_until_promoted(s: Stores) -> None:
    await s.queue.jobs.enqueue_many([("a", 0, keys.PENDING), ("b", 0, keys.PENDING)])
    assert await s.queue.jobs.dequeue("w", timeout=0.01) == "a"
    await s.queue.jobs.retry_later("w", "a", 60_000)
    assert await s.held("w") == [] and await s.delayed() == {"a"}
    assert await s.queue.jobs.promote_due() == 0
    assert await s.queue.jobs.dequeue("w", timeout=0.01) == "b"
    await s.queue.jobs.retry_later("w", "b", 0)
    assert await s.queue.jobs.promote_due() == 1
    assert await s.lane() == ["b"] and await s.delayed() == {"a"}
    await s.queue.jobs.withdraw("a")
    assert await s.delayed() == set()


async def test_a_dead_letter_is_listed_once_and_retried_oldest_first(s: Stores) -> None:
    await s.queue.jobs.enqueue_many([(i, 0, keys.PENDING) for i in "abc"])
    for job_id in "abc":
        assert await s.queue.jobs.dequeue("w", timeout=0.01) == job_id
        await s.queue.jobs.dead_letter("w", job_id)
    await s.queue.jobs.dead_letter("w", "a")  # again (a retried settle): still once
    assert await s.dlq() == ["c", "b", "a"] and await s.held("w") == []
    assert await s.queue.dead_letters.oldest(2) == ["a", "b"]
    slow = keys.lane("slow", 0, ())
    assert await s.queue.dead_letters.take_oldest(3, to_queue={"b": slow}, away=["c"]) == 2
    assert await s.dlq() == ["a"] and await s.lane(slow) == ["b"]


async def test_a_gone_workers_list_goes_back_to_the_front_and_its_dead_ids_to_the_dlq(s: Stores) -> None:
    slow = keys.lane("slow", 0, ())
    await s.queue.jobs.enqueue_many([("a", 0, keys.PENDING), ("b", 0, keys.PENDING), ("c", 0, keys.PENDING)])
    for job_id in "abc":
        assert await s.queue.jobs.dequeue("gone", timeout=0.01) == job_id
    held, _ = await s.queue.liveness.processing_and_lanes("gone")
    assert held == ["c", "b", "a"]
    assert await s.queue.liveness.recover_processing("gone", ["b"], {"c": slow}) == 2
    assert await s.held("gone") == [] and await s.dlq() == ["b"]
    assert await s.lane(slow) == ["c"]
    assert await s.queue.jobs.dequeue("w", timeout=0.01) == "a"  # at the front: taken next


async def test_an_id_is_taken_back_only_while_held(s: Stores) -> None:
    await s.queue.jobs.enqueue_many([("a", 0, keys.PENDING)])
    assert await s.queue.jobs.dequeue("w", timeout=0.01) == "a"
    assert await s.queue.jobs.take_back("w", "a")
    assert not await s.queue.jobs.take_back("w", "a")
    assert await s.lane() == ["a"]
    assert not await s.queue.jobs.ensure_queued("a")  # held already: not pushed twice
    assert await s.queue.jobs.ensure_queued("b")
    assert await s.lane() == ["b", "a"]


async def test_a_lost_workers_attempt_of_a_cancelled_job_is_closed_and_its_late_write_records_nothing(
    s: Stores,
) -> None:
    """Found by tests/unit/test_lifecycle_machine.py: the attempt stayed open for good, and a worker that only
    seemed dead could write its result on it after its recovery."""
    claimed = await _running(s, "gone")
    assert (await s.store.jobs.cancel(claimed.job_id, "cancelled")).cancelled
    assert await s.store.liveness.recover_worker_jobs(["gone"], "worker lost") == []  # nothing to move
    assert not await s.store.jobs.close_cancelled_attempt(claimed, 0, "late", "late", False)
    state = await s.store.jobs.state(claimed.job_id)
    assert state is not None and state.status is Status.CANCELLED
