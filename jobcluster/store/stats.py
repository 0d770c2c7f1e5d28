"""What the charts draw (GetStats), kept in PostgreSQL so they survive restarts: jobs finished per minute
by status and queue depths, both written by the leader (scheduler_server/stats.py), and job durations.

SQL in ``sql/stats.sql``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg

from jobcluster.sqlfile import load_queries

Q = load_queries("stats.sql")


@dataclass
class Minute:
    """One minute of the charts."""

    start: dt.datetime
    finished: dict[str, int] = field(default_factory=dict)  # status -> jobs that ended in it
    depths: dict[str, int] | None = None  # pending, processing, delayed, dlq


class Stats:
    """The per-minute series and the durations."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def count_minutes(self, since: dt.datetime) -> None:
        """Recount the jobs finished from ``since`` on, per minute and status (idempotent)."""
        await self.pool.execute(Q["count_minutes"], since)

    async def sample_queues(self, depths: Mapping[str, int]) -> None:
        await self.pool.execute(
            Q["sample_queues"], depths["pending"], depths["processing"], depths["delayed"], depths["dlq"]
        )

    async def forget(self, older_than: float) -> None:
        """Drop counts and samples older than ``older_than`` seconds."""
        await self.pool.execute(Q["forget_stats"], older_than)

    async def minutes(self, n: int) -> list[Minute]:
        """The last ``n`` minutes, oldest first, the current one last (every minute, empty ones too)."""
        async with self.pool.acquire() as conn:
            now = await conn.fetchval(Q["now_minute"])
            counts = await conn.fetch(Q["minute_counts"], n)
            depths = await conn.fetch(Q["minute_depths"], n)
        out = {now - dt.timedelta(minutes=i): Minute(now - dt.timedelta(minutes=i)) for i in range(n - 1, -1, -1)}
        for r in counts:
            if r["minute"] in out:
                out[r["minute"]].finished[r["status"]] = r["n"]
        for r in depths:
            if r["minute"] in out:
                out[r["minute"]].depths = {k: r[k] for k in ("pending", "processing", "delayed", "dlq")}
        return list(out.values())

    async def durations(
        self, *, status: str | None, text: str | None, schedule: str | None, queue: str | None, limit: int
    ) -> list[float]:
        """Seconds each of the newest ``limit`` finished jobs that match ran."""
        rows = await self.pool.fetch(Q["durations"], status, text, schedule, queue, limit)
        return [max(0.0, r["seconds"]) for r in rows]
