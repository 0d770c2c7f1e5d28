"""Every branch of the lifecycle's settle, refuse and fence decisions (jobcluster/lifecycle/decide.py), without I/O."""

import random

import pytest

from jobcluster.lifecycle.decide import Refusal, Settlement, fenced, refuse, settle
from jobcluster.model import Status
from jobcluster.rows import Claimed, JobState
from worker.shell import ShellResult

NOW = 1_700_000_000_000


def _claimed(attempt: int = 1, max_retries: int = 3, interruptions: int = 0) -> Claimed:
    return Claimed(
        job_id="j",
        command="true",
        timeout_seconds=10.0,
        max_retries=max_retries,
        attempt=attempt,
        interruptions=interruptions,
    )


def _result(exit_code: int = 0, timed_out: bool = False, error: str = "") -> ShellResult:
    return ShellResult(exit_code=exit_code, output=b"", truncated=False, timed_out=timed_out, error=error)


def _settle(result: ShellResult, claimed: Claimed, seed: int = 1) -> Settlement:
    return settle(result, claimed, backoff_base=1.0, backoff_max=300.0, rng=random.Random(seed))


def test_exit_zero_in_time_succeeds():
    assert _settle(_result(0), _claimed()) == Settlement(Status.SUCCEEDED, "", 0)


def test_a_failure_with_retries_left_backs_off_within_the_jittered_window():
    s = _settle(_result(3), _claimed(attempt=2))
    assert s.status is Status.PENDING and s.error == "exit code 3"
    # attempt 2: nominal 2 s, jittered over [1 s, 2 s]
    assert 1000 <= s.delay_ms <= 2000


def test_the_last_allowed_attempt_fails_for_good():
    assert _settle(_result(1), _claimed(attempt=4, max_retries=3)) == Settlement(Status.FAILED, "exit code 1", 0)


def test_max_retries_zero_fails_on_the_first_failure():
    assert _settle(_result(1), _claimed(attempt=1, max_retries=0)).status is Status.FAILED


def test_interrupted_attempts_do_not_use_up_retries():
    # 4 attempts, 2 of them cut short by shutdowns: only 2 count, so 1 retry is left of max_retries 2.
    s = _settle(_result(1), _claimed(attempt=4, max_retries=2, interruptions=2))
    assert s.status is Status.PENDING
    # and the backoff counts only the attempts that failed: the 2nd failure waits 1-2 s, not 4-8 s.
    assert 1000 <= s.delay_ms <= 2000


def test_a_timeout_is_a_failure_even_with_exit_code_zero_and_keeps_its_error():
    s = _settle(_result(0, timed_out=True, error="timed out after 1s"), _claimed())
    assert s.status is Status.PENDING and s.error == "timed out after 1s"


def test_the_runner_error_wins_over_the_exit_code():
    s = _settle(_result(127, error="could not start"), _claimed(max_retries=0))
    assert s == Settlement(Status.FAILED, "could not start", 0)


def test_backoff_is_capped():
    s = settle(
        _result(1), _claimed(attempt=30, max_retries=100), backoff_base=1.0, backoff_max=60.0, rng=random.Random(5)
    )
    assert 30_000 <= s.delay_ms <= 60_000


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (None, Refusal.DROP),  # unknown id
        (JobState(Status.PENDING, due=False, due_ms=NOW + 5000), Refusal.DELAY),  # backing off
        (JobState(Status.QUEUED, due=False, due_ms=NOW + 5000), Refusal.DELAY),  # run_at ahead
        (JobState(Status.PENDING, due=True, due_ms=NOW), Refusal.DROP),  # due: claimed by someone else meanwhile
        (JobState(Status.QUEUED, due=True, due_ms=NOW), Refusal.DROP),
        (JobState(Status.RUNNING, due=True, due_ms=NOW), Refusal.DROP),  # a duplicate id; another worker runs it
        (JobState(Status.SUCCEEDED, due=True, due_ms=NOW), Refusal.DROP),
        (JobState(Status.CANCELLED, due=True, due_ms=NOW), Refusal.DROP),
        (JobState(Status.FAILED, due=True, due_ms=NOW), Refusal.DEAD_LETTER),
    ],
)
def test_refuse(state, expected):
    assert refuse(state) is expected


# --- fenced: a running attempt whose job moved on (its worker was declared dead) ---------------


@pytest.mark.parametrize(
    ("state", "is_fenced"),
    [
        (("RUNNING", 3, "w1"), False),  # still ours
        (("RUNNING", 4, "w2"), True),  # the leader requeued it and another worker reran it
        (("RUNNING", 4, "w1"), True),  # rerun by this same worker, in another slot
        (("QUEUED", 3, None), True),  # requeued, not yet taken
        (("FAILED", 3, None), True),  # requeued as its last retry: dead-lettered
        (("SUCCEEDED", 4, "w2"), True),  # the rerun already finished
        (("CANCELLED", 3, "w1"), False),  # cancelled: the cancel path stops and records it
        (None, True),  # the job is gone
    ],
)
def test_an_attempt_is_fenced_when_the_job_is_no_longer_its_own(state, is_fenced):
    assert fenced(3, state, "w1") is is_fenced
