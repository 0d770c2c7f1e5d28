"""Submitting: jobs stored in PostgreSQL, then their ids pushed to their lanes (or ``delayed_jobs``).

A push that fails after the INSERT committed is owed (:mod:`.policy`): this server's healer
(:class:`~jobcluster.lifecycle.policy.Unpushed`) pushes the ids once Redis answers, and the caller is
told the jobs are stored (:class:`~jobcluster.lifecycle.policy.StoredNotQueued`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from jobcluster import keys, metrics
from jobcluster.errors import POSTGRES_ERRORS, REDIS_ERRORS
from jobcluster.lifecycle.policy import Unpushed, stored_not_queued
from jobcluster.model import JobSpec, Status
from jobcluster.queue import Queue
from jobcluster.rows import ScheduleRow, Submitted
from jobcluster.store import Store

#: What a SubmitJob caller does when its job is stored but Redis could not be told.
RESUBMIT = "submit again with the same idempotency key to queue it"


class Submissions:
    """Submit jobs one group or one batch at a time, and run a schedule now."""

    def __init__(self, store: Store, queue: Queue, unpushed: Unpushed, address: str, log: logging.Logger) -> None:
        self.store = store
        self.queue = queue
        self.unpushed = unpushed
        self.address = address
        self.log = log

    async def submit_group(self, specs: list[JobSpec]) -> list[Submitted | BaseException]:
        """Independent submissions (concurrent SubmitJob calls) stored in one statement, then pushed in one
        round trip; each one's outcome, in order. An outage fails the whole group (nothing stored: one
        statement); any other refusal of the statement is retried job by job, so a bad job fails alone."""
        outcomes: list[Submitted | BaseException]
        try:
            outcomes = list(await self.store.jobs.insert_many(specs, self.address))
        except POSTGRES_ERRORS:
            raise
        except Exception:
            if len(specs) == 1:
                raise
            outcomes = await asyncio.gather(
                *(self.store.jobs.insert(spec, self.address) for spec in specs), return_exceptions=True
            )
        stored = [s for s in outcomes if isinstance(s, Submitted)]
        _count_new(stored)
        try:
            await self._push(stored)
        except REDIS_ERRORS as exc:
            self.unpushed.remember(s.job_id for s in stored)
            return [
                stored_not_queued(f"job {s.job_id} is", RESUBMIT, exc) if isinstance(s, Submitted) else s
                for s in outcomes
            ]
        return outcomes

    async def submit_batch(self, specs: list[JobSpec]) -> list[Submitted]:
        """A batch stored all or none, then pushed; StoredNotQueued when Redis failed after the commit."""
        results = await self.store.jobs.insert_many(specs, self.address)
        _count_new(results)
        try:
            await self._push(results)
        except REDIS_ERRORS as exc:
            self.unpushed.remember(s.job_id for s in results if s.status in (Status.QUEUED, Status.PENDING))
            raise stored_not_queued(
                f"{len(results)} jobs are", "submit the batch again with the same idempotency keys", exc
            ) from exc
        return results

    async def _push(self, stored: Sequence[Submitted]) -> None:
        """Stored jobs into Redis, each in its lane: the new ones in one round trip (delayed ones to
        ``delayed_jobs``); a QUEUED one that was already there (a retried submit, found by its idempotency
        key) is pushed unless Redis holds it, since the first try may have died between INSERT and push."""
        fresh = [
            (s.job_id, s.due_ms if s.status is Status.PENDING else 0, keys.lane_of(s)) for s in stored if s.inserted
        ]
        if fresh:
            await self.queue.jobs.enqueue_many(fresh)
        for s in stored:
            if not s.inserted and s.status is Status.QUEUED:
                await self.queue.jobs.ensure_queued(s.job_id, keys.lane_of(s))

    async def run_now(self, sch: ScheduleRow, *, force: bool) -> str | None:
        """One job of the schedule now, stored then pushed; None when the schedule was deleted meanwhile.
        ScheduleBusy (from the store) when overlap=forbid holds and nobody forces it."""
        job_id = await self.store.schedules.run_now(sch, self.address, force=force)
        if job_id is None:
            return None
        metrics.JOBS_SUBMITTED.labels(sch.queue or keys.DEFAULT_QUEUE).inc()
        try:
            await self.queue.jobs.enqueue(job_id, lane=keys.lane_of(sch))
        except REDIS_ERRORS as exc:
            self.unpushed.remember([job_id])
            raise stored_not_queued(f"job {job_id} is", "the leader's reconciliation will", exc) from exc
        return job_id


def _count_new(stored: Sequence[Submitted]) -> None:
    """jobcluster_jobs_submitted_total: the jobs stored now (not those an idempotency key found)."""
    for s in stored:
        if s.inserted:
            metrics.JOBS_SUBMITTED.labels(s.queue or keys.DEFAULT_QUEUE).inc()
