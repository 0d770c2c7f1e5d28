"""Typed rows: what the store returns, built from asyncpg records in one place.

Times leave PostgreSQL as unix milliseconds (0 for "never"), ids as strings,
statuses as :class:`~jobcluster.model.Status`. A job's ``status`` is the status
users see: PostgreSQL computes it (``job_shown_status``), so a PENDING job
whose time has come shows as QUEUED.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from jobcluster import keys
from jobcluster.model import Routing, ScheduleSpec, Status

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def ms(value: dt.datetime | None) -> int:
    """Unix milliseconds of a timestamp; 0 for None."""
    return int(value.timestamp() * 1000) if value else 0


def _str_or_empty(value: object) -> str:
    return str(value) if value else ""


def routing_of(r: asyncpg.Record) -> dict[str, Any]:
    """The routing fields (jobcluster.model.Routing) of a ``jobs`` or ``schedules`` row."""
    return {
        "queue": r["queue"],
        "priority": r["priority"],
        "constraints": tuple(r["constraints"]),
        "concurrency_key": r["concurrency_key"],
        "max_concurrency": r["max_concurrency"],
    }


@dataclass(frozen=True)
class AttemptRow:
    """One attempt of a job (a row of ``job_attempts``)."""

    number: int
    worker_id: str
    started_at_ms: int
    finished_at_ms: int
    exit_code: int | None
    error: str
    output_truncated: bool

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> AttemptRow:
        return cls(
            number=r["attempt"],
            worker_id=r["worker_id"],
            started_at_ms=ms(r["started_at"]),
            finished_at_ms=ms(r["finished_at"]),
            exit_code=r["exit_code"],
            error=r["error"],
            output_truncated=r["output_truncated"],
        )


@dataclass(frozen=True)
class JobRow(Routing):
    """A job as users see it, with the output of its latest attempt (when asked for), and its routing."""

    id: str
    status: Status
    output: str
    name: str
    description: str
    command: str
    exit_code: int | None
    attempts: int
    max_retries: int
    timeout_seconds: float
    run_at_ms: int
    idempotency_key: str
    created_at_ms: int
    created_at_us: int
    updated_at_ms: int
    started_at_ms: int
    finished_at_ms: int
    worker_id: str
    last_error: str
    output_truncated: bool
    submitted_via: str
    schedule_id: str
    scheduled_for_ms: int
    attempt_history: tuple[AttemptRow, ...] = ()

    @classmethod
    def from_record(cls, r: asyncpg.Record, attempts: Sequence[asyncpg.Record] = ()) -> JobRow:
        created: dt.datetime = r["created_at"]
        return cls(
            id=str(r["id"]),
            status=Status(r["shown_status"]),
            output=r["output"] or "",
            name=r["name"],
            description=r["description"],
            command=r["command"],
            exit_code=r["exit_code"],
            attempts=r["attempts"],
            max_retries=r["max_retries"],
            timeout_seconds=r["timeout_seconds"],
            run_at_ms=ms(r["run_at"]),
            idempotency_key=r["idempotency_key"] or "",
            created_at_ms=ms(created),
            created_at_us=(created - EPOCH) // dt.timedelta(microseconds=1),
            updated_at_ms=ms(r["updated_at"]),
            started_at_ms=ms(r["started_at"]),
            finished_at_ms=ms(r["finished_at"]),
            worker_id=r["worker_id"] or "",
            last_error=r["last_error"],
            output_truncated=r["output_truncated"],
            submitted_via=r["submitted_via"],
            schedule_id=_str_or_empty(r["schedule_id"]),
            scheduled_for_ms=ms(r["scheduled_for"]),
            attempt_history=tuple(AttemptRow.from_record(a) for a in attempts),
            **routing_of(r),
        )


@dataclass(frozen=True)
class Submitted(Routing):
    """The outcome of storing one submission, with the stored job's routing (its lane in Redis)."""

    job_id: str
    inserted: bool  # False: the idempotency key named an existing job, returned instead
    status: Status  # as users see it
    due_ms: int  # when it may run (unix ms)


@dataclass(frozen=True)
class Claimed:
    """What a worker needs to run one attempt of a job."""

    job_id: str
    command: str
    timeout_seconds: float
    max_retries: int
    attempt: int
    interruptions: int  # attempts that do not count against max_retries
    lane: str = keys.PENDING  # the job's Redis list (jobcluster.keys.lane of its routing)
    concurrency_key: str = ""
    queue: str = keys.DEFAULT_QUEUE
    waited: float = 0.0  # seconds from when the job was due to this attempt's start

    @classmethod
    def from_record(cls, job_id: str, r: asyncpg.Record) -> Claimed:
        return cls(
            job_id=job_id,
            command=r["command"],
            timeout_seconds=r["timeout_seconds"],
            max_retries=r["max_retries"],
            attempt=r["attempts"],
            interruptions=r["interruptions"],
            lane=keys.lane(r["queue"], r["priority"], r["constraints"]),
            concurrency_key=r["concurrency_key"],
            queue=r["queue"],
            waited=max(0.0, r["waited"] or 0.0),
        )


@dataclass(frozen=True)
class JobState:
    """Where a job stands now, for a worker whose claim was refused."""

    status: Status  # as stored (not as shown)
    due: bool  # its not_before has passed
    due_ms: int
    wait_ms: int = 0  # how long until it is due, by PostgreSQL's clock
    queue: str = keys.DEFAULT_QUEUE
    constraints: tuple[str, ...] = ()
    lane: str = keys.PENDING  # its Redis list
    concurrency_key: str = ""


@dataclass(frozen=True)
class CancelResult:
    """The outcome of a cancel request."""

    found: bool  # False: no such job
    cancelled: bool  # True: this request cancelled it
    status: Status | None  # before the cancel when cancelled, else the job's current status
    worker_id: str  # the worker running it when it was cancelled ('' when none)


@dataclass(frozen=True)
class WaitingJob:
    """A job PostgreSQL says is waiting (QUEUED or PENDING), as reconciliation sees it."""

    job_id: str
    status: Status  # as stored
    due_ms: int
    lane: str = keys.PENDING  # its Redis list (jobcluster.keys.lane of its routing)
    changed_at: dt.datetime | None = None  # its updated_at, when the query read it

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> WaitingJob:
        return cls(
            job_id=str(r["id"]),
            status=Status(r["status"]),
            due_ms=ms(r["not_before"]),
            lane=keys.lane(r["queue"], r["priority"], r["constraints"]),
            changed_at=r.get("updated_at"),
        )


@dataclass(frozen=True)
class DeadJobRow:
    """A dead-lettered job, for the DLQ listing."""

    id: str
    name: str
    command: str
    status: Status
    attempts: int
    max_retries: int
    exit_code: int | None
    last_error: str
    finished_at_ms: int

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> DeadJobRow:
        return cls(
            id=str(r["id"]),
            name=r["name"],
            command=r["command"],
            status=Status(r["status"]),
            attempts=r["attempts"],
            max_retries=r["max_retries"],
            exit_code=r["exit_code"],
            last_error=r["last_error"],
            finished_at_ms=ms(r["finished_at"]),
        )


@dataclass(frozen=True)
class ScheduleRow(ScheduleSpec):
    """A stored cron schedule: its spec, its state, and the status of the last job it fired."""

    id: str
    enabled: bool
    next_run_at: dt.datetime
    last_job_id: str
    last_job_status: Status | None
    last_skip_reason: str
    next_run_ms: int
    last_run_ms: int
    last_skip_at_ms: int
    created_at_ms: int
    updated_at_ms: int

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> ScheduleRow:
        last_status = r.get("last_job_status")
        return cls(
            id=str(r["id"]),
            name=r["name"],
            cron=r["cron"],
            timezone=r["timezone"],
            command=r["command"],
            description=r["description"],
            max_retries=r["max_retries"],
            timeout_seconds=r["timeout_seconds"],
            catchup=r["catchup"],
            overlap=r["overlap"],
            enabled=r["enabled"],
            next_run_at=r["next_run_at"],
            last_job_id=_str_or_empty(r["last_job_id"]),
            last_job_status=Status(last_status) if last_status else None,
            last_skip_reason=r["last_skip_reason"],
            next_run_ms=ms(r["next_run_at"]),
            last_run_ms=ms(r["last_run_at"]),
            last_skip_at_ms=ms(r["last_skip_at"]),
            created_at_ms=ms(r["created_at"]),
            updated_at_ms=ms(r["updated_at"]),
            **routing_of(r),
        )
