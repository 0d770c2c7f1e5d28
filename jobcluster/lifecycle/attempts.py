"""A worker's transitions: take an id, claim its job, settle the attempt (or close it when the job was
cancelled, or record nothing when the job moved on), give it back on shutdown, recover what the worker id
left behind.

Each is batch-shaped (a list in, a list out; one job is a batch of one) and follows the policy of
:mod:`.policy`: PostgreSQL first, then Redis, every step retried through an outage by ``retry`` (the
worker holds the id in its processing list meanwhile). What the worker keeps to itself: its processes,
its slots, its registry of running attempts (worker/running.py).
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from jobcluster import keys, metrics
from jobcluster.errors import UNAVAILABLE
from jobcluster.lifecycle import decide
from jobcluster.lifecycle.decide import Outcome, Refusal
from jobcluster.lifecycle.policy import hint
from jobcluster.lifecycle.recover import recover_worker
from jobcluster.model import Serving, Status
from jobcluster.queue import Queue
from jobcluster.rows import Claimed
from jobcluster.store import Store
from jobcluster.store.jobs import clean_text

T = TypeVar("T")


class Retry(Protocol):
    """Runs one step, waiting out an outage (the worker's: jobcluster.aio.retrying with its backoff)."""

    def __call__(self, what: str, op: Callable[[], Awaitable[T]], /) -> Awaitable[T]: ...


#: Most concurrency keys whose refusals in a row a worker counts (for the backoff of a full key).
MAX_KEYS_REMEMBERED = 10_000


class Ending(enum.Enum):
    """How an attempt came to its end, as its worker knows it."""

    RAN = "ran"  # the command ended (or timed out): settle it
    CANCELLED = "cancelled"  # a cancel stopped it: close the attempt, the job stays CANCELLED
    FENCED = "fenced"  # the job moved on (this worker was declared dead): record nothing


@dataclass(frozen=True)
class Ended:
    """One attempt that ended, with how its command ended."""

    claimed: Claimed
    outcome: Outcome
    ending: Ending = Ending.RAN


class Attempts:
    """Every transition one worker makes, over the store and the queue."""

    def __init__(
        self,
        store: Store,
        queue: Queue,
        worker_id: str,
        serving: Serving,
        *,
        retry: Retry,
        log: logging.Logger,
        backoff_base: float,
        backoff_max: float,
    ) -> None:
        self.store = store
        self.queue = queue
        self.worker_id = worker_id
        self.serving = serving
        self._retry = retry
        self.log = log
        self.backoff = (backoff_base, backoff_max)
        self._key_refusals: dict[str, int] = {}  # concurrency key -> its refusals in a row here

    async def _step(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        return await self._retry(what, op)

    # --- take and claim -------------------------------------------------------------

    async def take(self) -> str | None:
        """The next id from the lanes this worker serves, into its processing list (blocks a while)."""
        return await self._step("dequeue", lambda: self.queue.jobs.dequeue(self.worker_id, self.serving))

    async def claim_many(self, job_ids: Sequence[str]) -> list[Claimed | None]:
        """Start the next attempt of each job; None for an id whose job cannot start here now, which is
        dealt with (delayed, rerouted, left to wait for its key, dead-lettered or dropped)."""
        out: list[Claimed | None] = []
        for job_id in job_ids:
            token = uuid.uuid4()  # the same for every retry: a lost reply is not a lost claim
            claimed = await self._step(
                "claim",
                lambda job_id=job_id, token=token: self.store.jobs.claim(  # type: ignore[misc]
                    job_id, self.worker_id, token, serves=self.serving
                ),
            )
            if claimed is None:
                await self._refuse(job_id)
            else:
                if claimed.concurrency_key:
                    self._key_refusals.pop(claimed.concurrency_key, None)
                metrics.JOBS_STARTED.labels(claimed.queue).inc()
                metrics.START_DELAY.labels(claimed.queue).observe(claimed.waited)
            out.append(claimed)
        return out

    async def _refuse(self, job_id: str) -> None:
        """Deal with an id whose job cannot be claimed now."""
        state = await self._step("check job", lambda: self.store.jobs.state(job_id))
        action = decide.refuse(state, self.serving.queues, self.serving.tags)
        wid = self.worker_id
        if state is None:
            self.log.warning("job %s: unknown id in the queue, dropped", job_id)
            await self._ack([job_id])
            return
        if action is Refusal.DELAY:
            wait_ms = state.wait_ms  # PostgreSQL's clock: Redis counts it down on its own (no clocks compared)
            await self._step("delay", lambda: self.queue.jobs.retry_later(wid, job_id, wait_ms, state.lane))
        elif action is Refusal.REROUTE:
            self.log.info(
                "job %s is not for this worker (queue %s, constraints %s): sent to %s",
                job_id,
                state.queue,
                ",".join(state.constraints) or "none",
                state.lane,
            )
            await self._step("reroute", lambda: self.queue.jobs.requeue_front(wid, job_id, state.lane))
        elif action is Refusal.KEY_FULL:
            key = state.concurrency_key
            if len(self._key_refusals) >= MAX_KEYS_REMEMBERED and key not in self._key_refusals:
                self._key_refusals.clear()  # keys whose jobs all ran elsewhere: start counting again
            self._key_refusals[key] = self._key_refusals.get(key, 0) + 1
            wait_ms = decide.key_full_wait_ms(self._key_refusals[key])
            self.log.debug("job %s waits %d ms: concurrency key %r is full", job_id, wait_ms, key)
            await self._step(
                "wait for key", lambda: self.queue.jobs.wait_for_key(wid, job_id, wait_ms, state.lane, key)
            )
        elif action is Refusal.DEAD_LETTER:
            await self._step("dead-letter", lambda: self.queue.jobs.dead_letter(wid, job_id))
        else:
            self.log.debug("job %s is %s: queue entry dropped", job_id, state.status.value)
            await self._ack([job_id])

    # --- settle ---------------------------------------------------------------------

    async def settle_many(self, ended: Sequence[Ended]) -> None:
        """Record how each attempt ended, then ack, back off or dead-letter its id; a job of a concurrency
        key that ended lets the oldest job waiting for the key go."""
        for e in ended:
            if e.ending is Ending.FENCED:
                self.log.warning(
                    "job %s attempt %d was killed: this worker had been declared dead and the job moved "
                    "on; nothing recorded for it",
                    e.claimed.job_id,
                    e.claimed.attempt,
                )
                continue
            if e.ending is Ending.CANCELLED:
                await self._close_cancelled(e.claimed, e.outcome)
                metrics.JOBS_FINISHED.labels(Status.CANCELLED.value, e.claimed.queue).inc()
            else:
                await self._settle(e.claimed, e.outcome)
            if e.claimed.concurrency_key:
                key = e.claimed.concurrency_key
                await hint(f"concurrency key {key!r}: release", lambda key=key: self.queue.jobs.release_key(key))  # type: ignore[misc]

    async def _close_cancelled(self, claimed: Claimed, outcome: Outcome) -> None:
        """CancelJob stopped this attempt: record how it ended; the job stays CANCELLED."""
        await self._step(
            "record cancel",
            lambda: self.store.jobs.close_cancelled_attempt(
                claimed, outcome.exit_code, outcome.error, clean_text(outcome.output), outcome.truncated
            ),
        )
        await self._ack([claimed.job_id])
        how = (
            "process group killed"
            if outcome.error.startswith("cancelled")
            else f"the command had already ended ({outcome.error or 'exit 0'})"
        )
        self.log.warning("job %s attempt %d cancelled: %s", claimed.job_id, claimed.attempt, how)

    async def _settle(self, claimed: Claimed, outcome: Outcome) -> None:
        """Record the attempt, then ack, back off or dead-letter the id."""
        job_id, wid = claimed.job_id, self.worker_id
        s = decide.settle(outcome, claimed, backoff_base=self.backoff[0], backoff_max=self.backoff[1])
        recorded = await self._step(
            "record result",
            lambda: self.store.jobs.finish_attempt(
                claimed,
                s.status,
                exit_code=outcome.exit_code,
                error=s.error,
                output=clean_text(outcome.output),
                output_truncated=outcome.truncated,
                retry_delay_ms=s.delay_ms,
            ),
        )
        if not recorded:
            await self._fenced_off(claimed, outcome, s.error)
            return
        ended = "RETRYING" if s.status is Status.PENDING else s.status.value
        metrics.JOBS_FINISHED.labels(ended, claimed.queue).inc()
        if s.status is Status.SUCCEEDED:
            await self._ack([job_id])
            self.log.debug("job %s attempt %d succeeded", job_id, claimed.attempt)  # jobcluster_jobs_finished
        elif s.status is Status.FAILED:
            await self._step("dead-letter", lambda: self.queue.jobs.dead_letter(wid, job_id))
            self.log.warning(
                "job %s attempt %d failed (%s): retries used up, dead-lettered", job_id, claimed.attempt, s.error
            )
        else:
            await self._step("retry", lambda: self.queue.jobs.retry_later(wid, job_id, s.delay_ms, claimed.lane))
            self.log.info(
                "job %s attempt %d failed (%s): retry in %.1fs", job_id, claimed.attempt, s.error, s.delay_ms / 1000
            )

    async def _fenced_off(self, claimed: Claimed, outcome: Outcome, error: str) -> None:
        """finish_attempt matched nothing: the job was cancelled after the command ended, or it is
        no longer this attempt's. A cancelled job keeps the result on its attempt, which is closed."""
        job_id = claimed.job_id
        ended = error or f"exit {outcome.exit_code}"
        note = f"cancelled after the command ended ({ended}), before its result was recorded"
        closed = await self._step(
            "record cancel",
            lambda: self.store.jobs.close_cancelled_attempt(
                claimed, outcome.exit_code, note, clean_text(outcome.output), outcome.truncated
            ),
        )
        if closed:
            self.log.warning(
                "job %s attempt %d: cancelled after its command ended (%s); output and exit code "
                "recorded on the attempt, the job stays CANCELLED",
                job_id,
                claimed.attempt,
                ended,
            )
        else:
            state = await self._step("check job", lambda: self.store.jobs.state(job_id))
            self.log.warning(
                "job %s attempt %d: result discarded (%s): the job is %s, no longer held by this attempt "
                "(its worker was declared lost, or a newer attempt owns it)",
                job_id,
                claimed.attempt,
                ended,
                state.status.value if state else "deleted",
            )
        await self._ack([job_id])

    async def _ack(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            await self._step("ack", lambda job_id=job_id: self.queue.jobs.ack(self.worker_id, job_id))  # type: ignore[misc]

    # --- shutdown, fencing, cancels, recovery ---------------------------------------------

    async def interrupt_many(self, claimed: Sequence[Claimed]) -> None:
        """A shutdown cut these attempts short: each job goes back to the front of its lane, retries
        unspent (a job cancelled meanwhile gets its attempt closed). Tried once, not through an outage:
        what fails is left to the recovery of this worker id."""
        wid = self.worker_id
        for c in claimed:
            try:
                recorded = await self.store.jobs.finish_attempt(
                    c,
                    Status.QUEUED,
                    exit_code=None,
                    error="interrupted: worker shut down",
                    output="",
                    output_truncated=False,
                    interrupted=True,
                )
                if recorded:
                    await self.queue.jobs.requeue_front(wid, c.job_id, c.lane)
                    self.log.warning("job %s attempt %d interrupted by shutdown, requeued", c.job_id, c.attempt)
                elif await self.store.jobs.close_cancelled_attempt(
                    c, None, "cancelled; interrupted: worker shut down", "", False
                ):
                    await self.queue.jobs.ack(wid, c.job_id)
                    self.log.warning(
                        "job %s attempt %d interrupted by shutdown; the job was cancelled meanwhile",
                        c.job_id,
                        c.attempt,
                    )
            except UNAVAILABLE as exc:
                self.log.error("job %s: could not requeue on shutdown (%s); recovery will", c.job_id, exc)

    async def fenced_among(self, running: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
        """Which of these running attempts ``(job id, attempt)`` lost their job: the leader declared this
        worker dead (a stall, a partition) and moved it on. They must be killed and record nothing. An id
        whose recovery stopped between PostgreSQL and Redis goes back to its lane from here. Raises on an
        outage (the caller looks again later)."""
        attempts = list(running)
        if not attempts:
            return []
        owners = await self.store.liveness.job_owners(list({job_id for job_id, _ in attempts}))
        lost = [(j, a) for j, a in attempts if decide.fenced(a, owners.get(j), self.worker_id)]
        for job_id, attempt in lost:
            self.log.warning(
                "job %s attempt %d: the job moved on (this worker was declared dead): killing it", job_id, attempt
            )
            owner = owners.get(job_id)
            if owner is not None and owner[0] != Status.RUNNING.value:
                await self._take_back(job_id)  # nobody took it from the queue: maybe Redis never got it
        return lost

    async def _take_back(self, job_id: str) -> None:
        """A fenced attempt's id still in our processing list (its recovery stopped between PostgreSQL
        and Redis) goes back to the queue, or nothing would ever move it while this worker lives."""
        try:
            lane = (await self.store.jobs.routes([job_id])).get(job_id, keys.PENDING)
            await self.queue.jobs.take_back(self.worker_id, job_id, lane)
        except UNAVAILABLE as exc:
            self.log.warning("job %s: could not give its id back (%s); reconciliation will", job_id, exc)

    async def cancelled_among(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these running jobs were cancelled (their attempts are stopped)."""
        return await self.store.jobs.cancelled_among(list(job_ids))

    async def recover_own(self, reason: str, *, retry: bool = True) -> tuple[int, int]:
        """The jobs this worker id holds go back to the queue (PostgreSQL first, then Redis): (back, dead)."""

        def op() -> Awaitable[tuple[int, int]]:
            return recover_worker(self.store, self.queue, self.worker_id, reason)

        back, dead = await (self._step("recover", op) if retry else op())
        if back or dead:
            self.log.warning(
                "worker %s: %d job(s) it held went back to the queue, %d to the DLQ (%s)",
                self.worker_id,
                back,
                dead,
                reason,
            )
        return back, dead

    async def nothing_left(self) -> bool:
        """Burst mode: whether the lanes this worker serves, ``delayed_jobs`` and every processing list are
        empty."""
        depths = await self.queue.jobs.depths()
        served = await self.queue.jobs.lanes.depths()
        return (
            sum(served.get(lane, 0) for lane in self.serving.lanes) == 0
            and depths["delayed"] == 0
            and depths["processing"] == 0
        )
