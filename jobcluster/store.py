"""The PostgreSQL record of every job (asyncpg). SQL lives in ``sql/queries.sql``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from jobcluster.model import JobSpec, Status
from jobcluster.settings import Settings
from jobcluster.sqlfile import load_queries, migrations

log = logging.getLogger(__name__)

Q = load_queries()

#: Errors that mean "PostgreSQL is not there right now", as opposed to a bug.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MIGRATION_LOCK = zlib.crc32(b"jobcluster.migrate")
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 15.0


class Fenced(RuntimeError):
    """A leader write refused because a newer leader term has begun."""


@dataclass(frozen=True)
class Claimed:
    """What a worker needs to run one attempt of a job."""

    job_id: str
    command: str
    timeout_seconds: float
    max_retries: int
    attempt: int
    interruptions: int


def _ms(value: dt.datetime | None) -> int:
    return int(value.timestamp() * 1000) if value else 0


def clean_text(data: bytes) -> str:
    """Decode job output for storage: invalid UTF-8 and NUL (which PostgreSQL text refuses) become U+FFFD."""
    return data.decode("utf-8", "replace").replace("\x00", "\ufffd")


class Store:
    """Job storage on an asyncpg pool; each method is one statement."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, settings: Settings, *, migrate: bool = True) -> "Store":
        """Open the pool (creating the database if it does not exist) and migrate the schema."""
        dsn = settings.database_url
        try:
            await _probe(dsn)
        except asyncpg.InvalidCatalogNameError:
            await _create_database(dsn)
        pool = await asyncpg.create_pool(
            dsn,
            min_size=settings.pg_min_conns,
            max_size=settings.pg_max_conns,
            # asyncpg has no maximum connection age; the closest is closing idle ones.
            max_inactive_connection_lifetime=settings.pg_max_conn_lifetime,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
        )
        store = cls(pool)
        if migrate:
            await store.migrate()
        return store

    async def close(self) -> None:
        await self.pool.close()

    async def migrate(self) -> list[str]:
        """Apply the migrations not yet applied; safe when several processes start at once."""
        applied: list[str] = []
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, sql in migrations():
                if version in done:
                    continue
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                applied.append(version)
        if applied:
            log.info("schema migrated: %s", ", ".join(applied))
        return applied

    # --- submit -------------------------------------------------------------

    async def insert_jobs(self, specs: list[JobSpec], submitted_via: str) -> list[tuple[str, bool, Status, int]]:
        """Store several jobs in one statement (all or none); as :meth:`insert_job` for each, in order."""
        now = _now_ms()
        ids = [uuid.uuid4() for _ in specs]
        starts = [_initial(s, now) for s in specs]
        statuses = [status.value for status, _ in starts]
        run_ats = [run_at for _, run_at in starts]
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                Q["insert_jobs"], ids, [s.name for s in specs], [s.description for s in specs],
                [s.command for s in specs], statuses, [s.max_retries for s in specs],
                [s.timeout_seconds for s in specs], run_ats, [s.idempotency_key or None for s in specs],
                list(range(len(specs))), submitted_via)
            inserted = {r["id"]: r for r in rows}
            taken = [s.idempotency_key for i, s in zip(ids, specs) if i not in inserted]
            existing = {r["idempotency_key"]: r for r in
                        await conn.fetch(Q["jobs_by_idempotency_keys"], taken)} if taken else {}
        out: list[tuple[str, bool, Status, int]] = []
        for job_id, spec in zip(ids, specs):
            row = inserted.get(job_id)
            if row is not None:
                out.append((str(job_id), True, Status(row["status"]), _ms(row["not_before"])))
                continue
            old = existing.get(spec.idempotency_key)
            if old is None:  # the job holding the key was deleted meanwhile
                out.append(await self.insert_job(spec, submitted_via))
                continue
            shown = Status.QUEUED if old["status"] == "PENDING" and old["due"] else Status(old["status"])
            out.append((str(old["id"]), False, shown, _ms(old["not_before"])))
        return out

    async def insert_job(self, spec: JobSpec, submitted_via: str,
                         conn: asyncpg.Connection | None = None) -> tuple[str, bool, Status, int]:
        """Store a new job. Returns ``(id, inserted, status, due_ms)``.

        When the idempotency key names an existing job, nothing is inserted and
        that job's id comes back with ``inserted`` False.
        """
        status, run_at = _initial(spec, _now_ms())
        job_id = uuid.uuid4()
        db = conn or self.pool
        row = await db.fetchrow(
            Q["insert_job"], job_id, spec.name, spec.description, spec.command, status.value,
            spec.max_retries, spec.timeout_seconds, run_at, spec.idempotency_key or None, submitted_via,
        )
        if row is not None:
            return str(row["id"]), True, Status(row["status"]), _ms(row["not_before"])
        existing = await db.fetchrow(Q["job_by_idempotency_key"], spec.idempotency_key)
        if existing is None:  # the other job was deleted in between; try once more
            return await self.insert_job(spec, submitted_via, conn=conn)
        shown = Status.QUEUED if existing["status"] == "PENDING" and existing["due"] else Status(existing["status"])
        return str(existing["id"]), False, shown, _ms(existing["not_before"])

    # --- worker side --------------------------------------------------------

    async def claim(self, job_id: str, worker_id: str) -> Claimed | None:
        """Start the next attempt of a job, or None when it is not claimable now."""
        row = await self.pool.fetchrow(Q["claim_job"], uuid.UUID(job_id), worker_id)
        if row is None:
            return None
        return Claimed(
            job_id=job_id,
            command=row["command"],
            timeout_seconds=row["timeout_seconds"],
            max_retries=row["max_retries"],
            attempt=row["attempts"],
            interruptions=row["interruptions"],
        )

    async def claim_refusal(self, job_id: str) -> tuple[Status, bool, int] | None:
        """Why a claim failed: ``(status, due, due_ms)``, or None when the job does not exist."""
        row = await self.pool.fetchrow(Q["claim_refusal"], uuid.UUID(job_id))
        if row is None:
            return None
        return Status(row["status"]), bool(row["due"]), _ms(row["not_before"])

    async def finish_attempt(
        self,
        claimed: Claimed,
        next_status: Status,
        *,
        exit_code: int | None,
        error: str,
        output: str,
        output_truncated: bool,
        retry_at_ms: int = 0,
        interrupted: bool = False,
    ) -> bool:
        """Record an attempt's end and the job's next status; False when fenced off (stale attempt)."""
        row = await self.pool.fetchrow(
            Q["finish_attempt"], uuid.UUID(claimed.job_id), claimed.attempt, next_status.value,
            exit_code, error, output, output_truncated, retry_at_ms, 1 if interrupted else 0,
        )
        return row is not None

    async def recover_worker_jobs(self, worker_ids: list[str], reason: str,
                                  conn: asyncpg.Connection | None = None) -> list[tuple[str, Status]]:
        """Jobs RUNNING on these workers go back (QUEUED) or, retries used up, to FAILED."""
        rows = await (conn or self.pool).fetch(Q["recover_worker_jobs"], worker_ids, reason)
        return [(str(r["id"]), Status(r["status"])) for r in rows]

    # --- cron schedules -----------------------------------------------------------

    async def upsert_schedule(self, sch: dict[str, Any], next_run: dt.datetime) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            Q["upsert_schedule"], uuid.uuid4(), sch["name"], sch["cron"], sch["timezone"], sch["command"],
            sch["description"], sch["max_retries"], sch["timeout_seconds"], sch["catchup"], sch["overlap"],
            next_run)
        return _schedule_dict(row)

    async def list_schedules(self) -> list[dict[str, Any]]:
        return [_schedule_dict(r) for r in await self.pool.fetch(Q["list_schedules"])]

    async def get_schedule(self, name_or_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(Q["get_schedule"], name_or_id)
        return _schedule_dict(row) if row else None

    async def delete_schedule(self, name_or_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(Q["delete_schedule"], name_or_id)
        return _schedule_dict(row) if row else None

    async def set_schedule_enabled(self, name_or_id: str, enabled: bool,
                                   next_run: dt.datetime) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(Q["set_schedule_enabled"], name_or_id, enabled, next_run)
        return _schedule_dict(row) if row else None

    async def due_schedules(self, now: dt.datetime, limit: int = 100) -> list[dict[str, Any]]:
        return [_schedule_dict(r) for r in await self.pool.fetch(Q["due_schedules"], now, limit)]

    async def schedule_busy(self, conn: asyncpg.Connection, schedule_id: str) -> bool:
        return bool(await conn.fetchval(Q["schedule_busy"], uuid.UUID(schedule_id)))

    async def insert_cron_job(self, conn: asyncpg.Connection | None, sch: dict[str, Any],
                              tick: dt.datetime | None, submitted_via: str, key: str) -> str | None:
        """The job of one tick (``tick`` None: a manual run). None when that tick already has its job."""
        row = await (conn or self.pool).fetchrow(
            Q["insert_cron_job"], uuid.uuid4(), sch["name"], sch["description"], sch["command"],
            sch["max_retries"], sch["timeout_seconds"], key, submitted_via, uuid.UUID(sch["id"]), tick)
        return str(row["id"]) if row else None

    async def advance_schedule(self, conn: asyncpg.Connection, schedule_id: str, seen_next: dt.datetime,
                               next_run: dt.datetime, last_run: dt.datetime | None, last_job_id: str | None,
                               skip_reason: str) -> bool:
        status = await conn.execute(Q["advance_schedule"], uuid.UUID(schedule_id), seen_next, next_run,
                                    last_run, uuid.UUID(last_job_id) if last_job_id else None, skip_reason)
        return status.endswith(" 1")

    # --- leader -----------------------------------------------------------------

    async def take_fence(self, token: int, holder: str) -> bool:
        """Record a new leader term; False when PostgreSQL already saw a newer one."""
        return await self.pool.fetchval(Q["take_fence"], token, holder) is not None

    @contextlib.asynccontextmanager
    async def fenced(self, token: int) -> AsyncIterator[asyncpg.Connection]:
        """A transaction that commits only if ``token`` is still the newest leader term.

        The fence row is share-locked, so a new leader's :meth:`take_fence` waits
        for this transaction, and every later fenced transaction of the old term
        raises :class:`Fenced`.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(Q["check_fence"])
            if row["token"] != token:
                raise Fenced(f"leader term {token} is over: term {row['token']} ({row['holder']}) leads")
            yield conn

    async def running_workers(self) -> dict[str, int]:
        """Worker id -> start (unix ms) of its oldest RUNNING job, per PostgreSQL."""
        return {r["worker_id"]: _ms(r["since"]) for r in await self.pool.fetch(Q["running_workers"])}

    async def waiting_jobs(self, unchanged_for: float, limit: int) -> list[tuple[str, Status, int]]:
        """QUEUED/PENDING jobs unchanged for ``unchanged_for`` seconds: (id, status, not_before ms)."""
        rows = await self.pool.fetch(Q["waiting_jobs"], unchanged_for, limit)
        return [(str(r["id"]), Status(r["status"]), _ms(r["not_before"])) for r in rows]

    async def still_waiting(self, ids: list[str]) -> list[tuple[str, Status, int]]:
        rows = await self.pool.fetch(Q["still_waiting"], [uuid.UUID(i) for i in ids])
        return [(str(r["id"]), Status(r["status"]), _ms(r["not_before"])) for r in rows]

    # --- reading --------------------------------------------------------------

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        """One job with its latest output and its attempts, or None."""
        try:
            key = uuid.UUID(job_id)
        except ValueError:
            return None
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q["get_job"], key)
            if row is None:
                return None
            attempts = await conn.fetch(Q["get_attempts"], key)
        job = _job_dict(row)
        job["attempt_history"] = [
            {
                "number": a["attempt"],
                "worker_id": a["worker_id"],
                "started_at_ms": _ms(a["started_at"]),
                "finished_at_ms": _ms(a["finished_at"]),
                "exit_code": a["exit_code"],
                "error": a["error"],
                "output_truncated": a["output_truncated"],
            }
            for a in attempts
        ]
        return job

    async def list_jobs(
        self,
        *,
        status: str | None,
        ids: list[str] | None,
        after: tuple[int, str] | None,
        limit: int,
        include_output: bool,
        text: str | None = None,
        schedule: str | None = None,
        since_ms: int = 0,
        until_ms: int = 0,
    ) -> list[dict[str, Any]]:
        """Jobs newest first, after the keyset cursor ``(created_at_us, id)``, filtered."""
        uuids = [uuid.UUID(i) for i in ids] if ids else None
        created = id_ = None
        if after is not None:
            created = _EPOCH + dt.timedelta(microseconds=after[0])
            id_ = uuid.UUID(after[1])
        def at(ms: int) -> dt.datetime | None:
            return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc) if ms else None
        rows = await self.pool.fetch(Q["list_jobs"], status, uuids, created, id_, limit, include_output,
                                     text or None, schedule or None, at(since_ms), at(until_ms))
        return [_job_dict(r) for r in rows]

    async def status_counts(self) -> dict[str, int]:
        return {r["status"]: r["n"] for r in await self.pool.fetch(Q["status_counts"])}

    # --- job control ------------------------------------------------------------

    async def cancel_job(self, job_id: str, reason: str) -> tuple[str, str | None, int] | str | None:
        """Cancel: ``(status before, worker, attempt)``; else the current status (str), or None if unknown."""
        key = uuid.UUID(job_id)
        row = await self.pool.fetchrow(Q["cancel_job"], key, reason)
        if row is not None:
            return row["was"], row["worker_id"], row["attempts"]
        return await self.pool.fetchval(Q["job_state"], key)

    async def cancelled_among(self, job_ids: list[str]) -> set[str]:
        rows = await self.pool.fetch(Q["cancelled_among"], [uuid.UUID(i) for i in job_ids])
        return {str(r["id"]) for r in rows}

    async def close_cancelled_attempt(self, claimed: Claimed, exit_code: int, error: str, output: str,
                                      output_truncated: bool) -> bool:
        row = await self.pool.fetchrow(Q["close_cancelled_attempt"], uuid.UUID(claimed.job_id), claimed.attempt,
                                       exit_code, error, output, output_truncated)
        return row is not None

    async def dead_jobs(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        rows = await self.pool.fetch(Q["dead_jobs"], [uuid.UUID(i) for i in job_ids])
        return {str(r["id"]): {**dict(r), "id": str(r["id"]), "finished_at_ms": _ms(r["finished_at"])}
                for r in rows}

    async def retry_dead_jobs(self, job_ids: list[str]) -> list[str]:
        rows = await self.pool.fetch(Q["retry_dead_jobs"], [uuid.UUID(i) for i in job_ids])
        return [str(r["id"]) for r in rows]


def _initial(spec: JobSpec, now_ms: int) -> tuple[Status, dt.datetime | None]:
    """A new job's status (PENDING when run_at is still ahead) and its run_at as a timestamp."""
    if not spec.run_at_ms:
        return Status.QUEUED, None
    run_at = dt.datetime.fromtimestamp(spec.run_at_ms / 1000, dt.timezone.utc)
    return (Status.PENDING if spec.run_at_ms > now_ms else Status.QUEUED), run_at


def _job_dict(row: asyncpg.Record) -> dict[str, Any]:
    status = row["status"]
    if status == "PENDING" and row["not_before"] <= dt.datetime.now(dt.timezone.utc):
        status = "QUEUED"  # due: promoted to pending_jobs or about to be
    created: dt.datetime = row["created_at"]
    return {
        "id": str(row["id"]),
        "status": status,
        "output": row["output"] or "",
        "name": row["name"],
        "description": row["description"],
        "command": row["command"],
        "exit_code": row["exit_code"],
        "attempts": row["attempts"],
        "max_retries": row["max_retries"],
        "timeout_seconds": row["timeout_seconds"],
        "run_at_ms": _ms(row["run_at"]),
        "idempotency_key": row["idempotency_key"] or "",
        "created_at_ms": _ms(created),
        "created_at_us": (created - _EPOCH) // dt.timedelta(microseconds=1),
        "updated_at_ms": _ms(row["updated_at"]),
        "started_at_ms": _ms(row["started_at"]),
        "finished_at_ms": _ms(row["finished_at"]),
        "worker_id": row["worker_id"] or "",
        "last_error": row["last_error"],
        "output_truncated": row["output_truncated"],
        "submitted_via": row["submitted_via"],
        "schedule_id": str(row["schedule_id"]) if row.get("schedule_id") else "",
        "scheduled_for_ms": _ms(row.get("scheduled_for")),
    }


def _schedule_dict(row: asyncpg.Record) -> dict[str, Any]:
    d = dict(row)
    out = {k: d[k] for k in ("name", "cron", "timezone", "command", "description", "max_retries",
                              "timeout_seconds", "catchup", "overlap", "enabled", "last_skip_reason")}
    out["id"] = str(d["id"])
    out["last_job_id"] = str(d["last_job_id"]) if d.get("last_job_id") else ""
    out["last_job_status"] = d.get("last_job_status") or ""
    for column, key in (("next_run_at", "next_run_ms"), ("last_run_at", "last_run_ms"),
                        ("last_skip_at", "last_skip_at_ms"), ("created_at", "created_at_ms"),
                        ("updated_at", "updated_at_ms")):
        out[key] = _ms(d.get(column))
    out["next_run_at"] = d["next_run_at"]
    return out


def _now_ms() -> int:
    return int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)


async def _probe(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    await conn.close()


async def _create_database(dsn: str) -> None:
    """Create the database DATABASE_URL names, connecting to ``postgres`` to do it."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin, timeout=CONNECT_TIMEOUT)
    try:
        await conn.execute(f'CREATE DATABASE "{name.replace(chr(34), "")}"')
        log.info("created database %s", name)
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):  # another process won the race
        pass
    finally:
        await conn.close()
