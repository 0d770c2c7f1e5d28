"""A worker killed with SIGKILL leaves no job process behind (its job launcher kills them), and a clean stop
leaves no launcher behind. The real programs, jobs as JOB_USER, real kills."""

from __future__ import annotations

import os
import pwd
import signal
import time

import pytest

from jobcluster import keys
from tests.e2e.conftest import Cluster, job_status, submit
from tests.helpers import launchers_of, procs_running, wait_for_sync

SLEEPS = ("4444", "4445", "4446")


def sleeps_left() -> list[tuple[int, int]]:
    return [p for n in SLEEPS for p in procs_running("sleep", n)]


def test_kill_9_of_a_worker_kills_its_jobs_and_the_jobs_still_end_in_the_dlq(
    cluster: Cluster, redis_sync, job_user: str
):
    _, address = cluster.server()
    worker = cluster.worker("e2e-orphans", "--concurrency", "2")
    lone = submit(address, command="sleep 4444", max_retries=0)
    family = submit(address, command="sleep 4445 & sleep 4446", max_retries=0)
    try:
        running = wait_for_sync(
            lambda: (lambda p: p if len(p) == 3 else None)(sleeps_left()),
            timeout=30,
            what="sleep 4444, 4445 and 4446 running",
        )
        assert {uid for _, uid in running} == {pwd.getpwnam(job_user).pw_uid}  # other user: only root can kill
        worker.signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_for_sync(
            lambda: sleeps_left() == [],
            timeout=2.0,
            interval=0.01,
            what="the killed worker's job processes to be gone (promised within 2 s)",
        )
        print(f"job processes gone {time.monotonic() - killed:.3f}s after the worker's SIGKILL")
    finally:
        for pid, _ in sleeps_left():  # only when the test failed
            os.kill(pid, signal.SIGKILL)
    # No retries: the leader's cleanup of the dead worker dead-letters both.
    wait_for_sync(
        lambda: {job_status(address, j).status for j in (lone, family)} == {"FAILED"},
        timeout=30,
        what="both jobs FAILED",
    )
    assert sorted(redis_sync.lrange(keys.DLQ, 0, -1)) == sorted([lone, family])
    assert "worker lost" in job_status(address, lone).attempt_history[0].error


def test_a_clean_stop_leaves_no_launcher(cluster: Cluster):
    worker = cluster.worker("e2e-clean")
    [launcher] = wait_for_sync(lambda: launchers_of(worker.popen.pid), timeout=30, what="the worker's launcher")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert not os.path.exists(f"/proc/{launcher}")  # ended and reaped by the worker


@pytest.mark.long("waits for an earlier worker's launcher to kill its jobs: ~5 s")
def test_a_worker_restarted_at_once_under_its_id_requeues_its_jobs_only_once_they_are_dead(
    cluster: Cluster, redis_sync
):
    """A supervisor restarts a SIGKILLed worker under the same id at once. The new process puts the
    old attempt back in the queue only after the old launcher has killed it: never two at once."""
    # A leader that would wait 60 s before calling the dead worker dead: only the restart recovers.
    _, address = cluster.server(WORKER_DEAD_AFTER="60s")
    first = cluster.worker("e2e-restart")
    job = submit(address, command="sleep 4447", max_retries=2)
    [(old_sleep, _)] = wait_for_sync(lambda: procs_running("sleep", "4447"), timeout=30, what="attempt 1 running")
    [old_launcher] = wait_for_sync(lambda: launchers_of(first.popen.pid), timeout=10, what="the worker's launcher")
    os.kill(old_launcher, signal.SIGSTOP)  # the launcher is slow to do its killing (a loaded host)
    try:
        first.signal(signal.SIGKILL)
        first.wait(10)

        def id_free() -> bool:  # the id check refuses a heartbeat newer than 3 intervals
            now_s, now_us = redis_sync.time()
            beat = redis_sync.zscore(keys.WORKERS, "e2e-restart")
            return beat is None or now_s * 1000 + now_us // 1000 - beat > 3000 * cluster.settings.heartbeat_interval

        wait_for_sync(id_free, timeout=10, what="the old heartbeat to age past the id check")
        second = cluster.worker("e2e-restart")
        held = time.monotonic()
        seen_at_once = 0
        # The old launcher is held for 3 s: all that time the old attempt lives and no new one may start.
        while time.monotonic() - held < 3.0:
            seen_at_once = max(seen_at_once, len(procs_running("sleep", "4447")))
            assert second.popen.poll() is None, second.log()
            time.sleep(0.01)
        assert seen_at_once == 1, "attempt 2 started while attempt 1 was still running"
        assert job_status(address, job).status == "RUNNING"
    finally:
        os.kill(old_launcher, signal.SIGCONT)

    # Released: the old launcher kills attempt 1 and exits; then the new worker requeues and runs attempt 2.
    def attempt_2() -> bool:
        running = procs_running("sleep", "4447")
        assert len(running) <= 1, "two attempts running at once"
        return bool(running) and running[0][0] != old_sleep

    wait_for_sync(attempt_2, timeout=30, interval=0.01, what="attempt 2 running, after attempt 1 was killed")
    assert len(job_status(address, job).attempt_history) == 2
    assert "waited" in second.log() and "for the jobs of an earlier worker e2e-restart" in second.log()


def test_a_job_that_kills_all_it_can_reach_leaves_no_sibling_beside_its_rerun(cluster: Cluster, job_user: str):
    """`kill -9 -1` as the job user reaches every job of that user on the host, its own siblings too, but
    not the worker or its launcher (root): each sibling's attempt ends killed, and its rerun starts only
    once that attempt's processes are gone; the worker lives on."""
    _, address = cluster.server()
    worker = cluster.worker("e2e-kill-all", "--concurrency", "3", RETRY_BACKOFF_BASE="0.1s")
    # Attempt 1 of each sibling sleeps until something kills it; attempt 2 says so and ends.
    siblings = [
        submit(address, command=f'[ "$JOB_ATTEMPT" = 1 ] && exec sleep {tag}; echo rerun', max_retries=1)
        for tag in ("4447", "4448")
    ]
    wait_for_sync(
        lambda: procs_running("sleep", "4447") and procs_running("sleep", "4448"), timeout=30, what="both siblings"
    )
    hostile = submit(address, command="kill -9 -1", max_retries=0)
    overlap = []

    def settled() -> bool:
        for tag, job_id in zip(("4447", "4448"), siblings):  # no rerun while attempt 1 still runs
            if procs_running("sleep", tag) and job_status(address, job_id).attempts > 1:
                overlap.append(job_id)
        return all(job_status(address, j).status == "SUCCEEDED" for j in siblings)

    wait_for_sync(settled, timeout=30, interval=0.01, what="both siblings rerun and done")
    assert overlap == []
    for job_id in siblings:
        job = job_status(address, job_id)
        assert job.attempts == 2 and job.output == "rerun\n"
        assert "killed by SIGKILL" in job.attempt_history[0].error
    assert job_status(address, hostile).status == "SUCCEEDED"  # kill(-1) spares the caller
    assert worker.popen.poll() is None and launchers_of(worker.popen.pid)  # neither was reachable
    assert procs_running("sleep", "4447") == [] and procs_running("sleep", "4448") == []
