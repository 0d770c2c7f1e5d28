"""Between the store's typed rows and the protobuf messages: the only place statuses become strings."""

from __future__ import annotations

import base64
import time
import uuid

from jobcluster.election import LeaderInfo
from jobcluster.model import MAX_TIME_MS
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.rows import DeadJobRow, JobRow, ScheduleRow
from jobcluster.wording import plural
from scheduler_server.waiting import is_alive, worker_queues, worker_tags


def job_status(job: JobRow, waiting_reason: str = "") -> pb.JobStatus:
    """A JobStatus message (original fields in seconds, added ones in ms)."""
    msg = pb.JobStatus(
        id=job.id,
        status=job.status.value,
        output=job.output,
        created_at=job.created_at_ms // 1000,
        updated_at=job.updated_at_ms // 1000,
        name=job.name,
        description=job.description,
        command=job.command,
        attempts=job.attempts,
        max_retries=job.max_retries,
        timeout_seconds=job.timeout_seconds,
        run_at_ms=job.run_at_ms,
        idempotency_key=job.idempotency_key,
        created_at_ms=job.created_at_ms,
        updated_at_ms=job.updated_at_ms,
        started_at_ms=job.started_at_ms,
        finished_at_ms=job.finished_at_ms,
        worker_id=job.worker_id,
        last_error=job.last_error,
        output_truncated=job.output_truncated,
        submitted_via=job.submitted_via,
        schedule_id=job.schedule_id,
        scheduled_for_ms=job.scheduled_for_ms,
        waiting_reason=waiting_reason,
        **job.routing(),
    )
    if job.exit_code is not None:
        msg.exit_code = job.exit_code
    for a in job.attempt_history:
        att = msg.attempt_history.add(
            number=a.number,
            worker_id=a.worker_id,
            started_at_ms=a.started_at_ms,
            finished_at_ms=a.finished_at_ms,
            error=a.error,
            output_truncated=a.output_truncated,
        )
        if a.exit_code is not None:
            att.exit_code = a.exit_code
    return msg


def encode_page_token(created_at_us: int, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at_us}:{job_id}".encode()).decode()


def decode_page_token(token: str) -> tuple[int, str]:
    """Raise ValueError when the token was not made by :func:`encode_page_token`."""
    try:
        if len(token) > 200:
            raise ValueError("too long")
        us, job_id = base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)
        created_us = int(us)
        if not 0 <= created_us <= MAX_TIME_MS * 1000:
            raise ValueError("time out of range")
        return created_us, str(uuid.UUID(job_id))
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors too
        raise ValueError("page_token is not one this server issued") from None


def schedule_msg(s: ScheduleRow) -> pb.Schedule:
    return pb.Schedule(
        id=s.id,
        name=s.name,
        cron=s.cron,
        timezone=s.timezone,
        command=s.command,
        description=s.description,
        max_retries=s.max_retries,
        timeout_seconds=s.timeout_seconds,
        catchup=s.catchup,
        overlap=s.overlap,
        enabled=s.enabled,
        next_run_ms=s.next_run_ms,
        last_run_ms=s.last_run_ms,
        last_job_id=s.last_job_id,
        last_job_status=s.last_job_status.value if s.last_job_status else "",
        last_skip_ms=s.last_skip_at_ms,
        last_skip_reason=s.last_skip_reason,
        created_at_ms=s.created_at_ms,
        updated_at_ms=s.updated_at_ms,
        **s.routing(),
    )


def dead_letter_reason(r: DeadJobRow) -> str:
    """Why a job was dead-lettered, in a few words."""
    if r.last_error.startswith("worker lost"):
        return "worker lost on its last attempt"
    if r.last_error.startswith("timed out"):
        return "timed out on its last attempt"
    return f"retries used up ({plural(r.attempts, 'attempt')}, max_retries {r.max_retries})"


def dead_letters(ids: list[str], rows: dict[str, DeadJobRow], max_bytes: int) -> pb.DeadLetters:
    """The DLQ listing: these ids in ``dlq_tasks`` order, each with its job when PostgreSQL has it,
    as many as fit in about ``max_bytes`` (always at least one)."""
    out = pb.DeadLetters()
    size = 0
    for job_id in ids:
        r = rows.get(job_id)
        if r is None:
            dl = pb.DeadLetter(id=job_id, reason="no such job in PostgreSQL")
        else:
            dl = pb.DeadLetter(
                id=job_id,
                name=r.name,
                command=r.command,
                attempts=r.attempts,
                max_retries=r.max_retries,
                reason=dead_letter_reason(r),
                last_error=r.last_error,
                finished_at_ms=r.finished_at_ms,
                status=r.status.value,
            )
            if r.exit_code is not None:
                dl.exit_code = r.exit_code
        size += dl.ByteSize() + 4  # the field's tag and length
        if out.dead_letters and size > max_bytes:
            break
        out.dead_letters.append(dl)
    return out


def _int(info: dict[str, str], key: str) -> int:
    try:
        return int(float(info.get(key, 0) or 0))
    except ValueError:
        return 0


def cluster_info(
    *,
    leader: LeaderInfo | None,
    election: str,
    servers: dict[str, tuple[int, dict[str, str]]],
    workers: dict[str, dict[str, str]],
    depths: dict[str, int],
    dead_after_ms: int,
    answered_by: str,
    gone: dict[str, dict[str, str]] | None = None,
) -> pb.ClusterInfo:
    now = int(time.time() * 1000)
    msg = pb.ClusterInfo(
        election=election,
        answered_by=answered_by,
        pending=depths["pending"],
        processing=depths["processing"],
        delayed=depths["delayed"],
        dlq=depths["dlq"],
    )
    if leader is not None:
        msg.leader, msg.leader_since_ms, msg.leader_term = leader.address, leader.since_ms, leader.token
    for address, (beat, info) in sorted(servers.items()):
        msg.servers.add(
            address=address,
            last_heartbeat_ms=beat,
            pid=_int(info, "pid"),
            host=info.get("host", ""),
            leader=leader is not None and leader.address == address,
        )
    for worker_id, info in sorted(workers.items()):
        beat = _int(info, "heartbeat_ms")
        msg.workers.add(
            id=worker_id,
            last_heartbeat_ms=beat,
            pid=_int(info, "pid"),
            host=info.get("host", ""),
            slots=_int(info, "slots"),
            running=_int(info, "running"),
            jobs_done=_int(info, "jobs_done"),
            alive=is_alive(beat, now, dead_after_ms),
            queues=worker_queues(info),
            tags=worker_tags(info),
        )
    for worker_id, info in (gone or {}).items():  # declared dead by the leader: listed an hour, unless back
        if worker_id in workers:
            continue
        msg.workers.add(
            id=worker_id,
            last_heartbeat_ms=_int(info, "last_beat_ms"),
            pid=_int(info, "pid"),
            host=info.get("host", ""),
            slots=_int(info, "slots"),
            jobs_done=_int(info, "jobs_done"),
            alive=False,
            queues=worker_queues(info),
            tags=worker_tags(info),
            gone_ms=_int(info, "gone_ms"),
            gone_reason=info.get("gone_reason", ""),
        )
    return msg
