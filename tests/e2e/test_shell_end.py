"""Issue 17, item 2, with the real programs: a job ends when its shell exits, with the shell's exit code and
the output it printed, and whatever it left behind (``sleep 30 &``) is killed then (worker/shell.py)."""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Cluster, job_status, submit
from tests.helpers import procs_running, wait_for_sync

#: The shell waits until its background sleep runs (30 s and a bit), then exits at once.
JOB = (
    "echo before; sleep {tag}{redirect} & "
    "until [ \"$(tr -d '\\0' < /proc/$!/cmdline)\" = sleep{tag} ]; do :; done; echo shell-done; exit {code}"
)


@pytest.fixture
def tags() -> Iterator[list[str]]:
    """Unique ``sleep`` arguments; whatever a failed test left running is killed at the end."""
    made = [f"30.{secrets.randbelow(10**8):08d}{n}" for n in (1, 2)]
    yield made
    for tag in made:
        for pid, _ in procs_running("sleep", tag):
            os.kill(pid, signal.SIGKILL)


def test_a_job_ends_with_its_shell_on_a_real_worker(cluster: Cluster, tags: list[str]):
    _, address = cluster.server()
    cluster.worker("e2e-shell-end")
    # The recipe: with a 3 s timeout these ended FAILED "timed out after 3s" with exit code 0.
    kept, redirected = (
        submit(address, command=JOB.format(tag=tag, redirect=redirect, code=code), timeout_seconds=3, max_retries=0)
        for tag, redirect, code in ((tags[0], "", 0), (tags[1], " > /dev/null 2>&1", 3))
    )
    wait_for_sync(
        lambda: {job_status(address, j).status for j in (kept, redirected)} <= {"SUCCEEDED", "FAILED"},
        timeout=30,
        what="both jobs ended",
    )
    ok, failed = job_status(address, kept), job_status(address, redirected)
    assert (ok.status, ok.exit_code, ok.last_error, ok.output) == ("SUCCEEDED", 0, "", "before\nshell-done\n")
    assert (failed.status, failed.exit_code, failed.last_error, failed.output) == (
        "FAILED",
        3,
        "exit code 3",
        "before\nshell-done\n",
    )
    for job in (ok, failed):
        [attempt] = job.attempt_history
        took = attempt.finished_at_ms - attempt.started_at_ms
        print(f"attempt of {job.id}: {took} ms")
        assert took < 2500, f"the attempt lasted {took} ms: longer than its shell"
    wait_for_sync(
        lambda: not any(procs_running("sleep", tag) for tag in tags), timeout=5, interval=0.01, what="no sleep left"
    )
