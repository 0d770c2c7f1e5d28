"""Reconciliation's view of PostgreSQL: jobs that should be waiting in Redis.

SQL in ``sql/reconcile.sql``. The Redis side is :mod:`jobcluster.queue.reconcile`.
"""

from __future__ import annotations

import uuid

import asyncpg

from jobcluster.rows import WaitingJob
from jobcluster.sqlfile import load_queries

Q = load_queries("reconcile.sql")


class Reconcile:
    """Waiting (QUEUED/PENDING) jobs."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def waiting(self, unchanged_for: float, limit: int) -> list[WaitingJob]:
        """QUEUED/PENDING jobs unchanged for ``unchanged_for`` seconds, oldest change first."""
        return [WaitingJob.from_record(r) for r in await self.pool.fetch(Q["waiting_jobs"], unchanged_for, limit)]

    async def still_waiting(self, ids: list[str]) -> list[WaitingJob]:
        """Those of these jobs that are still QUEUED/PENDING."""
        rows = await self.pool.fetch(Q["still_waiting"], [uuid.UUID(i) for i in ids])
        return [WaitingJob.from_record(r) for r in rows]
