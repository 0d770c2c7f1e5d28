"""The web UI's routing fields (queue, priority, constraints, concurrency key) and waiting reasons: the
submit form, the JSON API, the jobs list and a job's page, against in-process fake servers."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from jobcluster.pb import scheduler_pb2 as pb
from tests.unit.fake_jobservice import SERVERS, FakeConnector, post

A, B = SERVERS
ROUTED = ("gpu", 7, ["gpu", "region=eu"], "db-eu", 2)


def _routing(job: pb.Job) -> tuple[object, ...]:
    return job.queue, job.priority, list(job.constraints), job.concurrency_key, job.max_concurrency


def test_the_form_sends_the_routing(client: TestClient, fake: FakeConnector) -> None:
    page = client.get("/")
    assert all(
        f'name="{f}"' in page.text for f in ("queue", "priority", "constraints", "concurrency_key", "max_concurrency")
    )
    r = post(
        client,
        "/submit",
        submit_server=A,
        status_server=A,
        command="train",
        queue="gpu",
        priority="7",
        constraints="region=eu, gpu",
        concurrency_key="db-eu",
        max_concurrency="2",
    )
    assert r.status_code == 303
    [job] = fake.servers[A].asked("SubmitJob")
    assert _routing(job) == ROUTED


def test_a_blank_form_routing_is_the_default_queue(client: TestClient, fake: FakeConnector) -> None:
    post(
        client,
        "/submit",
        submit_server=A,
        status_server=A,
        command="true",
        queue="",
        priority="",
        constraints="",
        concurrency_key="",
        max_concurrency="",
    )
    [job] = fake.servers[A].asked("SubmitJob")
    assert _routing(job) == ("default", 0, [], "", 0)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"priority": "high"}, "priority must be a whole number, got &#39;high&#39;"),
        ({"priority": "10"}, "priority must be 0 to 9 (higher runs first), got 10"),
        ({"queue": "my queue"}, "queue &#39;my queue&#39; is not a queue name"),
        ({"constraints": "gpu:1"}, "constraints item 1 &#39;gpu:1&#39; is not a tag"),
        ({"max_concurrency": "2"}, "max_concurrency needs a concurrency_key"),
    ],
)
def test_bad_form_routing_is_named_and_the_form_kept(
    client: TestClient, fake: FakeConnector, fields: dict[str, str], message: str
) -> None:
    r = post(client, "/submit", submit_server=A, status_server=A, command="echo kept", **fields)
    assert r.status_code == 400 and message in r.text, r.text
    assert ">echo kept</textarea>" in r.text and not fake.servers[A].calls


def test_the_api_takes_the_routing(client: TestClient, fake: FakeConnector) -> None:
    r = client.post(
        "/api/jobs",
        json={
            "command": "true",
            "queue": "gpu",
            "priority": 7,
            "constraints": ["region=eu", "gpu"],
            "concurrency_key": "db-eu",
            "max_concurrency": 2,
        },
    )
    assert r.status_code == 201
    r = client.post("/api/jobs", json={"command": "true", "constraints": "gpu, ssd"})
    assert r.status_code == 201
    first, second = fake.servers[A].asked("SubmitJob")
    assert _routing(first) == ROUTED and list(second.constraints) == ["gpu", "ssd"]


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"priority": 10}, "priority must be 0 to 9"),
        ({"priority": True}, "priority must be a whole number"),
        ({"constraints": [f"t{i}" for i in range(17)]}, "constraints has more than 16 tags"),
        ({"constraints": [1]}, "constraints must be a list of tags"),
        ({"queue": ["gpu"]}, "queue must be text"),
        ({"max_concurrency": 3}, "max_concurrency needs a concurrency_key"),
    ],
)
def test_the_api_refuses_bad_routing(
    client: TestClient, fake: FakeConnector, fields: dict[str, object], message: str
) -> None:
    r = client.post("/api/jobs", json={"command": "true", **fields})
    assert r.status_code == 400 and message in r.json()["error"]
    assert not fake.servers[A].calls


def _waiting_job(fake: FakeConnector) -> pb.JobStatus:
    job = pb.JobStatus(
        id="j-1",
        status="QUEUED",
        command="train",
        queue="gpu",
        priority=7,
        constraints=["gpu", "region=eu"],
        concurrency_key="db-eu",
        max_concurrency=2,
        waiting_reason="no live worker serves queue gpu",
    )
    fake.cluster.jobs[job.id] = job
    return job


def test_the_api_returns_the_routing_and_the_waiting_reason(client: TestClient, fake: FakeConnector) -> None:
    _waiting_job(fake)
    body = client.get("/api/jobs/j-1").json()
    assert (
        body["queue"],
        body["priority"],
        body["constraints"],
        body["concurrency_key"],
        body["max_concurrency"],
    ) == ROUTED
    assert body["waiting_reason"] == "no live worker serves queue gpu"
    r = client.get("/api/jobs", params={"queue": "gpu"})
    assert r.status_code == 200, r.text
    [req] = [q for s in SERVERS for q in fake.servers[s].asked("ListJobs")]
    assert req.queue == "gpu"


def test_the_jobs_list_shows_the_queue_and_filters_by_it(client: TestClient, fake: FakeConnector) -> None:
    _waiting_job(fake)
    r = client.get("/jobs", params={"queue": "gpu", "status": "QUEUED"})
    assert r.status_code == 200
    [req] = fake.servers[A].asked("ListJobs")
    assert req.queue == "gpu"
    assert "<th>Queue</th>" in r.text and '<td class="queue">gpu <span class="muted">p7</span></td>' in r.text
    assert 'id="queue" name="queue" value="gpu"' in r.text
    assert "no live worker serves queue gpu" in r.text
    assert "status=FAILED&amp;text=&amp;schedule=&amp;since=&amp;queue=gpu" in r.text  # the pills keep the filter


def test_the_job_page_shows_the_routing_and_why_it_waits(client: TestClient, fake: FakeConnector) -> None:
    _waiting_job(fake)
    r = client.get("/jobs/j-1")
    assert (
        '<p id="waiting-reason" class="waiting" >Waiting: <span id="waiting-text">no live worker serves queue gpu'
        in r.text
    )
    assert '<dd id="queue">gpu, priority 7</dd>' in r.text
    assert '<dd id="constraints">gpu, region=eu</dd>' in r.text
    assert "db-eu (at most 2 at once)" in r.text
    fake.cluster.jobs["j-1"].waiting_reason = ""
    assert 'id="waiting-reason" class="waiting" hidden' in client.get("/jobs/j-1").text


def test_a_schedule_from_the_form_carries_the_routing(client: TestClient, fake: FakeConnector) -> None:
    r = post(
        client,
        "/schedules",
        name="nightly",
        cron="0 3 * * *",
        command="train",
        queue="gpu",
        priority="7",
        constraints="gpu,region=eu",
    )
    assert r.status_code == 303
    [sch] = [q for s in SERVERS for q in fake.servers[s].asked("CreateSchedule")]
    assert (sch.queue, sch.priority, list(sch.constraints)) == ("gpu", 7, ["gpu", "region=eu"])
    fake.cluster.schedules["nightly"] = sch  # the fake keeps only name, cron and command
    page = client.get("/schedules")
    assert (
        '<td class="queue">gpu <span class="muted">p7</span> <span class="muted">needs gpu, region=eu</span>'
        in page.text
    )
    r = post(client, "/schedules", name="bad", cron="0 3 * * *", command="train", priority="12")
    assert r.status_code == 400 and "priority must be 0 to 9" in r.text and 'value="12"' in r.text


def test_the_cluster_page_shows_each_workers_queues_and_tags(client: TestClient, fake: FakeConnector) -> None:
    fake.cluster.info.workers.add(id="w-gpu", alive=True, queues=["gpu", "default"], tags=["gpu", "region=eu"])
    fake.cluster.info.workers.add(id="w-old", alive=True)
    r = client.get("/cluster")
    assert '<td class="queues">gpu, default</td><td class="tags">gpu, region=eu</td>' in r.text
    assert '<td class="queues">default</td><td class="tags">-</td>' in r.text
