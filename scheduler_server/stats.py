"""The charts' data, a leader duty: every SAMPLE_EVERY the queue depths (from Redis) are sampled and the
jobs finished in the last minutes recounted per minute and status, into PostgreSQL (job_minutes,
queue_samples), so the web UI's charts (GetStats) survive restarts. Kept KEEP seconds.

Recounting, not adding: each pass counts again the minutes from RECOUNT_MINUTES ago, so a job whose
transaction committed after a pass is counted by the next one, a count whose jobs are no longer there (a
dead letter retried) goes, and two leaders for a moment (a partition) write the same numbers. A pass reads
only those minutes' jobs (jobs_finished_idx).
"""

from __future__ import annotations

import datetime as dt
import logging

from jobcluster.queue import Queue
from jobcluster.store import Store
from scheduler_server.duties import Duty, Term

log = logging.getLogger("leader")

#: How often the queues are sampled and the last minutes recounted (seconds).
SAMPLE_EVERY = 10.0
#: How many minutes back each pass recounts (the current one included).
RECOUNT_MINUTES = 3
#: How long counts and samples are kept (seconds).
KEEP = 7 * 86400.0
#: How often what is older than KEEP is deleted (seconds).
FORGET_EVERY = 3600.0


class KeepStats(Duty):
    """Every SAMPLE_EVERY: the queue depths sampled, the last RECOUNT_MINUTES minutes recounted."""

    name = "keep_stats"
    interval = SAMPLE_EVERY

    def __init__(self, store: Store, queue: Queue) -> None:
        self.store = store
        self.queue = queue

    async def run_once(self, term: Term) -> None:
        await self.store.stats.sample_queues(await self.queue.jobs.depths())
        minute = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
        await self.store.stats.count_minutes(minute - dt.timedelta(minutes=RECOUNT_MINUTES - 1))


class ForgetStats(Duty):
    """Every FORGET_EVERY: counts and samples older than KEEP are deleted."""

    name = "forget_stats"
    interval = FORGET_EVERY

    def __init__(self, store: Store) -> None:
        self.store = store

    async def run_once(self, term: Term) -> None:
        await self.store.stats.forget(KEEP)
