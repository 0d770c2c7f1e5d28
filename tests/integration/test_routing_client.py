"""The client CLI with routing fields: jobs.json entries and -cmd flags reach the server; -list and
-status show the queue and the waiting reason. Runs ``python -m client`` for real against a server."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from jobcluster.pb import scheduler_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


async def _client(address: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (in a thread: the server answers on this event loop)."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "client", "-servers", address, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_jobs_file_and_flags_carry_the_routing(server, stub, tmp_path):
    jobs = tmp_path / "jobs.json"
    jobs.write_text(
        json.dumps(
            {
                "jobs": [
                    {
                        "name": "train",
                        "command": "true",
                        "queue": "gpu",
                        "priority": 8,
                        "constraints": ["region=eu", "gpu"],
                        "concurrency_key": "trainer",
                        "max_concurrency": 1,
                    },
                    {"name": "plain", "command": "true"},
                    {"name": "nightly", "command": "true", "cron": "0 3 * * *", "queue": "batch", "priority": 2},
                ]
            }
        )
    )
    ran = await _client(server.address, tmp_path, "-file", str(jobs), "-no-wait")
    assert ran.returncode == 0, ran.stderr
    listed = {j.name: j for j in (await stub.ListJobs(pb.ListJobsRequest())).jobs}
    train, plain = listed["train"], listed["plain"]
    assert (train.queue, train.priority, list(train.constraints), train.concurrency_key, train.max_concurrency) == (
        "gpu",
        8,
        ["gpu", "region=eu"],
        "trainer",
        1,
    )
    assert (plain.queue, plain.priority, list(plain.constraints)) == ("default", 0, [])
    (sch,) = (await stub.ListSchedules(pb.ListSchedulesRequest())).schedules
    assert (sch.queue, sch.priority) == ("batch", 2)
    listed_schedules = await _client(server.address, tmp_path, "-schedules")
    assert "batch, priority 2" in listed_schedules.stdout, listed_schedules.stdout

    ran = await _client(
        server.address,
        tmp_path,
        "-cmd",
        "true",
        "-name",
        "flagged",
        "-queue",
        "slow",
        "-priority",
        "3",
        "-constraint",
        "ssd",
        "-constraint",
        "zone=b,arm",
        "-concurrency-key",
        "k",
        "-max-concurrency",
        "2",
        "-no-wait",
    )
    assert ran.returncode == 0, ran.stderr
    flagged = next(j for j in (await stub.ListJobs(pb.ListJobsRequest(queue="slow"))).jobs)
    assert (flagged.name, flagged.priority, list(flagged.constraints), flagged.max_concurrency) == (
        "flagged",
        3,
        ["arm", "ssd", "zone=b"],
        2,
    )

    shown = await _client(server.address, tmp_path, "-list", "-queue", "gpu")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "QUEUE" in lines[0] and len([ln for ln in lines if train.id in ln]) == 2, shown.stdout
    assert plain.id not in shown.stdout
    assert f"{train.id} waits: no live worker" in shown.stdout
    status = await _client(server.address, tmp_path, "-status", train.id)
    assert "waiting       no live worker" in status.stdout, status.stdout
    assert "gpu, priority 8, needs gpu, region=eu, concurrency key trainer (at most 1)" in status.stdout


async def test_bad_routing_in_a_jobs_file_names_the_entry(server, store, tmp_path):
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{"command": "true"}, {"name": "bad", "command": "true", "priority": 10}]))
    ran = await _client(server.address, tmp_path, "-file", str(jobs))
    assert ran.returncode == 2
    assert f"{jobs}: job 2 ('bad'): priority must be 0 to 9" in ran.stderr
    ran = await _client(server.address, tmp_path, "-cmd", "true", "-max-concurrency", "3")
    assert ran.returncode == 2 and "max_concurrency needs a concurrency_key" in ran.stderr
    assert await store.pool.fetchval("SELECT count(*) FROM jobs") == 0
