"""Cron schedules in PostgreSQL, and the one job per (schedule, tick).

SQL in ``sql/schedules.sql``. A tick's job is unique on (schedule, tick), so a
second leader, or a retried step, inserts nothing. Jobs a schedule makes carry
no idempotency key: nothing a caller submits can take a tick's place.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg

from jobcluster.model import ScheduleSpec, Status
from jobcluster.rows import ScheduleRow
from jobcluster.sqlfile import load_queries

Q = load_queries("schedules.sql")


def _row(r: asyncpg.Record | None) -> ScheduleRow | None:
    return ScheduleRow.from_record(r) if r is not None else None


@dataclass(frozen=True)
class Unfinished:
    """A job of a schedule that has not ended: what overlap = forbid waits for."""

    job_id: str
    status: Status


class ScheduleBusy(Exception):
    """A run of a schedule with overlap = forbid was refused: ``job`` has not ended."""

    def __init__(self, job: Unfinished) -> None:
        super().__init__(f"job {job.job_id} is still {job.status.value}")
        self.job = job


class Schedules:
    """Cron schedules: create, list, pause, resume, delete; due ones and their ticks' jobs."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def upsert(
        self, spec: ScheduleSpec, next_run: dt.datetime, max_schedules: int, enabled: bool | None = None
    ) -> ScheduleRow | None:
        """Create a schedule, or update the one with this name; ``enabled`` None: a new one is enabled, an
        existing one keeps its state (paused stays paused).

        None when it would be a new one and ``max_schedules`` exist already.
        """
        row = await self.pool.fetchrow(
            Q["upsert_schedule"],
            uuid.uuid4(),
            spec.name,
            spec.cron,
            spec.timezone,
            spec.command,
            spec.description,
            spec.max_retries,
            spec.timeout_seconds,
            spec.catchup,
            spec.overlap,
            next_run,
            max_schedules,
            spec.queue,
            spec.priority,
            list(spec.constraints),
            spec.concurrency_key,
            spec.max_concurrency,
            enabled,
        )
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

    async def lock(self, conn: asyncpg.Connection, schedule_id: str) -> str | None:
        """Hold the schedule's row until ``conn``'s transaction ends, so that an overlap check and the insert
        after it are one step against any other run of it. Its overlap policy as it is now (``allow`` or
        ``forbid``); None when the schedule is gone."""
        overlap: str | None = await conn.fetchval(Q["lock_schedule"], uuid.UUID(schedule_id))
        return overlap

    async def unfinished(self, conn: asyncpg.Connection, schedule_id: str) -> Unfinished | None:
        """The oldest job of the schedule that has not ended (for overlap = forbid), or None."""
        row = await conn.fetchrow(Q["schedule_unfinished_job"], uuid.UUID(schedule_id))
        return Unfinished(str(row["id"]), Status(row["status"])) if row else None

    async def insert_job(
        self, conn: asyncpg.Connection, sch: ScheduleRow, tick: dt.datetime | None, submitted_via: str
    ) -> str | None:
        """The job of one tick (``tick`` None: a manual run). None when that tick already has its job."""
        row = await conn.fetchrow(
            Q["insert_cron_job"],
            uuid.uuid4(),
            sch.name,
            sch.description,
            sch.command,
            sch.max_retries,
            sch.timeout_seconds,
            submitted_via,
            uuid.UUID(sch.id),
            tick,
            sch.queue,
            sch.priority,
            list(sch.constraints),
            sch.concurrency_key,
            sch.max_concurrency,
        )
        return str(row["id"]) if row else None

    async def run_now(self, sch: ScheduleRow, submitted_via: str, *, force: bool) -> str | None:
        """One job of the schedule now, outside its ticks; its id, or None when the schedule is gone.

        With overlap = forbid and not ``force``: raises :class:`ScheduleBusy` while a job of the schedule has
        not ended, decided under the schedule's row lock, as the leader's ticks are.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            overlap = await self.lock(conn, sch.id)
            if overlap is None:
                return None
            if overlap == "forbid" and not force:
                running = await self.unfinished(conn, sch.id)
                if running is not None:
                    raise ScheduleBusy(running)
            return await self.insert_job(conn, sch, None, submitted_via)

    async def advance(
        self,
        conn: asyncpg.Connection,
        schedule_id: str,
        seen_next: dt.datetime,
        next_run: dt.datetime,
        last_run: dt.datetime | None,
        last_job_id: str | None,
        skip_reason: str,
    ) -> bool:
        """Move a schedule past the ticks just handled; False when it changed since it was read."""
        status = await conn.execute(
            Q["advance_schedule"],
            uuid.UUID(schedule_id),
            seen_next,
            next_run,
            last_run,
            uuid.UUID(last_job_id) if last_job_id else None,
            skip_reason,
        )
        return bool(status.endswith(" 1"))
