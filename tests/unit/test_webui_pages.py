"""The web UI's shared layout, dead letters, schedules and cluster pages, through Starlette's TestClient
against in-process fake servers (the jobs pages: test_webui_jobs.py)."""

from __future__ import annotations

import grpc
import pytest
from starlette.testclient import TestClient

from jobcluster.pb import scheduler_pb2 as pb
from tests.unit.fake_jobservice import NOT_ANSWERING, SERVERS, UI_URL, FakeConnector, csrf, post, rpc_error
from webui.app import create_app

A, B = SERVERS


# --- every page: headers, the shared layout ---------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/jobs", "/dlq", "/schedules", "/cluster", "/api/health", "/nowhere"])
def test_every_response_carries_the_security_headers(client: TestClient, path: str) -> None:
    headers = client.get(path).headers
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Frame-Options"] == "DENY"


def test_the_page_hands_the_terminal_statuses_to_the_script(client: TestClient) -> None:
    assert 'data-terminal-statuses="SUCCEEDED FAILED CANCELLED"' in client.get("/").text
    script = client.get("/static/app.js").text
    assert "terminalStatuses" in script and '"RUNNING"' not in script and '"SUCCEEDED"' not in script


def test_the_csrf_cookie_is_set_once_and_http_only(client: TestClient) -> None:
    first = client.get("/")
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    token = client.cookies["jobcluster_csrf"]
    assert f'value="{token}"' in first.text
    again = client.get("/")
    assert "set-cookie" not in again.headers and f'value="{token}"' in again.text


# --- dead letters ---------------------------------------------------------------------------


def test_dlq_page_lists_the_dead_letters(client: TestClient, fake: FakeConnector) -> None:
    fake.cluster.dead.append(pb.DeadLetter(id="d-1", name="<u>x</u>", attempts=3, reason="retries used up"))
    r = client.get("/dlq")
    assert r.status_code == 200 and 'aria-label="Retry d-1"' in r.text and "&lt;u&gt;x&lt;/u&gt;" in r.text
    assert "retries used up" in r.text and "Retry all" in r.text


def test_dlq_page_with_no_server_answering_gives_503(client: TestClient, fake: FakeConnector) -> None:
    fake.down()
    r = client.get("/dlq")
    assert r.status_code == 503 and NOT_ANSWERING in r.text and "dlq_tasks is empty" in r.text


@pytest.mark.parametrize("action,method", [("retry", "RetryDeadLetters"), ("purge", "PurgeDeadLetters")])
def test_dlq_buttons_act_on_one_or_all(client: TestClient, fake: FakeConnector, action: str, method: str) -> None:
    done = "retried" if action == "retry" else "purged"
    assert post(client, f"/dlq/{action}", id="d-1").headers["location"] == f"/dlq?{done}=1"
    shown = client.get(f"/dlq?{done}=1").text
    assert ("1 job sent back to the queue." if action == "retry" else "1 id removed from dlq_tasks") in shown
    assert post(client, f"/dlq/{action}", id="all").status_code == 303
    one, every = fake.servers[A].asked(method) + fake.servers[B].asked(method)
    assert list(one.ids) == ["d-1"] and not one.all and every.all


def test_dlq_buttons_refuse_without_csrf_and_unknown_actions(client: TestClient, fake: FakeConnector) -> None:
    assert client.post("/dlq/retry", data={"id": "all"}).status_code == 403
    assert post(client, "/dlq/burn", id="all").status_code == 404
    assert not any(s.calls for s in fake.servers.values())


# --- schedules ------------------------------------------------------------------------------


def test_schedules_page_lists_the_schedules(client: TestClient, fake: FakeConnector) -> None:
    fake.cluster.schedules["nightly"] = pb.Schedule(name="nightly", cron="0 3 * * *", enabled=True)
    r = client.get("/schedules")
    assert r.status_code == 200 and "nightly" in r.text and 'action="/schedules/nightly/pause"' in r.text


def test_creating_a_schedule_sends_the_form(client: TestClient, fake: FakeConnector) -> None:
    r = post(
        client,
        "/schedules",
        name="n",
        cron="*/5 * * * *",
        timezone="UTC",
        command="date",
        catchup="once",
        overlap="forbid",
    )
    assert r.status_code == 303 and r.headers["location"] == "/schedules"
    [sch] = fake.servers[A].asked("CreateSchedule")
    assert (sch.name, sch.cron, sch.timezone, sch.command, sch.catchup, sch.overlap) == (
        "n",
        "*/5 * * * *",
        "UTC",
        "date",
        "once",
        "forbid",
    )


def test_a_refused_schedule_shows_the_list_and_keeps_the_form(client: TestClient, fake: FakeConnector) -> None:
    fake.cluster.schedules["old"] = pb.Schedule(name="old", cron="@daily", enabled=True)
    fake.servers[A].errors["CreateSchedule"] = rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad cron 'every day'")
    r = post(client, "/schedules", name="typed", cron="every day", command="date")
    assert r.status_code == 400 and "bad cron &#39;every day&#39;" in r.text
    assert 'action="/schedules/old/pause"' in r.text and 'value="typed"' in r.text and ">date</textarea>" in r.text


def test_a_schedule_with_no_server_answering_gives_503_and_keeps_the_form(
    client: TestClient, fake: FakeConnector
) -> None:
    token = csrf(client)
    fake.down()
    r = client.post("/schedules", data={"csrf": token, "name": "typed", "cron": "@hourly", "command": "date"})
    assert r.status_code == 503 and NOT_ANSWERING in r.text
    assert "no schedules yet" in r.text and 'value="typed"' in r.text


@pytest.mark.parametrize(
    "action,method", [("pause", "PauseSchedule"), ("resume", "ResumeSchedule"), ("delete", "DeleteSchedule")]
)
def test_schedule_buttons_come_back_to_the_list(
    client: TestClient, fake: FakeConnector, action: str, method: str
) -> None:
    fake.cluster.schedules["n"] = pb.Schedule(name="n", cron="@daily", enabled=True)
    r = post(client, f"/schedules/n/{action}")
    assert r.status_code == 303 and r.headers["location"] == "/schedules"
    assert [ref.name for ref in fake.servers[A].asked(method) + fake.servers[B].asked(method)] == ["n"]


def test_run_now_goes_to_the_new_jobs_page(client: TestClient, fake: FakeConnector) -> None:
    fake.down(A)
    fake.cluster.schedules["n"] = pb.Schedule(name="n", command="date")
    r = post(client, "/schedules/n/run")
    assert r.status_code == 303 and r.headers["location"] == f"/jobs/job-1?server={B}"


def test_schedule_buttons_refuse_unknown_names_actions_and_missing_csrf(
    client: TestClient, fake: FakeConnector
) -> None:
    assert client.post("/schedules/n/pause").status_code == 403
    assert post(client, "/schedules/n/explode").status_code == 404
    r = post(client, "/schedules/ghost/pause")
    assert r.status_code == 404 and "no schedule &#39;ghost&#39;" in r.text


# --- cluster --------------------------------------------------------------------------------


def test_cluster_page_shows_leader_servers_and_workers(client: TestClient, fake: FakeConnector) -> None:
    info = fake.cluster.info
    info.servers.add(address=A, pid=11, leader=True)
    info.workers.add(id="w-<1>", pid=12, slots=4, alive=True)
    r = client.get("/cluster")
    assert r.status_code == 200 and f'<strong id="leader">{A}</strong>' in r.text and "term 7" in r.text
    assert "w-&lt;1&gt;" in r.text and '<b id="q-pending">3</b>' in r.text


def test_cluster_page_with_no_server_answering_gives_503(client: TestClient, fake: FakeConnector) -> None:
    fake.down()
    r = client.get("/cluster")
    assert r.status_code == 503 and NOT_ANSWERING in r.text and 'id="cluster"' not in r.text


def test_closing_the_app_closes_the_channels(fake: FakeConnector) -> None:
    with TestClient(create_app(SERVERS, fake), base_url=UI_URL):
        assert not fake.closed
    assert fake.closed
