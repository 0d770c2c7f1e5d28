"""The lifecycle layer: every job transition, over :class:`~jobcluster.store.Store` (PostgreSQL, the
record) and :class:`~jobcluster.queue.Queue` (Redis, ids only), in one place.

The worker, the RPC layer and the leader call it and hold no transition logic of their own. Its rule is
:mod:`.policy`: PostgreSQL first, then Redis, and one policy for a Redis step that fails after PostgreSQL
committed. Transitions are batch-shaped (a list in, a list out; one job is a batch of one), so what a
transition causes is added once, to the batched form.

=====================  =========================  =====================================================
entry point            module                     transitions
=====================  =========================  =====================================================
``submissions``        :mod:`.submit`             submit a group (SubmitJob) or a batch; run a schedule
                                                  now; the healer of unpushed ids (:mod:`.policy`)
:meth:`attempts`       :mod:`.attempts`           a worker's: take, claim, refuse, settle, close a
                                                  cancelled attempt, interrupt, fence, recover its own
:meth:`cancel`         (here)                     cancel a job
``dead_letters``       :mod:`.dead_letters`       retry or purge dead letters
``ticks``              :mod:`.cron`               fire a schedule's due ticks (the leader)
:meth:`recover`        :mod:`.recover`            take back a dead worker's jobs (the leader)
(decisions)            :mod:`.decide`             pure functions: settle, refuse, fenced
=====================  =========================  =====================================================
"""

from __future__ import annotations

import logging

from jobcluster.lifecycle.attempts import Attempts, Retry
from jobcluster.lifecycle.cron import Ticks
from jobcluster.lifecycle.dead_letters import DeadLetterMoves
from jobcluster.lifecycle.policy import Unpushed, hint
from jobcluster.lifecycle.recover import Transaction, recover_worker
from jobcluster.lifecycle.submit import Submissions
from jobcluster.model import Serving, Status
from jobcluster.queue import Queue
from jobcluster.rows import CancelResult
from jobcluster.settings import Settings
from jobcluster.store import Store

__all__ = ["Lifecycle"]


class Lifecycle:
    """The one entry point to every job transition of one process (a server, a worker, a tool)."""

    def __init__(
        self, settings: Settings, store: Store, queue: Queue, *, address: str = "", log: logging.Logger | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.log = log or logging.getLogger("lifecycle")
        self.unpushed = Unpushed(self.log)  # ids stored but not pushed (Redis down): this process heals them
        self.submissions = Submissions(store, queue, self.unpushed, address, self.log)
        self.dead_letters = DeadLetterMoves(store, queue)
        self.ticks = Ticks(store, queue, address, settings.cron_misfire_grace, self.log)

    def attempts(self, worker_id: str, serving: Serving, retry: Retry) -> Attempts:
        """The transitions of the worker ``worker_id`` serving ``serving``, each step retried by ``retry``."""
        return Attempts(
            self.store,
            self.queue,
            worker_id,
            serving,
            retry=retry,
            log=self.log,
            backoff_base=self.settings.retry_backoff_base,
            backoff_max=self.settings.retry_backoff_max,
        )

    async def cancel(self, job_id: str, reason: str = "cancelled") -> CancelResult:
        """Cancel a job that has not ended (one statement); a waiting job's id then leaves ``delayed_jobs``.

        That withdrawal is a hint (:mod:`.policy`): when Redis fails it is skipped, and the cancel stands,
        answered as done: the worker that takes the id finds the job CANCELLED and drops it."""
        outcome = await self.store.jobs.cancel(job_id, reason)
        if outcome.cancelled and outcome.status in (Status.QUEUED, Status.PENDING):
            await hint(f"job {job_id}: withdraw after cancel", lambda: self.queue.jobs.withdraw(job_id))
        return outcome

    async def recover(self, worker_id: str, reason: str, transaction: Transaction | None = None) -> tuple[int, int]:
        """A gone worker's jobs back to the queue (or to the DLQ), PostgreSQL inside ``transaction`` (the
        leader's fenced one), then Redis; returns (ids moved back, ids dead)."""
        return await recover_worker(self.store, self.queue, worker_id, reason, transaction)
