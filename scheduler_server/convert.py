"""Between the store's job dicts and the protobuf messages."""

from __future__ import annotations

import base64
from typing import Any

from jobcluster.pb import scheduler_pb2 as pb


def job_status(job: dict[str, Any]) -> pb.JobStatus:
    """A JobStatus message (original fields in seconds, added ones in ms)."""
    msg = pb.JobStatus(
        id=job["id"],
        status=job["status"],
        output=job["output"],
        created_at=job["created_at_ms"] // 1000,
        updated_at=job["updated_at_ms"] // 1000,
        name=job["name"],
        description=job["description"],
        command=job["command"],
        attempts=job["attempts"],
        max_retries=job["max_retries"],
        timeout_seconds=job["timeout_seconds"],
        run_at_ms=job["run_at_ms"],
        idempotency_key=job["idempotency_key"],
        created_at_ms=job["created_at_ms"],
        updated_at_ms=job["updated_at_ms"],
        started_at_ms=job["started_at_ms"],
        finished_at_ms=job["finished_at_ms"],
        worker_id=job["worker_id"],
        last_error=job["last_error"],
        output_truncated=job["output_truncated"],
        submitted_via=job["submitted_via"],
    )
    if job["exit_code"] is not None:
        msg.exit_code = job["exit_code"]
    for a in job.get("attempt_history", ()):
        att = msg.attempt_history.add(
            number=a["number"], worker_id=a["worker_id"], started_at_ms=a["started_at_ms"],
            finished_at_ms=a["finished_at_ms"], error=a["error"], output_truncated=a["output_truncated"],
        )
        if a["exit_code"] is not None:
            att.exit_code = a["exit_code"]
    return msg


def encode_page_token(created_at_us: int, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at_us}:{job_id}".encode()).decode()


def decode_page_token(token: str) -> tuple[int, str]:
    """Raise ValueError when the token was not made by :func:`encode_page_token`."""
    try:
        us, job_id = base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)
        return int(us), job_id
    except Exception:
        raise ValueError("page_token is not one this server issued") from None
