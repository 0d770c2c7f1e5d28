"""The lifecycle's decisions, as pure functions: how to settle an attempt, what to do with an id a worker
could not claim, whether a running attempt lost its job. No I/O, so every branch has a fast unit test
(tests/unit/test_worker_decide.py)."""

from __future__ import annotations

import enum
import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from jobcluster import model
from jobcluster.model import Status
from jobcluster.rows import Claimed, JobState


class Outcome(Protocol):
    """How an attempt's command ended, as the worker saw it (worker/shell.py's ShellResult is one)."""

    @property
    def exit_code(self) -> int: ...  # the shell's exit status; 128+N when killed by signal N
    @property
    def output(self) -> bytes: ...  # stdout and stderr interleaved, the tail kept
    @property
    def truncated(self) -> bool: ...  # earlier output was dropped
    @property
    def timed_out(self) -> bool: ...
    @property
    def error(self) -> str: ...  # '' when the command simply exited


@dataclass(frozen=True)
class Settlement:
    """How an attempt that ran to its end is recorded."""

    status: Status  # SUCCEEDED; PENDING (retry after delay_ms); FAILED (dead-lettered)
    error: str  # '' on success
    delay_ms: int  # PENDING: how long the retry waits (from now, by the stores' clocks); else 0


def settle(
    result: Outcome, claimed: Claimed, *, backoff_base: float, backoff_max: float, rng: random.Random | None = None
) -> Settlement:
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

    DELAY = "delay"  # waiting for its time: back to delayed_jobs until due
    REROUTE = "reroute"  # not for this worker (queue, tags): to the front of its job's lane
    KEY_FULL = "key-full"  # its concurrency key is at its limit: back off, then try again
    DEAD_LETTER = "dead-letter"  # FAILED: make sure the id is in dlq_tasks
    DROP = "drop"  # unknown, running elsewhere, ended or cancelled: ack it away


#: Backing off a job whose concurrency key is full: the first wait, doubled per refusal in a row of
#: that key on this worker, up to the last (seconds); each jittered by ±25 %.
KEY_FULL_WAIT = (0.25, 4.0)


def key_full_wait_ms(refusals: int, rng: random.Random | None = None) -> int:
    """How long a job whose concurrency key is full waits before it is tried again, after ``refusals``
    refusals in a row of its key on this worker (1 for the first): short at first, so a freed slot is
    taken soon; longer while the key stays full, so waiting jobs do not keep PostgreSQL busy."""
    first, most = KEY_FULL_WAIT
    wait = min(most, first * 2 ** max(0, refusals - 1))
    return int(wait * (rng or random).uniform(0.75, 1.25) * 1000)


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


def refuse(
    state: JobState | None, queues: Collection[str] | None = None, tags: Collection[str] | None = None
) -> Refusal:
    """The id's fate, from the job's state as PostgreSQL has it now (None: no such job), for a worker
    serving ``queues`` with ``tags`` (None: any)."""
    if state is None:
        return Refusal.DROP
    if state.status in (Status.PENDING, Status.QUEUED) and not state.due:
        return Refusal.DELAY
    if state.status in (Status.PENDING, Status.QUEUED):
        if (queues is not None and state.queue not in queues) or (
            tags is not None and not set(state.constraints) <= set(tags)
        ):
            return Refusal.REROUTE
        if state.concurrency_key:
            return Refusal.KEY_FULL
    if state.status is Status.FAILED:
        return Refusal.DEAD_LETTER
    return Refusal.DROP
