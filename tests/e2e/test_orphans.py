"""A worker killed with SIGKILL leaves no job process behind (its reaper kills them), and a clean stop
leaves no reaper behind. The real programs, jobs as JOB_USER, real kills."""

from __future__ import annotations

import os
import pwd
import signal
import time

from jobcluster import keys
from tests.e2e.conftest import Cluster, job_status, submit
from tests.helpers import procs_running, reapers_of, wait_for_sync

SLEEPS = ("4444", "4445", "4446")


def sleeps_left() -> list[tuple[int, int]]:
    return [p for n in SLEEPS for p in procs_running("sleep", n)]


def test_kill_9_of_a_worker_kills_its_jobs_and_the_jobs_still_end_in_the_dlq(cluster: Cluster, redis_sync,
                                                                              job_user: str):
    _, address = cluster.server()
    worker = cluster.worker("e2e-orphans", "--concurrency", "2")
    lone = submit(address, command="sleep 4444", max_retries=0)
    family = submit(address, command="sleep 4445 & sleep 4446", max_retries=0)
    try:
        running = wait_for_sync(lambda: (lambda p: p if len(p) == 3 else None)(sleeps_left()), timeout=30,
                                what="sleep 4444, 4445 and 4446 running")
        assert {uid for _, uid in running} == {pwd.getpwnam(job_user).pw_uid}  # other user: only root can kill
        worker.signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_for_sync(lambda: sleeps_left() == [], timeout=2.0, interval=0.01,
                      what="the killed worker's job processes to be gone (promised within 2 s)")
        print(f"job processes gone {time.monotonic() - killed:.3f}s after the worker's SIGKILL")
    finally:
        for pid, _ in sleeps_left():  # only when the test failed
            os.kill(pid, signal.SIGKILL)
    # No retries: the leader's cleanup of the dead worker dead-letters both.
    wait_for_sync(lambda: {job_status(address, j).status for j in (lone, family)} == {"FAILED"}, timeout=30,
                  what="both jobs FAILED")
    assert sorted(redis_sync.lrange(keys.DLQ, 0, -1)) == sorted([lone, family])
    assert "worker lost" in job_status(address, lone).attempt_history[0].error


def test_a_clean_stop_leaves_no_reaper(cluster: Cluster):
    worker = cluster.worker("e2e-clean")
    [reaper] = wait_for_sync(lambda: reapers_of(worker.popen.pid), timeout=30, what="the worker's reaper")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert not os.path.exists(f"/proc/{reaper}")  # ended and reaped by the worker
