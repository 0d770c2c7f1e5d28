"""Reading jobs from PostgreSQL: one job with its attempts, pages of jobs, counts.

SQL in ``sql/job_queries.sql``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import asyncpg

from jobcluster.model import Status
from jobcluster.rows import EPOCH, JobRow
from jobcluster.sqlfile import load_queries

Q = load_queries("job_queries.sql")


def _at(ms: int) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc) if ms else None


@dataclass(frozen=True)
class JobPage:
    """Some jobs, and whether the byte budget left out some that matched."""

    jobs: list[JobRow]
    cut: bool


class Changed(NamedTuple):
    """A watched job as it is now: the job with its attempts, its version (updated_at, µs), and how soon
    (ms) a PENDING job's shown status turns QUEUED by itself (0: due, or not PENDING)."""

    job: JobRow
    version: int
    due_in_ms: int


class JobQueries:
    """Read-only views of jobs."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, job_id: str) -> JobRow | None:
        """One job with its latest output and its attempts, or None (also for a malformed id)."""
        try:
            key = uuid.UUID(job_id)
        except ValueError:
            return None
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q["get_job"], key)
            if row is None:
                return None
            attempts = await conn.fetch(Q["get_attempts"], key)
        return JobRow.from_record(row, attempts)

    async def changed(self, ids: list[str], seen: Mapping[str, tuple[Status, int]]) -> dict[str, Changed]:
        """Of these jobs, the ones whose (shown status, version) differs from ``seen`` or that are not in it.
        A job not in ``seen`` and not returned does not exist.

        One statement, and a second one for the attempts when any job changed (WatchJob's look).
        """
        keys = [uuid.UUID(i) for i in ids]
        known = [seen.get(i) for i in ids]
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                Q["watched_jobs_changed"],
                keys,
                [k[0].value if k else None for k in known],
                [k[1] if k else None for k in known],
            )
            attempts = await conn.fetch(Q["attempts_of_jobs"], [r["id"] for r in rows]) if rows else []
        by_job: dict[uuid.UUID, list[asyncpg.Record]] = {}
        for a in attempts:
            by_job.setdefault(a["job_id"], []).append(a)
        return {
            str(r["id"]): Changed(JobRow.from_record(r, by_job.get(r["id"], ())), r["version"], r["due_in_ms"])
            for r in rows
        }

    async def page(
        self,
        *,
        status: Status | None,
        ids: list[str] | None,
        after: tuple[int, str] | None,
        limit: int,
        max_bytes: int,
        include_output: bool,
        text: str | None = None,
        schedule: str | None = None,
        since_ms: int = 0,
        until_ms: int = 0,
        queue: str | None = None,
    ) -> JobPage:
        """Jobs newest first, after the keyset cursor ``(created_at_us, id)``, filtered: at most
        ``limit`` of them, and only as many as fit in about ``max_bytes`` (always at least one)."""
        uuids = [uuid.UUID(i) for i in ids] if ids else None
        created = id_ = None
        if after is not None:
            created = EPOCH + dt.timedelta(microseconds=after[0])
            id_ = uuid.UUID(after[1])
        rows = await self.pool.fetch(
            Q["list_jobs"],
            status.value if status else None,
            uuids,
            created,
            id_,
            limit,
            include_output,
            text or None,
            schedule or None,
            _at(since_ms),
            _at(until_ms),
            max_bytes,
            queue or None,
        )
        cut = bool(rows) and rows[0]["fetched"] > len(rows)
        return JobPage([JobRow.from_record(r) for r in rows], cut)

    async def running_by_key(self, keys: list[str]) -> dict[str, int]:
        """Concurrency key -> jobs of it RUNNING now (keys with none are left out)."""
        return {r["concurrency_key"]: r["n"] for r in await self.pool.fetch(Q["running_by_key"], keys)}

    async def status_counts(self) -> dict[Status, int]:
        """How many jobs have each status (as shown)."""
        return {Status(r["status"]): r["n"] for r in await self.pool.fetch(Q["status_counts"])}
