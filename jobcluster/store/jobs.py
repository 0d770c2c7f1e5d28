"""The job lifecycle in PostgreSQL: submit, claim, settle (finish an attempt), cancel.

SQL in ``sql/jobs.sql``. Every state change is one guarded statement; an
attempt's writes are fenced by its number, so a late write of an older attempt
changes nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from jobcluster import keys
from jobcluster.model import JobSpec, Serving, Status, now_ms
from jobcluster.rows import CancelResult, Claimed, JobState, Submitted, ms, routing_of
from jobcluster.sqlfile import load_queries

Q = load_queries("jobs.sql")


def _uuid_or_none(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:  # not a job id (a hand-pushed entry): no lane to find
        return None


def clean_text(data: bytes) -> str:
    """Decode job output for storage: invalid UTF-8 and NUL (which PostgreSQL text refuses) become U+FFFD."""
    return data.decode("utf-8", "replace").replace("\x00", "\ufffd")


def initial_state(spec: JobSpec, now: int) -> tuple[Status, dt.datetime | None]:
    """A new job's status (PENDING while run_at is ahead of ``now`` ms) and its run_at as a timestamp."""
    if not spec.run_at_ms:
        return Status.QUEUED, None
    run_at = dt.datetime.fromtimestamp(spec.run_at_ms / 1000, dt.timezone.utc)
    return (Status.PENDING if spec.run_at_ms > now else Status.QUEUED), run_at


def _existing(r: asyncpg.Record) -> Submitted:
    return Submitted(str(r["id"]), False, Status(r["shown_status"]), ms(r["not_before"]), **routing_of(r))


class Jobs:
    """Writes of the job lifecycle."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def insert(self, spec: JobSpec, submitted_via: str) -> Submitted:
        """Store a new job; when its idempotency key names an existing job, return that one instead."""
        status, run_at = initial_state(spec, now_ms())
        row = await self.pool.fetchrow(
            Q["insert_job"],
            uuid.uuid4(),
            spec.name,
            spec.description,
            spec.command,
            status.value,
            spec.max_retries,
            spec.timeout_seconds,
            run_at,
            spec.idempotency_key or None,
            submitted_via,
            spec.queue,
            spec.priority,
            list(spec.constraints),
            spec.concurrency_key,
            spec.max_concurrency,
        )
        if row is not None:
            return Submitted(str(row["id"]), True, Status(row["status"]), ms(row["not_before"]), **routing_of(row))
        existing = await self.pool.fetchrow(Q["job_by_idempotency_key"], spec.idempotency_key)
        if existing is None:  # the job holding the key was deleted in between: try once more
            return await self.insert(spec, submitted_via)
        return _existing(existing)

    async def insert_many(self, specs: list[JobSpec], submitted_via: str) -> list[Submitted]:
        """Store several jobs in one statement (all or none); as :meth:`insert` for each, in order.

        No explicit transaction: the INSERT commits alone (one round trip, where BEGIN and COMMIT made it
        three), and a key's holder it waited on is committed by the time the second statement reads it."""
        now = now_ms()
        ids = [uuid.uuid4() for _ in specs]
        starts = [initial_state(s, now) for s in specs]
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                Q["insert_jobs"],
                ids,
                [s.name for s in specs],
                [s.description for s in specs],
                [s.command for s in specs],
                [status.value for status, _ in starts],
                [s.max_retries for s in specs],
                [s.timeout_seconds for s in specs],
                [run_at for _, run_at in starts],
                [s.idempotency_key or None for s in specs],
                list(range(len(specs))),
                submitted_via,
                [s.queue for s in specs],
                [s.priority for s in specs],
                [",".join(s.constraints) for s in specs],
                [s.concurrency_key for s in specs],
                [s.max_concurrency for s in specs],
            )
            inserted = {r["id"]: r for r in rows}
            taken = [s.idempotency_key for i, s in zip(ids, specs) if i not in inserted]
            existing = (
                {r["idempotency_key"]: r for r in await conn.fetch(Q["jobs_by_idempotency_keys"], taken)}
                if taken
                else {}
            )
        out: list[Submitted] = []
        for job_id, spec in zip(ids, specs):
            row = inserted.get(job_id)
            if row is not None:
                out.append(
                    Submitted(str(job_id), True, Status(row["status"]), ms(row["not_before"]), **routing_of(row))
                )
            elif spec.idempotency_key in existing:
                out.append(_existing(existing[spec.idempotency_key]))
            else:  # the job holding the key was deleted meanwhile
                out.append(await self.insert(spec, submitted_via))
        return out

    async def claim(
        self, job_id: str, worker_id: str, token: uuid.UUID | None = None, *, serves: Serving | None = None
    ) -> Claimed | None:
        """Start the next attempt of a job, or None when it is not claimable now: not waiting or not
        due, not for this worker (``serves``: its WORKER_QUEUES and WORKER_TAGS; None: any job), or its
        concurrency key full (limits per key from ``serves``: CONCURRENCY_LIMITS).

        Asking again with the same ``token`` (after an outage hid the answer) returns the
        attempt that claim opened, if it is still running.
        """
        queues = None if serves is None else list(serves.queues)
        tags = None if serves is None else list(serves.tags)
        limits = {} if serves is None else dict(serves.limits)
        row = await self.pool.fetchrow(
            Q["claim_job"],
            uuid.UUID(job_id),
            worker_id,
            token or uuid.uuid4(),
            queues,
            tags,
            list(limits),
            list(limits.values()),
        )
        return Claimed.from_record(job_id, row) if row is not None else None

    async def state(self, job_id: str) -> JobState | None:
        """Why a claim failed: the job's stored status, due time and routing; None when it does not exist."""
        row = await self.pool.fetchrow(Q["claim_refusal"], uuid.UUID(job_id))
        if row is None:
            return None
        return JobState(
            Status(row["status"]),
            bool(row["due"]),
            ms(row["not_before"]),
            int(row["wait_ms"]),
            queue=row["queue"],
            constraints=tuple(row["constraints"]),
            lane=keys.lane(row["queue"], row["priority"], row["constraints"]),
            concurrency_key=row["concurrency_key"],
        )

    async def routes(self, job_ids: list[str]) -> dict[str, str]:
        """Job id -> its lane (jobcluster.keys.lane), for those of these jobs that exist."""
        rows = await self.pool.fetch(Q["job_routes"], [u for u in map(_uuid_or_none, job_ids) if u is not None])
        return {str(r["id"]): keys.lane(r["queue"], r["priority"], r["constraints"]) for r in rows}

    async def finish_attempt(
        self,
        claimed: Claimed,
        next_status: Status,
        *,
        exit_code: int | None,
        error: str,
        output: str,
        output_truncated: bool,
        retry_delay_ms: int = 0,
        interrupted: bool = False,
    ) -> bool:
        """Record an attempt's end and the job's next status; False when fenced off (stale attempt).

        PENDING: the retry is due ``retry_delay_ms`` from now by PostgreSQL's clock (the one claims use)."""
        row = await self.pool.fetchrow(
            Q["finish_attempt"],
            uuid.UUID(claimed.job_id),
            claimed.attempt,
            next_status.value,
            exit_code,
            error,
            output,
            output_truncated,
            retry_delay_ms,
            1 if interrupted else 0,
        )
        return row is not None

    async def cancel(self, job_id: str, reason: str) -> CancelResult:
        """Cancel a job that has not ended; otherwise say what it is (one statement each way)."""
        key = uuid.UUID(job_id)
        row = await self.pool.fetchrow(Q["cancel_job"], key, reason)
        if row is not None:
            return CancelResult(True, True, Status(row["was"]), row["worker_id"] or "")
        status = await self.pool.fetchval(Q["job_state"], key)
        return CancelResult(status is not None, False, Status(status) if status else None, "")

    async def cancelled_among(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs are CANCELLED (a worker stops them)."""
        rows = await self.pool.fetch(Q["cancelled_among"], [uuid.UUID(i) for i in job_ids])
        return {str(r["id"]) for r in rows}

    async def close_cancelled_attempt(
        self, claimed: Claimed, exit_code: int | None, error: str, output: str, output_truncated: bool
    ) -> bool:
        """Record how the attempt of a cancelled job ended; False when it is not that job's attempt."""
        row = await self.pool.fetchrow(
            Q["close_cancelled_attempt"],
            uuid.UUID(claimed.job_id),
            claimed.attempt,
            exit_code,
            error,
            output,
            output_truncated,
        )
        return row is not None
