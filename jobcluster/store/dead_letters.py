"""Dead-lettered (FAILED) jobs in PostgreSQL: what the DLQ listing shows, retrying them, recording purges.

SQL in ``sql/dead_letters.sql``. The list of ids itself is Redis' ``dlq_tasks``
(:mod:`jobcluster.queue.dead_letters`).
"""

from __future__ import annotations

import uuid

import asyncpg

from jobcluster.rows import DeadJobRow
from jobcluster.sqlfile import load_queries

Q = load_queries("dead_letters.sql")


class DeadLetters:
    """The PostgreSQL side of the DLQ."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def jobs(self, job_ids: list[str]) -> dict[str, DeadJobRow]:
        """The jobs of these ids (any that exist), by id."""
        rows = await self.pool.fetch(Q["dead_jobs"], _uuids(job_ids))
        return {str(r["id"]): DeadJobRow.from_record(r) for r in rows}

    async def retry(self, job_ids: list[str]) -> list[str]:
        """FAILED jobs among these go back to QUEUED with a fresh retry budget; returns their ids."""
        rows = await self.pool.fetch(Q["retry_dead_jobs"], _uuids(job_ids))
        return [str(r["id"]) for r in rows]

    async def purged(self, job_ids: list[str]) -> None:
        """Record that these dead letters were purged: a rebuild of dlq_tasks leaves them out."""
        await self.pool.execute(Q["purge_dead_jobs"], _uuids(job_ids))

    async def purged_all(self, batch: int = 10_000) -> int:
        """Record that every dead letter was purged, ``batch`` rows per statement; returns how many."""
        total = 0
        while True:
            status = await self.pool.execute(Q["purge_all_dead_jobs"], batch)
            done = int(status.split()[-1])  # "UPDATE n"
            total += done
            if done < batch:
                return total


def _uuids(job_ids: list[str]) -> list[uuid.UUID]:
    """The ids as UUIDs; one that is not (put in dlq_tasks by hand) names no job and is left out."""
    out = []
    for job_id in job_ids:
        try:
            out.append(uuid.UUID(job_id))
        except ValueError:
            pass
    return out
