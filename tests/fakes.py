"""In-memory fakes of :class:`~jobcluster.store.Store` and :class:`~jobcluster.queue.Queue`: the part of
each that the lifecycle layer (jobcluster/lifecycle) uses for jobs, with the same guards.

They cannot drift: tests/integration/test_contract.py runs one suite against them and against the real
PostgreSQL and Redis. Time is a :class:`FakeClock` (one clock for both, as the real stores each judge by
their own). A fault is injected with :meth:`Faults.fail`: the next call of the named operation raises an
outage error (asyncpg's or redis-py's) without doing anything.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError

from jobcluster import keys
from jobcluster.model import JobSpec, Serving, Status
from jobcluster.queue.lanes import eligible
from jobcluster.rows import CancelResult, Claimed, JobState, Submitted, WaitingJob

WAITING = (Status.QUEUED, Status.PENDING)


class FakeClock:
    """Unix milliseconds, moved by hand."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


class Faults:
    """Named operations that fail once each, before doing anything."""

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error
        self.armed: set[str] = set()
        self.injected = 0

    def fail(self, name: str) -> None:
        self.armed.add(name)

    def check(self, name: str) -> None:
        if name in self.armed:
            self.armed.discard(name)
            self.injected += 1
            raise self.error(f"injected: {name} failed")


# --- the store ------------------------------------------------------------------


@dataclass
class AttemptRecord:
    worker_id: str
    finished: bool = False
    exit_code: int | None = None
    error: str = ""
    output: str = ""


@dataclass
class JobRecord:
    id: str
    spec: JobSpec
    status: Status
    not_before: int
    created: int
    submitted_via: str = ""
    attempts: int = 0
    interruptions: int = 0
    attempts_base: int = 0
    worker_id: str = ""
    claim_token: uuid.UUID | None = None
    last_error: str = ""
    exit_code: int | None = None
    purged: bool = False
    history: dict[int, AttemptRecord] = field(default_factory=dict)

    @property
    def lane(self) -> str:
        return keys.lane(self.spec.queue, self.spec.priority, self.spec.constraints)


class FakeStore:
    """The store's job tables in a dict; each method mirrors one statement of jobcluster/sql."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.faults = Faults(asyncpg.PostgresConnectionError)
        self.rows: dict[str, JobRecord] = {}
        self.made = 0  # ids are made in order (a random test replays the same ids)
        self.jobs = _Jobs(self)
        self.liveness = _Liveness(self)
        self.dead_letters = _DeadLetters(self)
        self.reconcile = _Reconcile(self)
        self.pool = None  # nothing may reach for a connection

    def _row(self, job_id: str) -> JobRecord | None:
        return self.rows.get(job_id)


class _Part:
    def __init__(self, store: FakeStore) -> None:
        self.s = store

    def _check(self, name: str) -> None:
        self.s.faults.check(name)


class _Jobs(_Part):
    async def insert(self, spec: JobSpec, submitted_via: str) -> Submitted:
        self._check("insert")
        return self._insert(spec, submitted_via)

    async def insert_many(self, specs: list[JobSpec], submitted_via: str) -> list[Submitted]:
        self._check("insert_many")
        return [self._insert(spec, submitted_via) for spec in specs]

    def _insert(self, spec: JobSpec, via: str) -> Submitted:
        now = self.s.clock.now_ms
        if spec.idempotency_key:
            held = next((r for r in self.s.rows.values() if r.spec.idempotency_key == spec.idempotency_key), None)
            if held is not None:
                return _submitted(held, inserted=False, now=now)
        status = Status.PENDING if spec.run_at_ms and spec.run_at_ms > now else Status.QUEUED
        self.s.made += 1
        row = JobRecord(str(uuid.UUID(int=self.s.made)), spec, status, max(now, spec.run_at_ms or now), now, via)
        self.s.rows[row.id] = row
        return _submitted(row, inserted=True, now=now)

    async def claim(
        self, job_id: str, worker_id: str, token: uuid.UUID | None = None, *, serves: Serving | None = None
    ) -> Claimed | None:
        self._check("claim")
        row = self.s._row(job_id)
        now = self.s.clock.now_ms
        if row is None:
            return None
        if row.status is Status.RUNNING and row.worker_id == worker_id and token and row.claim_token == token:
            return _claimed(row, waited=0.0)  # the same claim asked again: the attempt it opened
        if row.status not in WAITING or row.not_before > now:
            return None
        if serves is not None and (
            row.spec.queue not in serves.queues or not set(row.spec.constraints) <= set(serves.tags)
        ):
            return None
        key = row.spec.concurrency_key
        if key:
            limit = row.spec.max_concurrency or dict(serves.limits if serves else {}).get(key, 1)
            running = sum(
                1 for r in self.s.rows.values() if r.status is Status.RUNNING and r.spec.concurrency_key == key
            )
            if running >= limit:
                return None
        waited = max(0.0, (now - max(row.created, row.not_before)) / 1000)
        row.status, row.attempts, row.worker_id, row.claim_token = Status.RUNNING, row.attempts + 1, worker_id, token
        row.exit_code, row.last_error = None, ""
        row.history[row.attempts] = AttemptRecord(worker_id)
        return _claimed(row, waited=waited)

    async def state(self, job_id: str) -> JobState | None:
        self._check("state")
        row = self.s._row(job_id)
        if row is None:
            return None
        now = self.s.clock.now_ms
        return JobState(
            row.status,
            row.not_before <= now,
            row.not_before,
            max(0, row.not_before - now),
            queue=row.spec.queue,
            constraints=tuple(row.spec.constraints),
            lane=row.lane,
            concurrency_key=row.spec.concurrency_key,
        )

    async def routes(self, job_ids: list[str]) -> dict[str, str]:
        self._check("routes")
        return {i: self.s.rows[i].lane for i in job_ids if i in self.s.rows}

    async def finish_attempt(
        self,
        claimed: Claimed,
        next_status: Status,
        *,
        exit_code: int | None,
        error: str,
        output: str,
        output_truncated: bool,
        retry_delay_ms: int = 0,
        interrupted: bool = False,
    ) -> bool:
        self._check("finish_attempt")
        row = self.s._row(claimed.job_id)
        if row is None or row.attempts != claimed.attempt or row.status is not Status.RUNNING:
            return False
        now = self.s.clock.now_ms
        row.status, row.exit_code, row.last_error = next_status, exit_code, error
        if next_status is Status.PENDING:
            row.not_before = now + retry_delay_ms
        row.interruptions += 1 if interrupted else 0
        if next_status in WAITING:
            row.worker_id = ""
        attempt = row.history[claimed.attempt]
        attempt.finished, attempt.exit_code, attempt.error, attempt.output = True, exit_code, error, output
        return True

    async def cancel(self, job_id: str, reason: str) -> CancelResult:
        self._check("cancel")
        row = self.s._row(job_id)
        if row is None:
            return CancelResult(False, False, None, "")
        if row.status not in (*WAITING, Status.RUNNING):
            return CancelResult(True, False, row.status, "")
        was, worker = row.status, row.worker_id
        row.status, row.last_error = Status.CANCELLED, reason
        return CancelResult(True, True, was, worker)

    async def cancelled_among(self, job_ids: list[str]) -> set[str]:
        self._check("cancelled_among")
        return {i for i in job_ids if i in self.s.rows and self.s.rows[i].status is Status.CANCELLED}

    async def close_cancelled_attempt(
        self, claimed: Claimed, exit_code: int | None, error: str, output: str, output_truncated: bool
    ) -> bool:
        self._check("close_cancelled_attempt")
        row = self.s._row(claimed.job_id)
        if row is None or row.attempts != claimed.attempt or row.status is not Status.CANCELLED:
            return False
        attempt = row.history.get(claimed.attempt)
        if attempt is None or attempt.finished:
            return False
        row.exit_code = exit_code
        attempt.finished, attempt.exit_code, attempt.error, attempt.output = True, exit_code, error, output
        return True


class _Liveness(_Part):
    async def recover_worker_jobs(
        self, worker_ids: list[str], reason: str, conn: object | None = None
    ) -> list[tuple[str, Status]]:
        self._check("recover_worker_jobs")
        moved = []
        for row in self.s.rows.values():
            if row.status is Status.RUNNING and row.worker_id in worker_ids:
                spent = row.attempts - row.interruptions - row.attempts_base
                row.status = Status.FAILED if spent > row.spec.max_retries else Status.QUEUED
                row.last_error, row.worker_id, row.not_before = reason, "", self.s.clock.now_ms
                attempt = row.history[row.attempts]
                if not attempt.finished:
                    attempt.finished, attempt.error = True, reason
                moved.append((row.id, row.status))
            elif row.status is Status.CANCELLED and row.worker_id in worker_ids and row.attempts:
                attempt = row.history[row.attempts]
                if not attempt.finished:
                    attempt.finished, attempt.error = True, f"cancelled; {reason}"
        return moved

    async def job_owners(self, job_ids: list[str]) -> dict[str, tuple[str, int, str]]:
        self._check("job_owners")
        return {
            i: (self.s.rows[i].status.value, self.s.rows[i].attempts, self.s.rows[i].worker_id)
            for i in job_ids
            if i in self.s.rows
        }


class _DeadLetters(_Part):
    async def retry(self, job_ids: list[str]) -> list[str]:
        self._check("dead_letters.retry")
        out = []
        for i in job_ids:
            row = self.s._row(i)
            if row is not None and row.status is Status.FAILED:
                row.status, row.attempts_base = Status.QUEUED, row.attempts - row.interruptions
                row.not_before, row.last_error, row.exit_code, row.purged = self.s.clock.now_ms, "", None, False
                out.append(i)
        return out

    async def purged(self, job_ids: list[str]) -> None:
        self._check("dead_letters.purged")
        for i in job_ids:
            if i in self.s.rows and self.s.rows[i].status is Status.FAILED:
                self.s.rows[i].purged = True


class _Reconcile(_Part):
    async def still_waiting(self, job_ids: list[str]) -> list[WaitingJob]:
        self._check("still_waiting")
        rows = [self.s.rows[i] for i in job_ids if i in self.s.rows and self.s.rows[i].status in WAITING]
        return [WaitingJob(r.id, r.status, r.not_before, r.lane) for r in rows]

    async def waiting_submitted_via(self, address: str, since_start: float, limit: int) -> list[WaitingJob]:
        self._check("waiting_submitted_via")
        rows = [r for r in self.s.rows.values() if r.status in WAITING and r.submitted_via == address]
        return [WaitingJob(r.id, r.status, r.not_before, r.lane) for r in rows[-limit:]]


def _submitted(row: JobRecord, *, inserted: bool, now: int) -> Submitted:
    shown = Status.QUEUED if row.status is Status.PENDING and row.not_before <= now else row.status
    s = row.spec
    return Submitted(
        queue=s.queue,
        priority=s.priority,
        constraints=tuple(s.constraints),
        concurrency_key=s.concurrency_key,
        max_concurrency=s.max_concurrency,
        job_id=row.id,
        inserted=inserted,
        status=shown,
        due_ms=row.not_before,
    )


def _claimed(row: JobRecord, *, waited: float) -> Claimed:
    return Claimed(
        job_id=row.id,
        command=row.spec.command,
        timeout_seconds=row.spec.timeout_seconds,
        max_retries=row.spec.max_retries,
        attempt=row.attempts,
        interruptions=row.interruptions + row.attempts_base,
        lane=row.lane,
        concurrency_key=row.spec.concurrency_key,
        queue=row.spec.queue,
        waited=waited,
    )


# --- the queue ------------------------------------------------------------------


class FakeQueue:
    """Redis' lists, ``delayed_jobs`` and ``dlq_tasks`` in memory. A list's index 0 is its left end (LPUSH's);
    ids are taken from the right, as BLMOVE ... RIGHT does."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.faults = Faults(RedisConnectionError)
        self.lanes_: dict[str, list[str]] = {keys.PENDING: []}
        self.delayed: dict[str, tuple[int, str]] = {}  # id -> (due ms, lane)
        self.processing: dict[str, list[str]] = {}
        self.dlq: list[str] = []
        self.retrying = ""  # dlq_retrying
        self.jobs = _QueueJobs(self)
        self.liveness = _QueueLiveness(self)
        self.dead_letters = _QueueDeadLetters(self)
        self.reconcile = _QueueReconcile(self)

    def lane(self, name: str) -> list[str]:
        return self.lanes_.setdefault(name, [])

    def where(self, job_id: str) -> list[str]:
        """Every place an id is in (a lane, ``delayed_jobs``, a processing list, ``dlq_tasks``), once each."""
        places = [lane for lane, ids in self.lanes_.items() if job_id in ids]
        places += ["delayed_jobs"] if job_id in self.delayed else []
        places += [keys.processing(w) for w, ids in self.processing.items() if job_id in ids]
        return places + (["dlq_tasks"] if job_id in self.dlq else [])


class _QPart:
    def __init__(self, queue: FakeQueue) -> None:
        self.q = queue

    def _check(self, name: str) -> None:
        self.q.faults.check(name)


class _Lanes(_QPart):
    async def depths(self) -> dict[str, int]:
        return {lane: len(ids) for lane, ids in self.q.lanes_.items()}


class _QueueJobs(_QPart):
    def __init__(self, queue: FakeQueue) -> None:
        super().__init__(queue)
        self.lanes = _Lanes(queue)

    async def enqueue(self, job_id: str, due_ms: int = 0, lane: str = keys.PENDING) -> None:
        await self.enqueue_many([(job_id, due_ms, lane)])

    async def enqueue_many(self, jobs: Iterable[tuple[str, int, str]]) -> None:
        self._check("enqueue_many")
        for job_id, due, lane in jobs:
            if due and due > self.q.clock.now_ms:
                self.q.delayed[job_id] = (due, lane)
            else:
                self.q.lane(lane).insert(0, job_id)

    async def ensure_queued(self, job_id: str, lane: str = keys.PENDING) -> bool:
        self._check("ensure_queued")
        if job_id in self.q.lane(lane) or job_id in self.q.delayed:
            return False
        self.q.lane(lane).insert(0, job_id)
        return True

    async def promote_due(self, batch: int = 500) -> int:
        self._check("promote_due")
        due = sorted((at, i) for i, (at, _) in self.q.delayed.items() if at <= self.q.clock.now_ms)
        for _, job_id in due:
            _, lane = self.q.delayed.pop(job_id)
            self.q.lane(lane).insert(0, job_id)
        return len(due)

    async def withdraw(self, job_id: str) -> None:
        self._check("withdraw")
        self.q.delayed.pop(job_id, None)

    async def dequeue(self, worker_id: str, serving: Serving | None = None, timeout: float | None = None) -> str | None:
        self._check("dequeue")
        serving = serving or Serving()
        for lane in eligible(self.q.lanes_, serving.queues, serving.tags):
            ids = self.q.lane(lane)
            if ids:
                job_id = ids.pop()
                self.q.processing.setdefault(worker_id, []).insert(0, job_id)
                return job_id
        return None

    def _leave(self, worker_id: str, job_id: str) -> bool:
        held = self.q.processing.get(worker_id, [])
        if job_id in held:
            held.remove(job_id)
            return True
        return False

    async def ack(self, worker_id: str, job_id: str) -> None:
        self._check("ack")
        self._leave(worker_id, job_id)

    async def retry_later(self, worker_id: str, job_id: str, wait_ms: int, lane: str = keys.PENDING) -> None:
        self._check("retry_later")
        self._leave(worker_id, job_id)
        self.q.delayed[job_id] = (self.q.clock.now_ms + max(0, wait_ms), lane)

    async def wait_for_key(self, worker_id: str, job_id: str, wait_ms: int, lane: str, concurrency_key: str) -> None:
        self._check("wait_for_key")
        self._leave(worker_id, job_id)
        self.q.delayed[job_id] = (self.q.clock.now_ms + max(0, wait_ms), lane)

    async def release_key(self, concurrency_key: str) -> bool:
        self._check("release_key")
        return False

    async def requeue_front(self, worker_id: str, job_id: str, lane: str = keys.PENDING) -> None:
        self._check("requeue_front")
        self._leave(worker_id, job_id)
        self.q.lane(lane).append(job_id)

    async def take_back(self, worker_id: str, job_id: str, lane: str = keys.PENDING) -> bool:
        self._check("take_back")
        if not self._leave(worker_id, job_id):
            return False
        self.q.lane(lane).append(job_id)
        return True

    async def dead_letter(self, worker_id: str, job_id: str) -> None:
        self._check("dead_letter")
        self._leave(worker_id, job_id)
        if job_id not in self.q.dlq:
            self.q.dlq.insert(0, job_id)

    async def depths(self) -> dict[str, int]:
        return {
            "pending": sum(len(ids) for ids in self.q.lanes_.values()),
            "processing": sum(len(ids) for ids in self.q.processing.values()),
            "delayed": len(self.q.delayed),
            "dlq": len(self.q.dlq),
        }


class _QueueLiveness(_QPart):
    async def processing_and_lanes(self, worker_id: str) -> tuple[list[str], bool]:
        self._check("processing_and_lanes")
        return list(self.q.processing.get(worker_id, [])), any(lane != keys.PENDING for lane in self.q.lanes_)

    async def recover_processing(
        self, worker_id: str, dead_ids: Iterable[str] = (), lanes: Mapping[str, str] | None = None
    ) -> int:
        self._check("recover_processing")
        dead, moved = set(dead_ids), 0
        held = self.q.processing.pop(worker_id, [])
        for job_id in held:  # newest taken first: the oldest ends up taken next again
            if job_id in dead:
                if job_id not in self.q.dlq:
                    self.q.dlq.insert(0, job_id)
            else:
                self.q.lane((lanes or {}).get(job_id, keys.PENDING)).append(job_id)
                moved += 1
        return moved


class _QueueDeadLetters(_QPart):
    async def count(self) -> int:
        return len(self.q.dlq)

    async def oldest(self, n: int) -> list[str]:
        return list(reversed(self.q.dlq[-n:])) if n else []

    async def take_oldest(self, n: int, *, to_queue: Mapping[str, str] | None = None, away: Sequence[str] = ()) -> int:
        self._check("take_oldest")
        to_queue = dict(to_queue or {})
        taken = list(reversed(self.q.dlq[-n:])) if n else []
        del self.q.dlq[len(self.q.dlq) - len(taken) :]
        fate = {i: "-" for i in away} | {i: "+" for i in to_queue}
        keep, left = [], 0
        for job_id in taken:
            if job_id in fate:
                left += 1
                if fate[job_id] == "+":
                    self.q.lane(to_queue.pop(job_id)).insert(0, job_id)
                    fate[job_id] = "-"
            else:
                keep.append(job_id)
        for job_id, lane in to_queue.items():  # already queued by PostgreSQL: pushed anyway
            self.q.lane(lane).insert(0, job_id)
        for job_id in keep:
            self.q.dlq.insert(0, job_id)
        return left

    async def mark_retrying(self, token: str, ttl_ms: int = 30_000) -> None:
        self._check("mark_retrying")
        self.q.retrying = token

    async def unmark_retrying(self, token: str) -> None:
        self._check("unmark_retrying")
        if self.q.retrying == token:
            self.q.retrying = ""

    async def purge_all(self) -> int:
        self._check("purge_all")
        n, self.q.dlq = len(self.q.dlq), []
        return n


class _QueueReconcile(_QPart):
    async def restore(self, waiting: Sequence[tuple[str, int, str]]) -> int:
        self._check("restore")
        pushed = 0
        for job_id, due, lane in waiting:
            if self.q.where(job_id):
                continue
            if due and due > self.q.clock.now_ms:
                self.q.delayed[job_id] = (due, lane)
            else:
                self.q.lane(lane).insert(0, job_id)
            pushed += 1
        return pushed


def spec(**fields: Any) -> JobSpec:
    """A valid job spec with the server's defaults (tests/fakes and the contract suite)."""
    base = JobSpec(
        command="true", name="", description="", max_retries=2, timeout_seconds=60.0, run_at_ms=0, idempotency_key=""
    )
    return replace(base, **fields)
