"""A worker's decisions, as pure functions: how to settle an attempt, and what to do with an id it
could not claim. No I/O, so every branch has a fast unit test (tests/unit/test_worker_decide.py)."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from jobcluster import model
from jobcluster.model import Status
from jobcluster.rows import Claimed, JobState
from worker.shell import ShellResult


@dataclass(frozen=True)
class Settlement:
    """How an attempt that ran to its end is recorded."""

    status: Status          # SUCCEEDED; PENDING (retry after delay_ms); FAILED (dead-lettered)
    error: str              # '' on success
    delay_ms: int           # PENDING: how long the retry waits (from now, by the stores' clocks); else 0


def settle(result: ShellResult, claimed: Claimed, *, backoff_base: float, backoff_max: float,
           rng: random.Random | None = None) -> Settlement:
    """Success when the command exited 0 in time; otherwise a retry after a backoff, or FAILED
    when this was the last attempt its retries allow (interrupted attempts do not count)."""
    ok = result.exit_code == 0 and not result.timed_out
    error = result.error or ("" if ok else f"exit code {result.exit_code}")
    if ok:
        return Settlement(Status.SUCCEEDED, error, 0)
    if model.retries_exhausted(claimed.attempt, claimed.interruptions, claimed.max_retries):
        return Settlement(Status.FAILED, error, 0)
    delay = model.retry_delay(claimed.attempt - claimed.interruptions, backoff_base, backoff_max, rng)
    return Settlement(Status.PENDING, error, int(delay * 1000))


class Refusal(enum.Enum):
    """What to do with an id whose job could not be claimed."""

    DELAY = "delay"                 # waiting for its time: back to delayed_jobs until due
    DEAD_LETTER = "dead-letter"     # FAILED: make sure the id is in dlq_tasks
    DROP = "drop"                   # unknown, running elsewhere, ended or cancelled: ack it away


def fenced(attempt: int, state: tuple[str, int, str] | None, worker_id: str) -> bool:
    """Whether a running attempt lost the job: PostgreSQL's ``(status, attempts, worker_id)`` for it
    (None: the job is gone) no longer says RUNNING, this attempt, this worker. A leader that declared
    this worker dead moved the job on; the attempt must stop and record nothing. CANCELLED is not
    fencing: a cancelled attempt is stopped and recorded by the cancel path."""
    if state is None:
        return True
    status, attempts, owner = state
    if status == Status.CANCELLED.value:
        return False
    return not (status == Status.RUNNING.value and attempts == attempt and owner == worker_id)


def refuse(state: JobState | None) -> Refusal:
    """The id's fate, from the job's state as PostgreSQL has it now (None: no such job)."""
    if state is None:
        return Refusal.DROP
    if state.status in (Status.PENDING, Status.QUEUED) and not state.due:
        return Refusal.DELAY
    if state.status is Status.FAILED:
        return Refusal.DEAD_LETTER
    return Refusal.DROP
