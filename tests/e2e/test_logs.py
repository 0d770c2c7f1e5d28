"""LOG_FORMAT=json: a job's lines carry job_id, attempt and worker_id, a server's lines the rpc they answer,
and a job's start and end are one line each (at DEBUG: a job that succeeds logs nothing at INFO)."""

from __future__ import annotations

import json

from tests.e2e.conftest import Cluster, job_status, submit
from tests.helpers import wait_for_sync


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_logs_name_the_job_the_attempt_the_worker_and_the_rpc(cluster: Cluster):
    server, address = cluster.server(LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    worker = cluster.worker("log-1", LOG_FORMAT="json", LOG_LEVEL="DEBUG", RETRY_BACKOFF_BASE="0.1s")
    job_id = submit(address, command='[ "$JOB_ATTEMPT" = 2 ] || exit 5', max_retries=1)
    wait_for_sync(lambda: job_status(address, job_id).status == "SUCCEEDED", timeout=30, what="the job")
    wait_for_sync(
        lambda: any("succeeded" in r["msg"] for r in _lines(worker.log())), timeout=10, what="the worker's last line"
    )
    mine = [r for r in _lines(worker.log()) if r.get("job_id") == job_id]
    assert all(r["worker_id"] == "log-1" for r in mine)
    started = [r for r in mine if r["msg"].endswith("started")]
    ended = [r for r in mine if "succeeded" in r["msg"] or "failed" in r["msg"]]
    assert [(r["attempt"], r["level"]) for r in started] == [(1, "debug"), (2, "debug")]  # one line per start
    assert [(r["attempt"], r["level"]) for r in ended] == [(1, "info"), (2, "debug")]  # and one per end: exit 5
    # then retried (INFO), then success (DEBUG)
    assert "exit code 5" in ended[0]["msg"] and "succeeded" in ended[1]["msg"]
    accepted = [r for r in _lines(server.log()) if job_id in r["msg"] and "accepted" in r["msg"]]
    assert [(r.get("rpc"), r["level"]) for r in accepted] == [("SubmitJob", "debug")]


def test_at_info_a_job_that_succeeds_costs_no_line_but_its_audit_record(cluster: Cluster):
    server, address = cluster.server()
    worker = cluster.worker("log-2")
    job_id = submit(address, command="true")
    wait_for_sync(lambda: job_status(address, job_id).status == "SUCCEEDED", timeout=30, what="the job")
    assert job_id not in worker.log()
    # The server's one line is the audit record of the call (scheduler_server/audit.py), not the job's.
    mine = [line for line in server.log().splitlines() if job_id in line]
    assert len(mine) == 1 and " submitted by=" in mine[0] and "rpc=SubmitJob" in mine[0], mine
