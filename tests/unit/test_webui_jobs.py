"""The web UI's submit form and jobs pages, through Starlette's TestClient against in-process fake servers."""

from __future__ import annotations

import re
import time
from typing import Any

import grpc
import pytest
from starlette.testclient import TestClient

from jobcluster.pb import scheduler_pb2 as pb
from tests.unit.fake_jobservice import NOT_ANSWERING, SERVERS, FakeConnector, post, rpc_error

A, B = SERVERS


def add_job(fake: FakeConnector, **fields: Any) -> pb.JobStatus:
    """Job ``j-1``, RUNNING ``echo hi`` unless ``fields`` say otherwise; every server sees it."""
    job = pb.JobStatus(**{"id": "j-1", "status": "RUNNING", "command": "echo hi", **fields})
    fake.cluster.jobs[job.id] = job
    return job


# --- submit ---------------------------------------------------------------------------------


def test_home_offers_every_configured_server(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert all(f'<option value="{s}"' in page.text for s in SERVERS)


def test_submit_sends_the_job_to_the_chosen_server_and_shows_it_on_the_other(
    client: TestClient, fake: FakeConnector
) -> None:
    r = post(
        client,
        "/submit",
        submit_server=B,
        status_server=A,
        command="echo hi",
        name="  greet ",
        max_retries="2",
        timeout="1m30s",
    )
    assert r.status_code == 303 and r.headers["location"] == f"/jobs/job-1?server={A}"
    [job] = fake.servers[B].asked("SubmitJob")
    assert (job.command, job.name, job.max_retries, job.timeout_seconds) == ("echo hi", "greet", 2, 90.0)
    assert len(job.idempotency_key) == 32 and not fake.servers[A].calls


def test_submit_leaves_retries_and_timeout_to_the_server_when_blank(client: TestClient, fake: FakeConnector) -> None:
    post(client, "/submit", submit_server=A, status_server=A, command="true", max_retries=" ", timeout="")
    [job] = fake.servers[A].asked("SubmitJob")
    assert not job.HasField("max_retries") and not job.HasField("timeout_seconds")


@pytest.mark.parametrize("cookie,token", [(False, ""), (True, ""), (True, "forged")])
def test_a_form_without_its_csrf_token_is_refused(
    client: TestClient, fake: FakeConnector, cookie: bool, token: str
) -> None:
    if cookie:
        client.get("/")
    r = client.post("/submit", data={"csrf": token, "submit_server": A, "command": "echo csrf"})
    assert r.status_code == 403 and "security token (CSRF)" in r.text
    assert not fake.servers[A].calls


def test_submit_to_a_server_that_is_not_configured_is_refused_and_keeps_the_form(
    client: TestClient, fake: FakeConnector
) -> None:
    r = post(client, "/submit", submit_server="10.0.0.1:50051", status_server=A, command="echo relay")
    assert r.status_code == 400 and "is not one of the configured servers" in r.text
    assert ">echo relay</textarea>" in r.text
    assert not any(s.calls for s in fake.servers.values())


@pytest.mark.parametrize(
    "field,value,message", [("max_retries", "two", "Retries must be a whole number."), ("timeout", "soon", "Timeout: ")]
)
def test_a_field_that_does_not_parse_is_named_and_the_form_kept(
    client: TestClient, field: str, value: str, message: str
) -> None:
    r = post(client, "/submit", submit_server=A, status_server=A, command="echo kept", **{field: value})
    assert r.status_code == 400 and message in r.text
    assert ">echo kept</textarea>" in r.text and f'value="{value}"' in r.text


def test_the_servers_refusal_is_shown_with_400(client: TestClient, fake: FakeConnector) -> None:
    fake.servers[A].errors["SubmitJob"] = rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "command is empty")
    r = post(client, "/submit", submit_server=A, status_server=A, command=" ")
    assert r.status_code == 400 and '<p class="error" role="alert">command is empty</p>' in r.text


def test_a_submit_server_that_does_not_answer_gives_503(client: TestClient, fake: FakeConnector) -> None:
    fake.down(A)
    r = post(client, "/submit", submit_server=A, status_server=B, command="echo down")
    assert r.status_code == 503 and NOT_ANSWERING in r.text
    assert not fake.servers[B].calls  # the user chose A: no quiet failover


# --- jobs list ------------------------------------------------------------------------------


def test_jobs_page_lists_jobs_with_counts_and_escapes_them(client: TestClient, fake: FakeConnector) -> None:
    add_job(fake, command="echo '<script>alert(1)</script>'", name="<b>bold</b>")
    r = client.get("/jobs")
    assert r.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text and "<script>alert" not in r.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in r.text
    assert re.search(r"RUNNING 1</a>", r.text) and re.search(r"SUCCEEDED 0</a>", r.text)
    assert f'href="/jobs/j-1?server={A}"' in r.text


def test_jobs_page_passes_its_filters_on(client: TestClient, fake: FakeConnector) -> None:
    before = int((time.time() - 3600) * 1000)
    r = client.get(
        "/jobs", params={"status": "FAILED", "text": "ls", "schedule": "nightly", "since": "1h", "page": "tok"}
    )
    assert r.status_code == 200
    [req] = fake.servers[A].asked("ListJobs")
    assert (req.status, req.text, req.schedule, req.page_token, req.page_size) == ("FAILED", "ls", "nightly", "tok", 25)
    assert req.with_counts and not req.include_output
    assert before <= req.created_after_ms <= int((time.time() - 3600) * 1000)


def test_jobs_page_refuses_an_unknown_since_and_keeps_the_filters(client: TestClient, fake: FakeConnector) -> None:
    r = client.get("/jobs", params={"since": "1y", "text": "kept"})
    assert r.status_code == 400 and "since must be one of 1h, 24h, 7d" in r.text
    assert 'value="kept"' in r.text and not fake.servers[A].calls


def test_jobs_page_fails_over_to_a_server_that_answers(client: TestClient, fake: FakeConnector) -> None:
    fake.down(A)
    add_job(fake)
    r = client.get("/jobs")
    assert r.status_code == 200 and f'href="/jobs/j-1?server={B}"' in r.text


def test_jobs_page_with_no_server_answering_gives_503(client: TestClient, fake: FakeConnector) -> None:
    fake.down()
    r = client.get("/jobs")
    assert r.status_code == 503 and NOT_ANSWERING in r.text and "no jobs" in r.text


# --- one job --------------------------------------------------------------------------------


def test_job_page_shows_the_job_with_its_output_escaped(client: TestClient, fake: FakeConnector) -> None:
    add_job(fake, output="<script>alert(1)</script>\n", name="<i>n</i>")
    r = client.get("/jobs/j-1", params={"server": B})
    assert r.status_code == 200
    assert '<pre id="output" class="output">&lt;script&gt;alert(1)&lt;/script&gt;' in r.text
    assert "<script>alert" not in r.text and "&lt;i&gt;n&lt;/i&gt;" in r.text
    assert f'data-server="{B}"' in r.text
    assert re.search(r'id="cancel-form" *>', r.text)  # RUNNING: Cancel shown
    assert not fake.servers[A].calls


def test_job_page_without_server_asks_the_first_one(client: TestClient, fake: FakeConnector) -> None:
    add_job(fake, status="SUCCEEDED")
    r = client.get("/jobs/j-1")
    assert r.status_code == 200 and f'data-server="{A}"' in r.text
    assert re.search(r'id="cancel-form" hidden>', r.text)  # ended: no Cancel
    assert not fake.servers[A].asked("ListDeadLetters")


def test_a_failed_job_in_the_dlq_has_a_retry_button(client: TestClient, fake: FakeConnector) -> None:
    add_job(fake, status="FAILED")
    fake.cluster.dead.append(pb.DeadLetter(id="j-1"))
    r = client.get("/jobs/j-1")
    assert 'action="/jobs/j-1/retry"' in r.text


def test_an_unknown_job_gives_404(client: TestClient) -> None:
    r = client.get("/jobs/nope")
    assert r.status_code == 404 and "no job nope" in r.text


def test_job_page_from_a_server_that_is_not_configured_gives_400(client: TestClient, fake: FakeConnector) -> None:
    r = client.get("/jobs/j-1", params={"server": "evil:1"})
    assert r.status_code == 400 and "is not one of the configured servers" in r.text
    assert not any(s.calls for s in fake.servers.values())


def test_job_events_stream_each_change_then_end(client: TestClient, fake: FakeConnector) -> None:
    running = pb.JobStatus(id="j-1", status="RUNNING")
    done = pb.JobStatus(id="j-1", status="SUCCEEDED", output="hi\n", exit_code=0)
    fake.cluster.events = [
        pb.JobEvent(job=running, live_output="h"),
        pb.JobEvent(job=done, final=True),
        pb.JobEvent(job=running),
    ]
    r = client.get("/jobs/j-1/events", params={"server": B})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = re.findall(r"event: (\w+)\ndata: (.*)\n\n", r.text)
    assert [name for name, _ in events] == ["job", "job", "end"]
    assert '"live_output": "h"' in events[0][1] and '"final": true' in events[1][1]
    assert '"exit_code": 0' in events[1][1] and 'created_at"' not in events[1][1]


def test_job_events_report_a_failed_watch_as_an_event(client: TestClient, fake: FakeConnector) -> None:
    fake.down(A)
    r = client.get("/jobs/j-1/events")
    assert r.status_code == 200
    assert f'event: failure\ndata: {{"error": "{NOT_ANSWERING}"}}' in r.text and r.text.endswith(
        "event: end\ndata: {}\n\n"
    )


def test_job_events_from_a_server_that_is_not_configured_give_json_400(client: TestClient) -> None:
    r = client.get("/jobs/j-1/events", params={"server": "evil:1"})
    assert r.status_code == 400 and "is not one of the configured servers" in r.json()["error"]


@pytest.mark.parametrize("action,method", [("cancel", "CancelJob"), ("retry", "RetryDeadLetters")])
def test_job_buttons_call_the_jobs_server_and_come_back(
    client: TestClient, fake: FakeConnector, action: str, method: str
) -> None:
    add_job(fake)
    r = post(client, f"/jobs/j-1/{action}", server=B)
    assert r.status_code == 303 and r.headers["location"] == f"/jobs/j-1?server={B}"
    [req] = fake.servers[B].asked(method)
    assert (req.id if action == "cancel" else list(req.ids)) == ("j-1" if action == "cancel" else ["j-1"])


def test_job_buttons_refuse_without_csrf_and_unknown_actions(client: TestClient, fake: FakeConnector) -> None:
    assert client.post("/jobs/j-1/cancel", data={"server": A}).status_code == 403
    r = post(client, "/jobs/j-1/explode", server=A)
    assert r.status_code == 404 and "unknown action &#39;explode&#39;" in r.text
    assert not fake.servers[A].calls


def test_cancelling_an_ended_job_shows_the_conflict(client: TestClient, fake: FakeConnector) -> None:
    fake.servers[A].errors["CancelJob"] = rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "job j-1 has ended")
    r = post(client, "/jobs/j-1/cancel", server=A)
    assert r.status_code == 409 and "job j-1 has ended" in r.text
