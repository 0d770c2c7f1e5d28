"""Prometheus metrics (jobcluster/metrics.py): a real server and worker serve /metrics, a scrape parses with
prometheus-client's own parser, and the counters move by exactly the jobs run."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from devtools.services import free_port
from tests.e2e.conftest import Cluster, job_status, submit
from tests.helpers import wait_for_sync

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(target: str) -> Samples:
    """Every sample of one target: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_every_program_exports_metrics_that_count_the_jobs_run(cluster: Cluster):
    server_metrics, worker_metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    _, address = cluster.server(METRICS_ADDR=server_metrics)
    cluster.worker("metrics-1", "--concurrency", "3", METRICS_PORT=worker_metrics.rsplit(":", 1)[1])
    wait_for_sync(lambda: _up(worker_metrics), timeout=30, what="the worker's /metrics")
    server0, worker0 = scrape(server_metrics), scrape(worker_metrics)

    n = 7
    ids = [submit(address, command=f"echo {i}") for i in range(n)]
    failed = submit(address, command="exit 3", max_retries=0)
    wait_for_sync(
        lambda: (
            all(job_status(address, i).status == "SUCCEEDED" for i in ids)
            and job_status(address, failed).status == "FAILED"
        ),
        timeout=60,
        what="the jobs to end",
    )
    # the worker counts a job once its result is recorded: the status above may be read a moment before
    wait_for_sync(
        lambda: value(scrape(worker_metrics), "jobcluster_jobs_finished_total", status="FAILED", queue="default") == 1,
        timeout=10,
        what="the FAILED job counted",
    )
    server1, worker1 = scrape(server_metrics), scrape(worker_metrics)

    def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(server0, server1, "jobcluster_jobs_submitted_total", queue="default") == n + 1
    assert moved(server0, server1, "jobcluster_grpc_requests_total", method="SubmitJob", code="OK") == n + 1
    assert moved(server0, server1, "jobcluster_grpc_request_duration_seconds_count", method="SubmitJob") == n + 1
    assert moved(worker0, worker1, "jobcluster_jobs_started_total", queue="default") == n + 1
    assert moved(worker0, worker1, "jobcluster_jobs_finished_total", status="SUCCEEDED", queue="default") == n
    assert moved(worker0, worker1, "jobcluster_jobs_finished_total", status="FAILED", queue="default") == 1
    assert moved(worker0, worker1, "jobcluster_attempt_duration_seconds_count", queue="default") == n + 1
    assert moved(worker0, worker1, "jobcluster_start_delay_seconds_count", queue="default") == n + 1
    assert value(worker1, "jobcluster_worker_slots") == 3
    # a job running now makes a slot busy; refused calls are counted with their code
    busy = submit(address, command="sleep 30")
    wait_for_sync(
        lambda: value(scrape(worker_metrics), "jobcluster_worker_slots_busy") == 1, timeout=20, what="one busy slot"
    )
    assert job_status(address, busy).status == "RUNNING"
    try:
        submit(address, command="")
    except Exception:  # noqa: BLE001 - INVALID_ARGUMENT is what is counted
        pass
    assert (
        value(scrape(server_metrics), "jobcluster_grpc_requests_total", method="SubmitJob", code="INVALID_ARGUMENT")
        == 1
    )
    # the gauges a server reads every 5 s: it leads (the only server), and the queue depths
    wait_for_sync(lambda: value(scrape(server_metrics), "jobcluster_leader") == 1, timeout=20, what="leader gauge")
    after = scrape(server_metrics)
    assert value(after, "jobcluster_leader_term") >= 1
    assert value(after, "jobcluster_queue_depth", list="dlq") == 1
    assert ("jobcluster_queue_depth", (("list", "pending"),)) in after


def _up(target: str) -> bool:
    try:
        scrape(target)
        return True
    except OSError:
        return False


def test_a_taken_metrics_port_stops_the_program_with_a_clear_error(cluster: Cluster):
    _, address = cluster.server(METRICS_PORT="")
    taken = address.rsplit(":", 1)[1]  # the server's own gRPC port
    proc = cluster.worker("metrics-taken", METRICS_PORT=taken)
    assert proc.wait(30) == 2
    assert f"cannot serve metrics on 127.0.0.1:{taken}" in proc.log() and "METRICS_PORT" in proc.log()
