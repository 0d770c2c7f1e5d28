"""Idempotency keys with a reserved prefix are refused wherever a caller can give one, before anything is
sent; RunScheduleNow's force reaches the server from the web UI's button and JSON API. No I/O (the web UI
runs on the in-process fake servers)."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from client.__main__ import EXIT_USAGE, main
from client.jobsfile import JobsFileError, parse_jobs
from jobcluster.model import RESERVED_KEY_PREFIXES, InvalidJob, validate_job
from jobcluster.pb import scheduler_pb2 as pb
from tests.unit.fake_jobservice import SERVERS, FakeConnector, post

A, B = SERVERS


def _job(key: str) -> None:
    validate_job(
        command="true", idempotency_key=key, default_max_retries=0, default_timeout=60.0, max_command_bytes=1000
    )


@pytest.mark.parametrize("prefix", RESERVED_KEY_PREFIXES)
def test_a_reserved_prefix_is_refused_naming_it(prefix: str) -> None:
    with pytest.raises(InvalidJob, match=f"starts with '{prefix}', a prefix reserved for jobs the server creates"):
        _job(f"{prefix}0b6f-some-schedule:2030-01-01T00:00:00+00:00")


@pytest.mark.parametrize("key", ["", "order-17", "crontab:1", "my-cron:1", "CRON:1", "manual", " cron:1"])
def test_other_keys_pass(key: str) -> None:
    _job(key)


def test_a_jobs_file_with_a_reserved_key_stops_before_its_schedules_are_saved() -> None:
    text = json.dumps(
        {
            "jobs": [
                {"name": "nightly", "command": "backup", "cron": "0 3 * * *"},
                {"name": "squat", "command": "true", "idempotency_key": "cron:x:2030"},
            ]
        }
    )
    with pytest.raises(JobsFileError, match=r"job 2 \('squat'\): idempotency_key 'cron:x:2030' starts with 'cron:'"):
        parse_jobs(text, "jobs.json")


def test_the_cmd_flag_with_a_reserved_key_submits_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-cmd", "true", "-idempotency-key", "manual:1", "-servers", "127.0.0.1:1"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "starts with 'manual:'" in err and "nothing was submitted" in err


# --- RunScheduleNow's force from the web UI ----------------------------------------------------------


def _runs(fake: FakeConnector) -> list[pb.ScheduleRef]:
    return fake.servers[A].asked("RunScheduleNow") + fake.servers[B].asked("RunScheduleNow")


def test_the_force_run_button_sends_force_and_run_now_does_not(client: TestClient, fake: FakeConnector) -> None:
    fake.cluster.schedules["n"] = pb.Schedule(name="n", command="date", overlap="forbid")
    page = client.get("/schedules").text
    assert 'name="force" value="1"' in page and "Force run" in page
    assert post(client, "/schedules/n/run").status_code == 303
    assert [r.force for r in _runs(fake)] == [False]
    assert post(client, "/schedules/n/run", force="1").status_code == 303
    assert sorted(r.force for r in _runs(fake)) == [False, True]
    assert post(client, "/schedules/n/pause", force="1").status_code == 303
    assert [r.force for r in fake.servers[A].asked("PauseSchedule") + fake.servers[B].asked("PauseSchedule")] == [False]


def test_only_a_forbid_schedule_shows_force_run(client: TestClient, fake: FakeConnector) -> None:
    fake.cluster.schedules["n"] = pb.Schedule(name="n", command="date", overlap="allow")
    assert "Force run" not in client.get("/schedules").text


def test_the_json_api_takes_force_on_run_only(client: TestClient, fake: FakeConnector) -> None:
    fake.cluster.schedules["n"] = pb.Schedule(name="n", command="date")
    assert client.post("/api/schedules/n/run", json={"force": True}).status_code == 201
    assert [r.force for r in _runs(fake)] == [True]
    assert client.post("/api/schedules/n/run", json={}).status_code == 201
    assert sorted(r.force for r in _runs(fake)) == [False, True]
    bad = client.post("/api/schedules/n/run", json={"force": "yes"})
    assert bad.status_code == 400 and "true or false" in bad.json()["error"]
    assert client.post("/api/schedules/n/pause", json={"force": True}).status_code == 400
