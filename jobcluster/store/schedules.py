"""Cron schedules in PostgreSQL, and the one job per (schedule, tick).

SQL in ``sql/schedules.sql``. A tick's job is unique on (schedule, tick), so a
second leader, or a retried step, inserts nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from jobcluster.model import ScheduleSpec
from jobcluster.rows import ScheduleRow
from jobcluster.sqlfile import load_queries

Q = load_queries("schedules.sql")


def _row(r: asyncpg.Record | None) -> ScheduleRow | None:
    return ScheduleRow.from_record(r) if r is not None else None


class Schedules:
    """Cron schedules: create, list, pause, resume, delete; due ones and their ticks' jobs."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def upsert(self, spec: ScheduleSpec, next_run: dt.datetime, max_schedules: int,
                     enabled: bool | None = None) -> ScheduleRow | None:
        """Create a schedule, or update the one with this name; ``enabled`` None: a new one is enabled, an
        existing one keeps its state (paused stays paused).

        None when it would be a new one and ``max_schedules`` exist already.
        """
        row = await self.pool.fetchrow(
            Q["upsert_schedule"], uuid.uuid4(), spec.name, spec.cron, spec.timezone, spec.command,
            spec.description, spec.max_retries, spec.timeout_seconds, spec.catchup, spec.overlap, next_run,
            max_schedules, spec.queue, spec.priority, list(spec.constraints), spec.concurrency_key,
            spec.max_concurrency, enabled)
        return _row(row)

    async def all(self) -> list[ScheduleRow]:
        return [ScheduleRow.from_record(r) for r in await self.pool.fetch(Q["list_schedules"])]

    async def get(self, name_or_id: str) -> ScheduleRow | None:
        return _row(await self.pool.fetchrow(Q["get_schedule"], name_or_id))

    async def delete(self, name_or_id: str) -> ScheduleRow | None:
        return _row(await self.pool.fetchrow(Q["delete_schedule"], name_or_id))

    async def set_enabled(self, name_or_id: str, enabled: bool, next_run: dt.datetime) -> ScheduleRow | None:
        """Pause, or resume from ``next_run`` (a resumed schedule does not catch up)."""
        return _row(await self.pool.fetchrow(Q["set_schedule_enabled"], name_or_id, enabled, next_run))

    async def due(self, now: dt.datetime, limit: int = 100) -> list[ScheduleRow]:
        return [ScheduleRow.from_record(r) for r in await self.pool.fetch(Q["due_schedules"], now, limit)]

    async def busy(self, conn: asyncpg.Connection, schedule_id: str) -> bool:
        """The schedule has a job that has not ended (for overlap = forbid)."""
        return bool(await conn.fetchval(Q["schedule_busy"], uuid.UUID(schedule_id)))

    async def insert_job(self, conn: asyncpg.Connection | None, sch: ScheduleRow, tick: dt.datetime | None,
                         submitted_via: str, key: str) -> str | None:
        """The job of one tick (``tick`` None: a manual run). None when that tick already has its job."""
        row = await (conn or self.pool).fetchrow(
            Q["insert_cron_job"], uuid.uuid4(), sch.name, sch.description, sch.command,
            sch.max_retries, sch.timeout_seconds, key, submitted_via, uuid.UUID(sch.id), tick,
            sch.queue, sch.priority, list(sch.constraints), sch.concurrency_key, sch.max_concurrency)
        return str(row["id"]) if row else None

    async def advance(self, conn: asyncpg.Connection, schedule_id: str, seen_next: dt.datetime,
                      next_run: dt.datetime, last_run: dt.datetime | None, last_job_id: str | None,
                      skip_reason: str) -> bool:
        """Move a schedule past the ticks just handled; False when it changed since it was read."""
        status = await conn.execute(Q["advance_schedule"], uuid.UUID(schedule_id), seen_next, next_run,
                                    last_run, uuid.UUID(last_job_id) if last_job_id else None, skip_reason)
        return bool(status.endswith(" 1"))
