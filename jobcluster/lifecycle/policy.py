"""The one policy for a transition PostgreSQL has committed whose Redis step then fails.

1. **PostgreSQL first.** Every transition commits in PostgreSQL (the record) before Redis (ids only) is
   told; nothing is written to Redis for a change PostgreSQL has not committed.
2. **A committed transition stands.** A Redis step that fails after the commit never undoes the change
   and is never reported as the change failing: a caller is answered with what committed (a cancel
   that committed is cancelled; a submission says it is stored, and how it will be queued:
   :class:`StoredNotQueued`, which the API answers as UNAVAILABLE so a client retries with its
   idempotency key).
3. **The Redis step is owed, and exactly one party pays it:**

   - *the worker holding the id* (settle, refuse, interrupt): it retries the step through the outage
     (:func:`jobcluster.aio.retrying`); the id stays in its processing list meanwhile, and if the worker
     dies, the recovery of that list moves it;
   - *this server's healer* (:class:`Unpushed`), for ids that must wait in a lane or ``delayed_jobs``
     (a submission, a run-now, a retried dead letter): pushed within HEAL_EVERY of Redis answering,
     with or without a leader;
   - *nobody*, when the step is a hint: a cancelled job's id left in ``delayed_jobs`` (the worker that
     takes it finds the job CANCELLED and drops it), a concurrency key's release (the waiting job's
     backoff ends its wait);
   - *the leader's reconciliation*, always, as the last resort (``scheduler_server/healer.py``, within
     RECONCILE_AFTER): whatever a process that died between the two steps left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from jobcluster.errors import REDIS_ERRORS, UNAVAILABLE, which
from jobcluster.model import Status
from jobcluster.queue import Queue
from jobcluster.queue.reconcile import Waiting
from jobcluster.rows import WaitingJob
from jobcluster.store import Store

log = logging.getLogger("lifecycle")

#: How often a server retries its unpushed submissions (seconds).
HEAL_EVERY = 1.0
#: Most ids a server remembers; past that it forgets new ones and scans PostgreSQL once Redis is back.
MAX_REMEMBERED = 100_000
#: Most of its own waiting jobs a server looks at in one scan (newest first).
SCAN_LIMIT = 10_000
#: Above this many ids, read every id Redis holds once instead of one LPOS per id.
_LPOS_AT_MOST = 20


class StoredNotQueued(Exception):
    """PostgreSQL took the job(s) but Redis could not be told; the message says how it heals."""


def stored_not_queued(stored: str, remedy: str, exc: BaseException) -> StoredNotQueued:
    """PostgreSQL holds ``stored`` ("job <id> is", "N jobs are") but Redis failed with ``exc``."""
    return StoredNotQueued(
        f"{stored} stored but Redis is unavailable ({exc}); this server queues "
        f"{'it' if stored.startswith('job ') else 'them'} when Redis is back, "
        f"or {remedy}"
    )


async def hint(what: str, op: Callable[[], Awaitable[object]]) -> None:
    """A Redis step nobody owes (rule 3): tried once; an outage is logged, never raised."""
    try:
        await op()
    except REDIS_ERRORS as exc:
        log.debug("%s skipped: %s", what, exc)


class Unpushed:
    """Ids this server stored in PostgreSQL but could not push to Redis, pushed again in the background."""

    def __init__(self, log: logging.Logger = log) -> None:
        self.log = log  # the server's
        self._ids: set[str] = set()
        self._scan = True  # at start: jobs this address stored before, that Redis may lack
        self._started = time.monotonic()
        self._failing = False

    def remember(self, job_ids: Iterable[str]) -> None:
        """Push these later (their push failed); too many, and a scan of PostgreSQL finds them instead."""
        for job_id in job_ids:
            if len(self._ids) >= MAX_REMEMBERED:
                self._scan = True
                return
            self._ids.add(job_id)

    @property
    def waiting(self) -> int:
        """How many ids are remembered."""
        return len(self._ids)

    async def run(self, store: Store, queue: Queue, address: str) -> None:
        """Forever: every HEAL_EVERY, push what is remembered (and scan when due) until it succeeds."""
        while True:
            try:
                await self.heal(store, queue, address)
                if self._failing:
                    self.log.info("unpushed submissions: Redis and PostgreSQL reachable again")
                self._failing = False
            except UNAVAILABLE as exc:
                if not self._failing:
                    self.log.error(
                        "unpushed submissions: %s unavailable (%s); %d job(s) wait to be queued",
                        which(exc),
                        exc,
                        len(self._ids),
                    )
                self._failing = True
            await asyncio.sleep(HEAL_EVERY)

    async def heal(self, store: Store, queue: Queue, address: str) -> int:
        """One round: the scan when due, then the remembered ids. Returns how many were pushed."""
        pushed = 0
        if self._scan:
            since_start = time.monotonic() - self._started
            own = await store.reconcile.waiting_submitted_via(address, since_start, SCAN_LIMIT)
            pushed += await restore(queue, own)
            self._scan = False
            if pushed:
                self.log.warning(
                    "%d waiting job(s) submitted here before this start were missing from Redis and were pushed", pushed
                )
        if self._ids:
            ids = list(self._ids)
            waiting = await store.reconcile.still_waiting(ids)
            done = await restore(queue, waiting)
            self._ids.difference_update(ids)
            pushed += done
            if done:
                self.log.info("%d stored job(s) whose push had failed are queued now", done)
        return pushed


async def restore(queue: Queue, jobs: list[WaitingJob]) -> int:
    """Push those of these waiting jobs that Redis holds nowhere (checked atomically per id; many: against
    one read of what Redis holds, so the pushes stay linear in the queue's length)."""
    waiting = [waiting_entry(w) for w in jobs]
    if len(waiting) <= _LPOS_AT_MOST:
        return await queue.reconcile.restore(waiting)
    held, known = await queue.reconcile.held_and_lengths()
    pushed, _ = await queue.reconcile.restore_since([w for w in waiting if w[0] not in held], known)
    return pushed


def waiting_entry(w: WaitingJob) -> Waiting:
    """How reconciliation puts a waiting job back: its id, when it is due (0: now), its lane."""
    return w.job_id, w.due_ms if w.status is Status.PENDING else 0, w.lane
