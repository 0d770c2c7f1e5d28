"""Taking back the jobs of a worker that is gone: used by a restarting worker and by the leader."""

from __future__ import annotations

import asyncpg

from jobcluster.model import Status
from jobcluster.queue import Queue
from jobcluster.store import Store


async def recover_worker(store: Store, queue: Queue, worker_id: str, reason: str,
                         conn: asyncpg.Connection | None = None) -> tuple[int, int]:
    """PostgreSQL first, then Redis: the worker's RUNNING jobs lose their attempt (counted) and go
    back to the queue, or to ``dlq_tasks`` when that was their last retry; anything else left in its
    processing list goes back to the front of ``pending_jobs``. Returns (ids moved back, ids dead).

    ``conn``: run the PostgreSQL step on this connection (a leader's fenced transaction). The Redis
    step then runs before that transaction commits; it only moves ids, and a worker that takes one
    before the commit finds the job not yet claimable and re-delays it.
    """
    moved = await store.liveness.recover_worker_jobs([worker_id], reason, conn=conn)
    dead = [job_id for job_id, status in moved if status is Status.FAILED]
    back = await queue.liveness.recover_processing(worker_id, dead)
    return back, len(dead)
