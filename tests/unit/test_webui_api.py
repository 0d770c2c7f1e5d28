"""The web UI's JSON API through Starlette's TestClient, against in-process fake servers."""

from __future__ import annotations

import grpc
import pytest
from starlette.testclient import TestClient

from jobcluster.pb import scheduler_pb2 as pb
from tests.unit.fake_jobservice import NOT_ANSWERING, SERVERS, FakeConnector, rpc_error

A, B = SERVERS


# --- POST /api/jobs -------------------------------------------------------------------------


def test_submit_creates_a_job_on_the_first_server(client: TestClient, fake: FakeConnector) -> None:
    r = client.post("/api/jobs", json={"command": "echo api", "name": "n", "max_retries": 1, "timeout": "30s"})
    assert r.status_code == 201 and r.json() == {"id": "job-1", "duplicate": False, "server": A}
    [job] = fake.servers[A].asked("SubmitJob")
    assert (job.command, job.name, job.max_retries, job.timeout_seconds) == ("echo api", "n", 1, 30.0)
    assert len(job.idempotency_key) == 32


def test_submit_to_a_chosen_server_with_a_chosen_key(client: TestClient, fake: FakeConnector) -> None:
    r = client.post("/api/jobs", json={"command": "true", "server": B, "idempotency_key": "k-1"})
    assert r.status_code == 201 and r.json()["server"] == B
    [job] = fake.servers[B].asked("SubmitJob")
    assert job.idempotency_key == "k-1"
    assert not job.HasField("max_retries") and not job.HasField("timeout_seconds")  # the server's defaults


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_submit_takes_only_json(client: TestClient, fake: FakeConnector, content_type: str) -> None:
    r = client.post("/api/jobs", content=b'{"command": "true"}', headers={"Content-Type": content_type})
    assert r.status_code == 415 and r.json() == {"error": "send JSON with Content-Type: application/json"}
    assert not fake.servers[A].calls


def test_submit_accepts_json_with_a_charset(client: TestClient) -> None:
    r = client.post(
        "/api/jobs", content=b'{"command": "true"}', headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert r.status_code == 201


@pytest.mark.parametrize(
    "body,message",
    [
        (b"{not json", "the body is not valid JSON"),
        (b'["echo"]', 'the body must be a JSON object with a "command"'),
    ],
)
def test_submit_refuses_a_body_that_is_not_a_json_object(client: TestClient, body: bytes, message: str) -> None:
    r = client.post("/api/jobs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json() == {"error": message}


@pytest.mark.parametrize("fields", [{"max_retries": "many"}, {"max_retries": [1]}, {"timeout": "soon"}])
def test_submit_refuses_fields_that_do_not_convert(
    client: TestClient, fake: FakeConnector, fields: dict[str, object]
) -> None:
    r = client.post("/api/jobs", json={"command": "true", **fields})
    assert r.status_code == 400 and r.json()["error"]
    assert not fake.servers[A].calls


def test_submit_to_a_server_that_is_not_configured_is_refused(client: TestClient, fake: FakeConnector) -> None:
    r = client.post("/api/jobs", json={"command": "true", "server": "10.0.0.1:50051"})
    assert r.status_code == 400 and "is not one of the configured servers" in r.json()["error"]
    assert not any(s.calls for s in fake.servers.values())


@pytest.mark.parametrize(
    "code,status",
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.FAILED_PRECONDITION, 409),
        (grpc.StatusCode.INTERNAL, 503),
    ],
)
def test_the_servers_answer_becomes_the_http_status(
    client: TestClient, fake: FakeConnector, code: grpc.StatusCode, status: int
) -> None:
    fake.servers[A].errors["SubmitJob"] = rpc_error(code, "the server says no")
    r = client.post("/api/jobs", json={"command": "true"})
    assert r.status_code == status and r.json() == {"error": "the server says no"}


def test_an_error_without_details_is_named_by_its_code(client: TestClient, fake: FakeConnector) -> None:
    fake.servers[A].errors["SubmitJob"] = rpc_error(grpc.StatusCode.INVALID_ARGUMENT)
    assert client.post("/api/jobs", json={"command": "true"}).json() == {"error": "INVALID_ARGUMENT"}


def test_submit_to_a_server_that_does_not_answer_gives_503(client: TestClient, fake: FakeConnector) -> None:
    fake.down(A)
    r = client.post("/api/jobs", json={"command": "true"})
    assert r.status_code == 503 and r.json() == {"error": NOT_ANSWERING}
    assert not fake.servers[B].calls  # a submit goes to the named (or first) server only


# --- GET /api/jobs, /api/jobs/{id} ----------------------------------------------------------


def test_list_jobs_passes_the_query_on(client: TestClient, fake: FakeConnector) -> None:
    fake.cluster.jobs["j-1"] = pb.JobStatus(id="j-1", status="SUCCEEDED", output="hi\n")
    r = client.get("/api/jobs", params={"status": "SUCCEEDED", "text": "echo", "limit": "5", "page": "p2"})
    assert r.status_code == 200
    assert [j["id"] for j in r.json()["jobs"]] == ["j-1"] and r.json()["next_page"] == ""
    [req] = fake.servers[A].asked("ListJobs")
    assert (req.status, req.text, req.page_size, req.page_token) == ("SUCCEEDED", "echo", 5, "p2")


def test_list_jobs_refuses_a_limit_that_is_not_a_number(client: TestClient, fake: FakeConnector) -> None:
    r = client.get("/api/jobs", params={"limit": "lots"})
    assert r.status_code == 400 and "lots" in r.json()["error"]
    assert not fake.servers[A].calls


def test_list_jobs_fails_over(client: TestClient, fake: FakeConnector) -> None:
    fake.down(A)
    assert client.get("/api/jobs").status_code == 200
    assert fake.servers[B].asked("ListJobs")


def test_one_job_as_json(client: TestClient, fake: FakeConnector) -> None:
    fake.cluster.jobs["j-1"] = pb.JobStatus(id="j-1", status="FAILED", exit_code=3, attempts=2, created_at=5)
    body = client.get("/api/jobs/j-1").json()
    assert (body["id"], body["status"], body["exit_code"], body["attempts"]) == ("j-1", "FAILED", 3, 2)
    assert "created_at" not in body and "updated_at" not in body
    assert body["output"] == "" and body["attempt_history"] == []  # every field, even when empty


def test_an_unknown_job_gives_404(client: TestClient) -> None:
    r = client.get("/api/jobs/nope")
    assert r.status_code == 404 and r.json() == {"error": "no job nope"}


def test_no_server_answering_gives_503(client: TestClient, fake: FakeConnector) -> None:
    fake.down()
    for path in ("/api/jobs", "/api/jobs/j-1", "/api/leader", "/api/cluster"):
        r = client.get(path)
        assert r.status_code == 503 and r.json() == {"error": NOT_ANSWERING}, path


# --- /api/health, /api/leader, /api/cluster -------------------------------------------------


def test_health_is_ok_only_while_every_server_serves(client: TestClient, fake: FakeConnector) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_health_is_degraded_while_one_server_is_unreachable(client: TestClient, fake: FakeConnector) -> None:
    fake.servers[A].health = "UNREACHABLE (UNAVAILABLE)"
    r = client.get("/api/health")
    assert r.status_code == 200  # the UI still works through B
    assert r.json() == {
        "status": "degraded",
        "servers": {A: "UNREACHABLE (UNAVAILABLE)", B: "SERVING"},
        "serving": 1,
        "configured": 2,
    }


def test_health_is_503_when_no_server_serves(client: TestClient, fake: FakeConnector) -> None:
    fake.servers[A].health = fake.servers[B].health = "NOT_SERVING"
    r = client.get("/api/health")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"


def test_leader(client: TestClient, fake: FakeConnector) -> None:
    assert client.get("/api/leader").json() == {
        "leader": A,
        "since_ms": 1_700_000_000_000,
        "term": 7,
        "election": "etcd",
    }
    fake.cluster.info.leader = ""
    assert client.get("/api/leader").json()["leader"] is None


def test_cluster_as_json(client: TestClient, fake: FakeConnector) -> None:
    fake.cluster.info.workers.add(id="w-1", slots=4, alive=True)
    body = client.get("/api/cluster").json()
    assert body["leader"] == A and body["pending"] == 3  # a number, not protobuf's JSON string for int64
    assert body["workers"][0]["id"] == "w-1" and body["servers"] == []


def test_api_answers_carry_the_security_headers(client: TestClient) -> None:
    headers = client.post("/api/jobs", content=b"x", headers={"Content-Type": "text/plain"}).headers
    assert headers["X-Content-Type-Options"] == "nosniff" and "default-src 'self'" in headers["Content-Security-Policy"]


# --- unknown fields, paging, numbers -----------------------------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        ({"command": "true", "retries": 5}, "unknown field(s) 'retries' (retries: did you mean max_retries?)"),
        ({"command": "true", "cron": "* * * * *"}, "schedules are made with POST /api/schedules"),
        ({"command": "true", "bogus": 1}, "unknown field(s) 'bogus'; known: command, name"),
    ],
)
def test_submit_refuses_fields_it_does_not_know(client: TestClient, fake: FakeConnector, body, message) -> None:
    r = client.post("/api/jobs", json=body)
    assert r.status_code == 400 and message in r.json()["error"]
    assert not any(server.asked("SubmitJob") for server in fake.servers.values())


@pytest.mark.parametrize(
    "query, message",
    [
        ("limit=0", "limit must be a whole number from 1 to 1000"),
        ("limit=5000", "limit must be a whole number from 1 to 1000"),
        ("offset=50", "unknown query parameter(s) 'offset'; known: status, text, queue, limit, page"),
        ("cursor=abc", "unknown query parameter(s) 'cursor'"),
    ],
)
def test_list_jobs_refuses_a_wrong_paging_parameter(client: TestClient, query: str, message: str) -> None:
    r = client.get(f"/api/jobs?{query}")
    assert r.status_code == 400 and message in r.json()["error"]


def test_job_numbers_are_json_numbers(client: TestClient, fake: FakeConnector) -> None:
    job_id = client.post("/api/jobs", json={"command": "true"}).json()["id"]
    fake.cluster.jobs[job_id].created_at_ms = 1_764_680_000_123
    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["created_at_ms"] == 1_764_680_000_123 and isinstance(job["attempts"], int)


# --- /api/schedules, /api/dlq ------------------------------------------------------------------


def test_schedules_through_the_api(client: TestClient, fake: FakeConnector) -> None:
    made = client.post("/api/schedules", json={"name": "nightly", "cron": "0 3 * * *", "command": "backup"})
    assert made.status_code == 201 and made.json()["name"] == "nightly"
    assert [s["name"] for s in client.get("/api/schedules").json()["schedules"]] == ["nightly"]
    paused = client.post("/api/schedules/nightly/pause", json={})
    assert paused.status_code == 200 and paused.json()["enabled"] is False
    assert client.post("/api/schedules/nightly/resume", json={}).json()["enabled"] is True
    ran = client.post("/api/schedules/nightly/run", json={})
    assert ran.status_code == 201 and ran.json()["id"]
    assert (
        client.post("/api/schedules/nightly/pause", content=b"", headers={"Content-Type": "text/plain"}).status_code
        == 415
    )  # a cross-site form cannot pause it
    assert (
        client.post("/api/schedules", json={"name": "x", "cron": "* * * * *", "command": "y", "when": 1}).status_code
        == 400
    )
    assert client.delete("/api/schedules/nightly").status_code == 200
    missing = client.post("/api/schedules/nightly/pause", json={})
    assert missing.status_code == 404 and "nightly" in missing.json()["error"]


def test_dead_letters_through_the_api(client: TestClient, fake: FakeConnector) -> None:
    fake.cluster.dead.append(pb.DeadLetter(id="d1", attempts=2, exit_code=3))
    listed = client.get("/api/dlq").json()
    assert listed["dead_letters"][0]["id"] == "d1" and listed["dead_letters"][0]["exit_code"] == 3
    assert client.post("/api/dlq/retry", json={"ids": ["d1"]}).json() == {"count": 1, "ids": ["d1"]}
    assert client.post("/api/dlq/purge", json={"all": True}).json()["count"] == 1
    both = client.post("/api/dlq/retry", json={"ids": ["d1"], "all": True})
    assert both.status_code == 400 and 'either "ids" or "all"' in both.json()["error"]
    assert client.post("/api/dlq/retry", json={}).status_code == 400
    assert client.post("/api/dlq/frob", json={"all": True}).status_code == 404
    assert client.get("/api/dlq?offset=3").status_code == 400
