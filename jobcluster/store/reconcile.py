"""Reconciliation's view of PostgreSQL: jobs that should be waiting in Redis, and dead letters that
should be in ``dlq_tasks``.

SQL in ``sql/reconcile.sql``. The Redis side is :mod:`jobcluster.queue.reconcile`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from jobcluster.model import Status
from jobcluster.rows import WaitingJob
from jobcluster.sqlfile import load_queries

Q = load_queries("reconcile.sql")

_WAITING = (Status.QUEUED.value, Status.PENDING.value)
#: Before every dead letter, in (updated_at, id) order.
_START = (dt.datetime.min.replace(tzinfo=dt.timezone.utc), uuid.UUID(int=0))
#: Where a page of waiting jobs ends: (last change, id) of its last job.
WaitingCursor = tuple[dt.datetime, uuid.UUID]


@dataclass(frozen=True)
class DeadLetterWindow:
    """Which dead letters a pass checks: last changed in [``since``, ``upto``); ``since`` None = never
    checked before (a new or upgraded database)."""

    since: dt.datetime | None
    upto: dt.datetime


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as the sweep sees it: its job and when it died (its last change)."""

    job_id: str
    changed_at: dt.datetime


class Reconcile:
    """Waiting (QUEUED/PENDING) jobs and dead letters (FAILED, not purged)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def waiting_after(
        self, unchanged_for: float, after: WaitingCursor | None, limit: int
    ) -> tuple[list[WaitingJob], WaitingCursor | None]:
        """Up to ``limit`` QUEUED/PENDING jobs unchanged for ``unchanged_for`` seconds that come after
        ``after`` (None: from the first) in (last change, id) order, with the cursor of the next page
        (None: this was the last). One keyset query on jobs_waiting_idx."""
        start = after or _START
        rows = await self.pool.fetch(Q["waiting_jobs_after"], unchanged_for, start[0], start[1], limit)
        following = (rows[-1]["updated_at"], rows[-1]["id"]) if len(rows) == limit else None
        return [WaitingJob.from_record(r) for r in rows], following

    async def all_waiting(self, unchanged_for: float, page: int) -> AsyncIterator[list[WaitingJob]]:
        """Every QUEUED/PENDING job unchanged for ``unchanged_for`` seconds, oldest change first, in pages
        of ``page`` (one keyset query each)."""
        after: WaitingCursor | None = None
        while True:
            rows, after = await self.waiting_after(unchanged_for, after, page)
            if rows:
                yield rows
            if after is None:
                return

    async def still_waiting(self, ids: list[str]) -> list[WaitingJob]:
        """Those of these jobs that are still QUEUED/PENDING."""
        rows = await self.pool.fetch(Q["still_waiting"], [uuid.UUID(i) for i in ids])
        return [WaitingJob.from_record(r) for r in rows if r["status"] in _WAITING]

    async def waiting_submitted_via(self, address: str, before_secs: float, limit: int) -> list[WaitingJob]:
        """QUEUED/PENDING jobs submitted through ``address``, unchanged for ``before_secs``; newest first."""
        rows = await self.pool.fetch(Q["waiting_submitted_via"], address, before_secs, limit)
        return [WaitingJob.from_record(r) for r in rows]

    async def dead_letter_window(self, unchanged_for: float) -> DeadLetterWindow:
        """Where the last pass stopped, and dead letters unchanged for ``unchanged_for`` seconds end."""
        row = await self.pool.fetchrow(Q["dead_letter_window"], unchanged_for)
        assert row is not None
        return DeadLetterWindow(row["checked_to"], row["upto"])

    async def dead_letters_checked(self, upto: dt.datetime) -> None:
        """Record that dead letters changed before ``upto`` are in dlq_tasks (never moves back)."""
        await self.pool.execute(Q["set_dead_letter_checked_to"], upto)

    async def dead_letters(self, since: dt.datetime | None, upto: dt.datetime, page: int) -> AsyncIterator[list[str]]:
        """Ids of dead letters (FAILED, not purged) last changed in [since, upto), oldest change first,
        in pages of ``page`` (one keyset query each; ``since`` None: from the first)."""
        start = since or _START[0]
        after = _START
        while True:
            rows = await self.pool.fetch(Q["dead_letters_between"], start, upto, after[0], after[1], page)
            if rows:
                yield [str(r["id"]) for r in rows]
                after = (rows[-1]["updated_at"], rows[-1]["id"])
            if len(rows) < page:
                return

    async def dead_letters_recorded_since(self) -> dt.datetime | None:
        """Since when every purge is recorded (None: unknown); :meth:`dead_letters_after` starts there."""
        since: dt.datetime | None = await self.pool.fetchval(Q["dead_letters_recorded_since"])
        return since

    async def dead_letters_after(
        self, since: dt.datetime, unchanged_for: float, after: WaitingCursor | None, limit: int
    ) -> tuple[list[DeadLetter], WaitingCursor | None]:
        """Up to ``limit`` dead letters (FAILED, not purged) that died at or after ``since``, unchanged for
        ``unchanged_for`` seconds, after ``after`` (None: from the first) in the order they died, with the
        cursor of the next page (None: this was the last). One keyset query on jobs_dead_letters_idx."""
        start = after or _START
        rows = await self.pool.fetch(Q["dead_letters_after"], since, unchanged_for, start[0], start[1], limit)
        following = (rows[-1]["updated_at"], rows[-1]["id"]) if len(rows) == limit else None
        return [DeadLetter(str(r["id"]), r["updated_at"]) for r in rows], following

    async def dead_letters_before(self, letter: DeadLetter, limit: int) -> list[str]:
        """The ``limit`` dead letters that died just before ``letter``, newest first."""
        rows = await self.pool.fetch(Q["dead_letters_before"], letter.changed_at, uuid.UUID(letter.job_id), limit)
        return [str(r["id"]) for r in rows]

    async def still_dead(self, ids: list[str]) -> list[str]:
        """Those of these jobs that are still dead letters (FAILED, not purged), in the order given (the
        order they died in: the rows come back in any order, and dlq_tasks keeps the order of deaths)."""
        rows = await self.pool.fetch(Q["still_dead"], [uuid.UUID(i) for i in ids])
        dead = {str(r["id"]) for r in rows if r["status"] == Status.FAILED.value and not r["purged"]}
        return [i for i in ids if i in dead]
