"""The lifecycle layer driven at random (a Hypothesis rule-based state machine) over the in-memory fakes,
with Redis failing after PostgreSQL committed: submits, takes and claims, settles, cancels, kills of
workers and their recovery, shutdowns, dead letters retried, the healer and the clock. After every step
the invariants of ../shared/architecture.md hold: a terminal status is final (a dead letter retried is
the one way out of FAILED), a late write of an attempt that lost its job records nothing, and nothing
accepted is lost: every waiting job's id is in Redis or owed to the one who pays it (jobcluster/lifecycle/
policy.py), every dead letter is in dlq_tasks, every running job is held by a live worker or waits for
the recovery of a dead one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jobcluster import keys
from jobcluster.errors import UNAVAILABLE
from jobcluster.lifecycle import Lifecycle
from jobcluster.lifecycle.attempts import Attempts, Ended, Ending
from jobcluster.lifecycle.policy import StoredNotQueued
from jobcluster.model import Serving, Status
from jobcluster.rows import Claimed
from jobcluster.settings import Settings
from tests.fakes import FakeClock, FakeQueue, FakeStore, spec
from worker.shell import ShellResult

T = TypeVar("T")
WORKERS = ("w1", "w2", "w3")
TERMINAL = (Status.SUCCEEDED, Status.CANCELLED)
#: Redis steps that may fail after a commit (each one once, when armed).
REDIS_STEPS = ("enqueue_many", "withdraw", "ack", "retry_later", "dead_letter", "requeue_front", "recover_processing")


async def _through_outages(what: str, op: Callable[[], Awaitable[T]]) -> T:
    """The worker's retry: an injected fault fails once, so the next try goes through."""
    for _ in range(10):
        try:
            return await op()
        except UNAVAILABLE:
            continue
    raise AssertionError(f"{what}: still failing after 10 tries")


@dataclass
class WorkerSim:
    attempts: Attempts
    running: list[Claimed] = field(default_factory=list)
    alive: bool = True


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.store = FakeStore(self.clock)
        self.queue = FakeQueue(self.clock)
        self.life = Lifecycle(Settings(), self.store, self.queue, address="server-1")
        self.workers: dict[str, WorkerSim] = {}
        self.dead: dict[str, WorkerSim] = {}  # killed, not yet recovered
        self.final: dict[str, Status] = {}  # job id -> the terminal status it reached
        self.late: list[Claimed] = []  # attempts of killed workers, whose late writes must record nothing

    def teardown(self) -> None:
        self.loop.close()

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    def worker(self, worker_id: str) -> WorkerSim:
        if worker_id not in self.workers:
            w = WorkerSim(self.life.attempts(worker_id, Serving(), _through_outages))
            if worker_id in self.dead:  # a restart under the id of a killed worker: it recovers its own first
                self.run(w.attempts.recover_own("worker restarted"))
                del self.dead[worker_id]
            self.workers[worker_id] = w
        return self.workers[worker_id]

    def fault(self, step: str | None) -> None:
        if step is not None:
            self.queue.faults.fail(step)

    # --- rules -----------------------------------------------------------------------

    @precondition(lambda self: len(self.store.rows) < 20)
    @rule(
        n=st.integers(1, 3),
        delay=st.sampled_from([0, 0, 500]),
        retries=st.integers(0, 2),
        fault=st.sampled_from([None, None, "enqueue_many"]),
    )
    def submit(self, n: int, delay: int, retries: int, fault: str | None) -> None:
        self.fault(fault)
        at = self.clock.now_ms + delay if delay else 0
        outcomes = self.run(self.life.submissions.submit_group([spec(max_retries=retries, run_at_ms=at)] * n))
        assert all(isinstance(o, StoredNotQueued) for o in outcomes) or not any(
            isinstance(o, BaseException) for o in outcomes
        )
        self.queue.faults.armed.clear()

    @rule(worker_id=st.sampled_from(WORKERS))
    def take_and_claim(self, worker_id: str) -> None:
        w = self.worker(worker_id)
        job_id = self.run(w.attempts.take())
        if job_id is None:
            return
        (claimed,) = self.run(w.attempts.claim_many([job_id]))
        if claimed is not None:
            assert self.store.rows[job_id].status is Status.RUNNING
            w.running.append(claimed)

    @precondition(lambda self: any(w.running for w in self.workers.values()))
    @rule(
        data=st.data(),
        exit_code=st.sampled_from([0, 0, 1]),
        saw_cancel=st.booleans(),
        fault=st.sampled_from([None, "ack", "retry_later", "dead_letter"]),
    )
    def finish(self, data: st.DataObject, exit_code: int, saw_cancel: bool, fault: str | None) -> None:
        w = data.draw(st.sampled_from([w for w in self.workers.values() if w.running]))
        claimed = w.running.pop(data.draw(st.integers(0, len(w.running) - 1)))
        cancelled = self.store.rows[claimed.job_id].status is Status.CANCELLED
        ending = Ending.CANCELLED if cancelled and saw_cancel else Ending.RAN
        result = ShellResult(exit_code=exit_code, output=b"out", truncated=False, timed_out=False, error="")
        self.fault(fault)
        self.run(w.attempts.settle_many([Ended(claimed, result, ending)]))
        self.queue.faults.armed.clear()
        row = self.store.rows[claimed.job_id]
        assert row.history[claimed.attempt].finished, "an attempt that ended is closed"
        assert claimed.job_id not in self.queue.processing.get(w.attempts.worker_id, []), "the id left its worker"

    @precondition(lambda self: bool(self.store.rows))
    @rule(data=st.data(), fault=st.sampled_from([None, "withdraw"]))
    def cancel(self, data: st.DataObject, fault: str | None) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.store.rows)))
        before = self.store.rows[job_id].status
        self.fault(fault)
        outcome = self.run(self.life.cancel(job_id))  # never raises for a Redis failure after the commit
        self.queue.faults.armed.clear()
        assert outcome.cancelled == (before in (Status.QUEUED, Status.PENDING, Status.RUNNING))
        assert self.store.rows[job_id].status is (Status.CANCELLED if outcome.cancelled else before)

    @precondition(lambda self: any(w.alive for w in self.workers.values()))
    @rule(data=st.data())
    def kill_worker(self, data: st.DataObject) -> None:
        worker_id = data.draw(st.sampled_from(sorted(i for i, w in self.workers.items() if w.alive)))
        w = self.workers.pop(worker_id)
        w.alive = False
        self.late += w.running
        self.dead[worker_id] = w

    @precondition(lambda self: bool(self.dead))
    @rule(data=st.data(), fault=st.sampled_from([None, "recover_processing"]))
    def leader_recovers(self, data: st.DataObject, fault: str | None) -> None:
        worker_id = data.draw(st.sampled_from(sorted(self.dead)))
        self.fault(fault)
        try:
            self.run(self.life.recover(worker_id, "worker lost"))
        except UNAVAILABLE:  # Redis failed after PostgreSQL committed: the leader's next pass moves the list
            self.run(self.life.recover(worker_id, "worker lost"))
        self.queue.faults.armed.clear()
        del self.dead[worker_id]
        assert not self.queue.processing.get(worker_id)

    @precondition(lambda self: bool(self.late) and not self.dead)
    @rule(data=st.data())
    def a_late_write_records_nothing(self, data: st.DataObject) -> None:
        claimed = self.late.pop(data.draw(st.integers(0, len(self.late) - 1)))
        row = self.store.rows[claimed.job_id]
        before = (row.status, row.attempts, row.exit_code, dict(row.history))
        zombie = self.life.attempts("zombie", Serving(), _through_outages)
        result = ShellResult(exit_code=0, output=b"late", truncated=False, timed_out=False, error="")
        self.run(zombie.settle_many([Ended(claimed, result, Ending.RAN)]))
        assert (row.status, row.attempts, row.exit_code) == before[:3], "a late write changed the job"

    @precondition(lambda self: any(w.running for w in self.workers.values()))
    @rule(worker_id=st.sampled_from(WORKERS))
    def shut_down(self, worker_id: str) -> None:
        w = self.workers.get(worker_id)
        if w is None:
            return
        self.run(w.attempts.interrupt_many(w.running))
        w.running = []
        self.run(w.attempts.recover_own("worker stopped", retry=False))
        assert not self.queue.processing.get(worker_id)

    @rule()
    def retry_dead_letters(self) -> None:
        retried = self.run(self.life.dead_letters.retry(None))
        for job_id in retried:
            assert self.store.rows[job_id].status is Status.QUEUED
            self.final.pop(job_id, None)

    @rule(ms=st.sampled_from([100, 1000, 60_000]))
    def time_passes(self, ms: int) -> None:
        self.clock.advance(ms)
        self.run(self.queue.jobs.promote_due())
        self.run(self.life.unpushed.heal(self.store, self.queue, "server-1"))  # the healer: once a second

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def a_terminal_status_is_final(self) -> None:
        for job_id, row in self.store.rows.items():
            if job_id in self.final:
                assert row.status is self.final[job_id], f"job {job_id} left {self.final[job_id]} for {row.status}"
            if row.status in (*TERMINAL, Status.FAILED):
                self.final[job_id] = row.status

    @invariant()
    def nothing_accepted_is_lost(self) -> None:
        owed = self.life.unpushed._ids
        holding = {c.job_id for w in self.workers.values() for c in w.running}
        awaiting_recovery = {c.job_id for w in self.dead.values() for c in w.running}
        for job_id, row in self.store.rows.items():
            places = self.queue.where(job_id)
            if row.status in (Status.QUEUED, Status.PENDING):
                waiting = [p for p in places if p != "dlq_tasks" and not p.startswith(keys.PROCESSING_PREFIX)]
                dead_lists = [keys.processing(w) for w in self.dead]
                assert waiting or job_id in owed or any(p in dead_lists for p in places), (
                    f"waiting job {job_id} is nowhere in Redis and owed to nobody: {places}"
                )
            elif row.status is Status.RUNNING:
                assert job_id in holding or job_id in awaiting_recovery, f"running job {job_id} is held by nobody"
            elif row.status is Status.FAILED:  # in dlq_tasks, or in a lane: the worker that takes it dead-letters it
                lanes = [p for p in places if p in self.queue.lanes_]
                assert "dlq_tasks" in places or lanes, f"dead letter {job_id} is not in dlq_tasks: {places}"

    @invariant()
    def an_id_waits_in_one_place_at_most(self) -> None:
        for job_id in self.store.rows:
            waiting = [p for p in self.queue.where(job_id) if p != "dlq_tasks"]
            assert len(waiting) <= 1, f"job {job_id} waits in {waiting}"


LifecycleMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestLifecycle = LifecycleMachine.TestCase
