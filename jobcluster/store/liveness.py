"""Workers in PostgreSQL: which ones run jobs, and taking back the jobs of one that is gone.

SQL in ``sql/liveness.sql``. Heartbeats themselves live in Redis
(:mod:`jobcluster.queue.liveness`).
"""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from jobcluster.model import Status
from jobcluster.rows import ms
from jobcluster.sqlfile import load_queries

Q = load_queries("liveness.sql")


class Liveness:
    """Running workers as PostgreSQL sees them."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def running_workers(self) -> dict[str, int]:
        """Worker id -> start (unix ms) of its oldest RUNNING job."""
        return {r["worker_id"]: ms(r["since"]) for r in await self.pool.fetch(Q["running_workers"])}

    async def recover_worker_jobs(
        self, worker_ids: list[str], reason: str, conn: asyncpg.Connection | None = None
    ) -> list[tuple[str, Status]]:
        """Jobs RUNNING on these workers go back (QUEUED) or, retries used up, to FAILED: (id, new status)."""
        rows = await (conn or self.pool).fetch(Q["recover_worker_jobs"], worker_ids, reason)
        return [(str(r["id"]), Status(r["status"])) for r in rows]

    async def job_owners(self, job_ids: list[str]) -> dict[str, tuple[str, int, str]]:
        """Job id -> (status, attempts, worker id or '') for those of ``job_ids`` that exist."""
        rows = await self.pool.fetch(Q["job_owners"], [uuid.UUID(i) for i in job_ids])
        return {str(r["id"]): (r["status"], r["attempts"], r["worker_id"] or "") for r in rows}

    async def now(self) -> dt.datetime:
        """PostgreSQL's clock now: the one due times, claims and cron ticks are judged by."""
        value: dt.datetime = await self.pool.fetchval(Q["store_now"])
        return value
