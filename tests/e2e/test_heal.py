"""A server heals its own stored-but-unpushed submissions, with no leader at all (ETCD_ENDPOINTS empty)."""

from __future__ import annotations

import re
from pathlib import Path

from devtools import services as svc
from tests.e2e.conftest import Cluster, job_status
from tests.helpers import wait_for_sync

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def test_a_job_stored_while_redis_is_down_runs_once_redis_is_back_without_a_leader(cluster: Cluster, tmp_path: Path):
    port = svc.free_port()
    redis_addr = f"127.0.0.1:{port}"
    _, address = cluster.server(REDIS_ADDR=redis_addr, ETCD_ENDPOINTS="")
    run = cluster.client("-cmd", "echo healed", "-servers", address)
    assert run.returncode == 3 and "Redis is unavailable" in run.stderr, run.stdout + run.stderr
    assert "this server queues it when Redis is back" in run.stderr, run.stderr
    job_id = re.search(UUID, run.stderr).group(0)
    assert job_status(address, job_id).status == "QUEUED"
    redis = svc.start_redis(tmp_path / "redis", port, tmp_path / "redis.log")
    try:
        cluster.worker("e2e-heal", REDIS_ADDR=redis_addr, ETCD_ENDPOINTS="")
        wait_for_sync(
            lambda: job_status(address, job_id).status == "SUCCEEDED",
            timeout=30,
            what="the stored job run once Redis answers",
        )
        job = job_status(address, job_id)
        assert (job.output, job.attempts) == ("healed\n", 1)
    finally:
        redis.stop()
