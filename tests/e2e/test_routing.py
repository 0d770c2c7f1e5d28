"""Queues, priorities, tags and concurrency keys (issue 10), with the real server and workers.

- a ``gpu`` job waits QUEUED until a worker with the ``gpu`` tag starts, then runs there;
- with one busy slot, a priority-9 job submitted after 50 priority-0 jobs starts next;
- a concurrency key of 2 never has 3 jobs running, including across a worker's kill -9;
- 1,000 slow jobs on queue ``slow`` do not delay a ``default`` job for a worker with
  WORKER_QUEUES=default,slow.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import grpc
import pytest

from jobcluster import keys
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from tests.e2e.conftest import Cluster, job_status, submit
from tests.helpers import procs_running, wait_for_sync


def submit_batch(address: str, jobs: list[pb.Job]) -> list[str]:
    with grpc.insecure_channel(address) as channel:
        reply = pb_grpc.JobServiceStub(channel).SubmitJobs(pb.JobBatch(jobs=jobs), timeout=60)
    return [j.job_id for j in reply.jobs]


def statuses(address: str, ids: list[str]) -> dict[str, pb.JobStatus]:
    """The jobs as ListJobs shows them (one call; no attempt history)."""
    with grpc.insecure_channel(address) as channel:
        page = pb_grpc.JobServiceStub(channel).ListJobs(pb.ListJobsRequest(ids=ids, page_size=1000), timeout=10)
    return {j.id: j for j in page.jobs}


def all_succeeded(address: str, ids: list[str]) -> bool:
    done = statuses(address, ids)
    return len(done) == len(ids) and all(s.status == "SUCCEEDED" for s in done.values())


def test_a_gpu_job_waits_queued_until_a_gpu_worker_starts(cluster: Cluster, redis_sync):
    _, address = cluster.server()
    cluster.worker("e2e-plain")  # no tags
    gpu_job = submit(address, command="echo on the gpu", constraints=["gpu"])
    plain = submit(address, command="echo plain")
    # The plain worker is taking work (it ran the job submitted after the gpu one) and left the gpu job.
    wait_for_sync(lambda: job_status(address, plain).status == "SUCCEEDED", timeout=30, what="plain job ran")
    status = job_status(address, gpu_job)
    assert status.status == "QUEUED", status
    assert redis_sync.lrange(keys.lane("default", 0, ("gpu",)), 0, -1) == [gpu_job]
    cluster.worker("e2e-gpu", WORKER_TAGS="gpu,region=eu")
    wait_for_sync(lambda: job_status(address, gpu_job).status == "SUCCEEDED", timeout=30, what="gpu job ran")
    done = job_status(address, gpu_job)
    assert (done.worker_id, done.output) == ("e2e-gpu", "on the gpu\n")


def test_a_priority_9_job_submitted_after_50_priority_0_jobs_starts_next(cluster: Cluster):
    gate = f"/tmp/jobcluster-gate-{uuid.uuid4().hex}"  # /tmp: the job user can see it
    _, address = cluster.server()
    cluster.worker("e2e-one-slot", "--concurrency", "1")
    busy = submit(address, command=f"while [ ! -e {gate} ]; do sleep 0.02; done")
    try:
        wait_for_sync(lambda: job_status(address, busy).status == "RUNNING", timeout=30, what="the slot busy")
        low = submit_batch(address, [pb.Job(command="true") for _ in range(50)])
        [high] = submit_batch(address, [pb.Job(command="true", priority=9)])
    finally:
        open(gate, "w").close()
    try:
        ids = [busy, high, *low]
        wait_for_sync(lambda: all_succeeded(address, ids), timeout=30, what="all 52 jobs done")
    finally:
        os.unlink(gate)
    done = statuses(address, ids)
    first_low = min(done[i].started_at_ms for i in low)
    assert done[busy].finished_at_ms <= done[high].started_at_ms < first_low, (
        "the priority-9 job did not start next after the busy slot freed"
    )
    order = sorted(low, key=lambda i: (done[i].started_at_ms, done[i].created_at_ms))
    assert [done[i].created_at_ms for i in order] == sorted(done[i].created_at_ms for i in low)  # FIFO within


@pytest.mark.long("waits for WORKER_DEAD_AFTER after a kill: ~8 s")
def test_a_concurrency_key_of_2_never_has_3_running_even_across_a_worker_kill(cluster: Cluster):
    _, address = cluster.server()
    workers = {f"e2e-key-{n}": cluster.worker(f"e2e-key-{n}", "--concurrency", "3") for n in range(2)}
    jobs = [pb.Job(command="sleep 1.61", concurrency_key="db", max_concurrency=2, max_retries=3) for _ in range(6)]
    ids = submit_batch(address, jobs)
    most, victim = 0, ""
    deadline = time.monotonic() + 60
    looked = 0.0
    while True:
        running = len(procs_running("sleep", "1.61"))  # the jobs' own processes, checked every 10 ms
        most = max(most, running)
        assert running <= 2, f"{running} jobs of a key limited to 2 running at once"
        if time.monotonic() - looked > 0.1:
            looked = time.monotonic()
            done = statuses(address, ids)
            if all(s.status == "SUCCEEDED" for s in done.values()):
                break
            busy = [s for s in done.values() if s.status == "RUNNING"]
            if not victim and running == 2 and busy:  # kill -9 a worker that runs one of them, mid-run
                victim = busy[0].id
                workers[busy[0].worker_id].signal(signal.SIGKILL)
        assert time.monotonic() < deadline, f"jobs not done: {[s.status for s in statuses(address, ids).values()]}"
        time.sleep(0.01)
    assert victim and most == 2
    history = job_status(address, victim).attempt_history
    assert "worker lost" in history[0].error and history[-1].exit_code == 0, history


def test_a_flood_on_a_slow_queue_does_not_delay_a_default_job(cluster: Cluster):
    _, address = cluster.server()
    cluster.worker("e2e-flood", "--concurrency", "2", WORKER_QUEUES="default,slow")
    slow = submit_batch(address, [pb.Job(command="sleep 0.3", queue="slow") for _ in range(1000)])
    wait_for_sync(
        lambda: sum(s.status == "RUNNING" for s in statuses(address, slow[:10]).values()) == 2,
        timeout=30,
        what="both slots running slow jobs",
    )
    sent = time.monotonic()
    fast = submit(address, command="echo fast")
    wait_for_sync(lambda: job_status(address, fast).status == "SUCCEEDED", timeout=20, what="the default job ran")
    waited = time.monotonic() - sent
    done = job_status(address, fast)
    with grpc.insecure_channel(address) as channel:
        page = pb_grpc.JobServiceStub(channel).ListJobs(pb.ListJobsRequest(queue="slow", page_size=1000), timeout=10)
    started_meanwhile = [j for j in page.jobs if done.created_at_ms <= j.started_at_ms < done.started_at_ms]
    print(
        f"default job started {done.started_at_ms - done.created_at_ms} ms after its submit "
        f"({waited:.2f}s to SUCCEEDED), behind {len(started_meanwhile)} slow job(s)"
    )
    assert len(started_meanwhile) <= 2, "slow jobs were taken before the default job"
    assert done.started_at_ms - done.created_at_ms < 2000


@pytest.mark.long("holds a concurrency key with a running job and times its release: ~6 s")
def test_a_job_waiting_for_its_key_starts_as_soon_as_the_running_one_ends(cluster: Cluster, redis_sync):
    """Refused jobs back off (up to 4 s), but a job of the key that ends lets the oldest one go at once."""
    gate = f"/tmp/jobcluster-gate-{uuid.uuid4().hex}"
    _, address = cluster.server()
    cluster.worker("e2e-release", "--concurrency", "2")
    first = submit(address, command=f"while [ ! -e {gate} ]; do sleep 0.02; done", concurrency_key="one")
    try:
        wait_for_sync(lambda: job_status(address, first).status == "RUNNING", timeout=30, what="first running")
        second = submit(address, command="true", concurrency_key="one")
        # five refusals in a row: its next try is 3-5 s away
        wait_for_sync(lambda: redis_sync.llen(keys.key_waiting("one")) >= 5, timeout=30, what="five refusals")
    finally:
        open(gate, "w").close()
    try:
        wait_for_sync(lambda: job_status(address, second).status == "SUCCEEDED", timeout=30, what="second ran")
    finally:
        os.unlink(gate)
    ended, started = job_status(address, first).finished_at_ms, job_status(address, second).started_at_ms
    print(f"second job of the key started {started - ended} ms after the first ended")
    assert 0 <= started - ended < 1000
