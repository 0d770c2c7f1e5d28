"""Outages and kills against the real programs: a killed worker's job starts again within
WORKER_DEAD_AFTER + 1 s, every time; a frozen Redis (SIGSTOP of the session's redis-server) runs no
job twice, even with one worker's and the leader's host clocks 30 s off."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from devtools import services as svc
from jobcluster import keys
from jobcluster.settings import Settings
from tests.e2e.conftest import Cluster, Proc, job_status, submit
from tests.helpers import wait_for_sync

pytestmark = pytest.mark.long("Redis frozen for 6-20 s and a worker killed 20 times: ~65 s of outages")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # WORKER_DEAD_AFTER small (fast tests) but well above a beat plus the leader's stall gap.
    return replace(settings, worker_dead_after=1.5, heartbeat_interval=0.2)


def _beating(r: redis.Redis, worker_ids: list[str]) -> bool:
    beats = r.zrange(keys.WORKERS, 0, -1)
    return all(w in beats for w in worker_ids)


def _running_on(address: str, job_ids: list[str], attempt: int) -> dict[str, str] | None:
    """job id -> worker id once every job runs its ``attempt``-th attempt."""
    found = {}
    for job_id in job_ids:
        st = job_status(address, job_id)
        if st.status != "RUNNING" or st.attempts != attempt:
            return None
        found[job_id] = st.worker_id
    return found


def test_a_killed_workers_job_starts_again_within_dead_after_plus_1s_20_times(
    cluster: Cluster, redis_sync: redis.Redis
) -> None:
    """Five rounds of four kill -9s: the same four `sleep 60` jobs move from the killed workers to
    spares started (and beating) before the kill; each rerun must start within WORKER_DEAD_AFTER + 1 s."""
    _, address = cluster.server()
    limit = cluster.settings.worker_dead_after + 1.0
    busy = [cluster.worker(f"w0-{n}", WORKER_CONCURRENCY="1") for n in range(4)]
    wait_for_sync(
        lambda: _beating(redis_sync, [p.name.removeprefix("worker-") for p in busy]),
        timeout=30,
        what="the first workers",
    )
    jobs = [submit(address, command="sleep 60", max_retries=10) for _ in range(4)]
    owners = wait_for_sync(lambda: _running_on(address, jobs, 1), timeout=20, what="four jobs running")
    delays: list[float] = []
    for attempt in range(2, 7):
        spares = [cluster.worker(f"w{attempt}-{n}", WORKER_CONCURRENCY="1") for n in range(4)]
        spare_ids = [p.name.removeprefix("worker-") for p in spares]
        wait_for_sync(lambda: _beating(redis_sync, spare_ids), timeout=30, what="spare workers beating")
        by_id = {p.name.removeprefix("worker-"): p for p in busy}
        killed_at = time.monotonic()
        for worker_id in owners.values():
            by_id[worker_id].signal(signal.SIGKILL)
        started: dict[str, float] = {}

        def rerun_started() -> bool:
            for job_id in jobs:
                if job_id not in started:
                    st = job_status(address, job_id)
                    if st.status == "RUNNING" and st.attempts == attempt:
                        started[job_id] = time.monotonic() - killed_at
            return len(started) == len(jobs)

        wait_for_sync(rerun_started, timeout=limit + 10, interval=0.02, what=f"attempt {attempt} of every job")
        delays += started.values()
        owners = {j: job_status(address, j).worker_id for j in jobs}
        assert set(owners.values()) <= set(spare_ids)
        busy = spares
    assert len(delays) == 20
    print(f"kill -9 -> rerun started: min {min(delays):.2f}s, max {max(delays):.2f}s (limit {limit:g}s)")
    assert max(delays) < limit, sorted(round(d, 2) for d in delays)


@contextmanager
def frozen(service: svc.Service) -> Iterator[None]:
    """SIGSTOP the test session's own redis-server (by its pid); SIGCONT however the block ends."""
    service.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        service.proc.send_signal(signal.SIGCONT)


def _run_through_a_freeze(
    cluster: Cluster,
    services: dict[str, svc.Service],
    tmp_path: Path,
    freeze: float,
    leader_skew_ms: int = 0,
    worker_skews_ms: tuple[int, int] = (0, 0),
) -> None:
    marks = tmp_path / "marks"
    _, address = cluster.server(TEST_CLOCK_SKEW_MS=str(leader_skew_ms))
    workers: list[Proc] = [
        cluster.worker(f"w{n}", WORKER_CONCURRENCY="2", TEST_CLOCK_SKEW_MS=str(skew))
        for n, skew in enumerate(worker_skews_ms)
    ]
    jobs = [submit(address, command=f"echo run >> {marks}; sleep {freeze + 3:g}", max_retries=3) for _ in range(4)]
    wait_for_sync(lambda: _running_on(address, jobs, 1), timeout=30, what="four jobs running")
    with frozen(services["redis"]):
        time.sleep(freeze)  # the outage itself: Redis answers nobody for this long
    wait_for_sync(
        lambda: all(job_status(address, j).status == "SUCCEEDED" for j in jobs),
        timeout=freeze + 30,
        what="every job done",
    )
    runs = marks.read_text().splitlines()
    attempts = {j: job_status(address, j).attempts for j in jobs}
    logs = "\n".join(p.log()[-2000:] for p in cluster.procs)
    assert len(runs) == 4, f"{len(runs)} executions for 4 jobs; attempts {attempts}\n{logs}"
    assert set(attempts.values()) == {1}, attempts
    assert all(p.popen.poll() is None for p in workers)


def test_redis_frozen_6s_under_four_running_jobs_runs_each_once(cluster: Cluster, services, tmp_path: Path) -> None:
    _run_through_a_freeze(cluster, services, tmp_path, freeze=6.0)


def test_redis_frozen_6s_with_host_clocks_30s_off_runs_each_once(cluster: Cluster, services, tmp_path: Path) -> None:
    _run_through_a_freeze(cluster, services, tmp_path, freeze=6.0, leader_skew_ms=30_000, worker_skews_ms=(-30_000, 0))


def test_redis_frozen_20s_with_host_clocks_30s_off_runs_each_once(cluster: Cluster, services, tmp_path: Path) -> None:
    _run_through_a_freeze(cluster, services, tmp_path, freeze=20.0, leader_skew_ms=-30_000, worker_skews_ms=(30_000, 0))
