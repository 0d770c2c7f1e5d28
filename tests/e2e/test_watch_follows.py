"""A watcher follows a job onto its next attempt when its worker is killed: the new worker and the new
attempt's output, not the dead attempt's, long before the new attempt ends (the live page once froze on
attempt 1 until attempt 2 ended). The dead worker stays listed as gone."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import replace

import grpc
import pytest
import redis

from jobcluster import keys
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from jobcluster.settings import Settings
from tests.e2e.conftest import Cluster, job_status, submit
from tests.helpers import wait_for_sync


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, worker_dead_after=1.5, heartbeat_interval=0.2)


@pytest.mark.long("waits for WORKER_DEAD_AFTER after a kill: ~4.5 s")
def test_a_watch_follows_the_rerun_after_its_worker_is_killed(cluster: Cluster, redis_sync: redis.Redis):
    _, address = cluster.server()
    first = cluster.worker("watch-1", "--concurrency", "1")
    wait_for_sync(lambda: redis_sync.zscore(keys.WORKERS, "watch-1") is not None, timeout=20, what="watch-1")
    job_id = submit(address, command='echo "attempt $JOB_ATTEMPT here"; sleep 40', max_retries=3)
    wait_for_sync(lambda: job_status(address, job_id).status == "RUNNING", timeout=20, what="attempt 1")

    events: list[pb.JobEvent] = []
    ended: list[str] = []  # why each stream ended: a client watches again, as `jobcluster watch` does
    done = threading.Event()
    channel = grpc.insecure_channel(address)
    streams: list[grpc.Future] = []

    def read() -> None:
        while not done.is_set():
            stream = pb_grpc.JobServiceStub(channel).WatchJob(pb.JobId(id=job_id), timeout=120)
            streams.append(stream)
            try:
                for event in stream:
                    events.append(event)
                ended.append("ended")
            except grpc.RpcError as exc:
                ended.append(f"{exc.code().name}: {exc.details()}")  # an outage under load: watch again
            done.wait(0.2)  # a pause before watching again, cut short when the test ends

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def seen() -> str:
        return (
            f"events {[(e.job.attempts, e.job.status, e.job.worker_id, e.live_output) for e in events][-8:]}, "
            f"streams ended: {ended}"
        )

    try:
        wait_for_sync(
            lambda: any(e.live_output == "attempt 1 here\n" for e in events),
            timeout=20,
            what="attempt 1's output on the stream",
        )
        cluster.worker("watch-2", "--concurrency", "1")
        wait_for_sync(lambda: redis_sync.zscore(keys.WORKERS, "watch-2") is not None, timeout=20, what="watch-2")
        first.signal(signal.SIGKILL)
        killed = time.monotonic()
        try:
            wait_for_sync(
                lambda: any(
                    e.job.attempts == 2
                    and e.job.status == "RUNNING"
                    and e.job.worker_id == "watch-2"
                    and e.live_output == "attempt 2 here\n"
                    for e in events
                ),
                timeout=30,
                what="the stream following attempt 2",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {seen()}") from None
        assert time.monotonic() - killed < 30  # attempt 2 sleeps 40 s: this is not its end
        after = [e for e in events if e.job.attempts == 2]
        assert not any("attempt 1" in e.live_output for e in after), [e.live_output for e in after]
        assert not any(e.final for e in events), seen()
        # The dead worker stays listed, as gone, with why and what became of its job (it once vanished).
        info = pb_grpc.JobServiceStub(channel).GetClusterInfo(pb.ClusterInfoRequest(), timeout=10)
        gone = {w.id: w for w in info.workers}["watch-1"]
        assert gone.gone_ms and not gone.alive and gone.last_heartbeat_ms and gone.pid == first.popen.pid
        assert "1 job(s) back to the queue" in gone.gone_reason, gone.gone_reason
        shown = cluster.client("-cluster", "-servers", address)
        line = next(line for line in shown.stdout.splitlines() if line.startswith("watch-1"))
        assert "GONE" in line and "back to the queue" in line, shown.stdout
    finally:
        done.set()
        for stream in streams:
            stream.cancel()
        channel.close()
