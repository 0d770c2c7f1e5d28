"""Taking back the jobs of a worker that is gone: used by a restarting worker and by the leader."""

from __future__ import annotations

from collections.abc import Callable
from typing import AsyncContextManager

import asyncpg

from jobcluster.model import Status
from jobcluster.queue import Queue
from jobcluster.store import Store

#: Opens the transaction the PostgreSQL step runs in (a leader's fenced one) and commits it on exit.
Transaction = Callable[[], AsyncContextManager[asyncpg.Connection]]


async def recover_worker(
    store: Store, queue: Queue, worker_id: str, reason: str, transaction: Transaction | None = None
) -> tuple[int, int]:
    """PostgreSQL first, committed, then Redis: the worker's RUNNING jobs lose their attempt (counted)
    and go back to the queue, or to ``dlq_tasks`` when that was their last retry; anything else left in
    its processing list goes back to the front of its job's lane (read from PostgreSQL before the rest; an
    id taken after that read goes to ``pending_jobs``, and the worker that takes it sends it on to its lane).
    Returns (ids moved back, ids dead).

    ``transaction``: run the PostgreSQL step inside it (a leader's fenced transaction). The Redis
    step runs only after it has committed: an id moved earlier can be taken by a worker at once,
    whose claim then still sees the job RUNNING and drops the id (it would wait for reconciliation).
    If this process dies between the two steps, the processing list is still there, and the next
    recovery of the same worker moves it (the PostgreSQL step then finds nothing left to do).
    """
    # The lanes first (a job's routing never changes): nothing between PostgreSQL's commit and Redis' move.
    held, other_lanes = await queue.liveness.processing_and_lanes(worker_id)
    lanes = await store.jobs.routes(held) if held and other_lanes else {}
    if transaction is None:  # one statement, committed on its own
        moved = await store.liveness.recover_worker_jobs([worker_id], reason)
    else:
        async with transaction() as conn:
            moved = await store.liveness.recover_worker_jobs([worker_id], reason, conn=conn)
    dead = [job_id for job_id, status in moved if status is Status.FAILED]
    back = await queue.liveness.recover_processing(worker_id, dead, lanes)
    return back, len(dead)
