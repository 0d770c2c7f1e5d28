"""The whole loop with the real programs as subprocesses, and real signals."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from devtools.services import free_port, port_open
from jobcluster import keys
from tests.e2e.conftest import Cluster, job_status, submit
from tests.helpers import group_members, wait_for_sync

ORIGINAL_JOBS = {
    "jobs": [
        {"name": "list", "command": "ls -la", "description": "List files in the current directory"},
        {"name": "greet", "command": "echo 'Hello, World!'", "description": "Print a greeting"},
        {"name": "date", "command": "date", "description": "Show the date"},
        {"name": "broken", "command": "echo going down >&2; exit 7", "description": "A command that fails"},
    ]
}
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _summary_rows(stdout: str) -> dict[str, tuple[str, str]]:
    """name -> (job id, status) from the client's summary table."""
    rows = {}
    for line in stdout.splitlines():
        m = re.match(rf"({UUID})\s+(\S+)\s+(PENDING|QUEUED|RUNNING|SUCCEEDED|FAILED|CANCELLED)\b", line)
        if m:
            rows[m.group(2)] = (m.group(1), m.group(3))
    return rows


def test_original_jobs_file_runs_to_the_end_and_the_failure_is_dead_lettered(cluster: Cluster, redis_sync):
    _, address = cluster.server()
    cluster.worker("e2e-1")
    path = cluster.jobs_file(ORIGINAL_JOBS)
    run = cluster.client("-file", str(path), "-servers", address)
    assert run.returncode == 1, run.stdout + run.stderr  # one job failed
    rows = _summary_rows(run.stdout)
    assert {name: status for name, (_, status) in rows.items()} == {
        "list": "SUCCEEDED",
        "greet": "SUCCEEDED",
        "date": "SUCCEEDED",
        "broken": "FAILED",
    }, run.stdout
    assert "Hello, World!" in run.stdout and "going down" in run.stdout
    broken_id = rows["broken"][0]
    assert redis_sync.lrange(keys.DLQ, 0, -1) == [broken_id]
    # The original format has no max_retries: the server's JOB_DEFAULT_MAX_RETRIES (3) applies.
    broken = job_status(address, broken_id)
    assert broken.attempts == 4 and [a.exit_code for a in broken.attempt_history] == [7, 7, 7, 7]


def test_one_command_and_exit_codes(cluster: Cluster):
    _, address = cluster.server()
    cluster.worker("e2e-1")
    ok = cluster.client("-cmd", "echo from-cmd", "-servers", address)
    assert ok.returncode == 0 and "from-cmd" in ok.stdout and "SUCCEEDED" in ok.stdout, ok.stdout + ok.stderr
    bad = cluster.client("-cmd", "", "-servers", address)
    assert bad.returncode == 2 and "command" in bad.stderr
    bad_file = cluster.jobs_file({"jobs": [{"name": "a", "command": "true"}, {"name": "b", "commandd": "x"}]})
    refused = cluster.client("-file", str(bad_file), "-servers", address)
    assert refused.returncode == 2 and "job 2 ('b')" in refused.stderr and "nothing was submitted" in refused.stderr
    nobody = cluster.client("-cmd", "true", "-servers", f"127.0.0.1:{free_port()}")
    assert nobody.returncode == 3, nobody.stderr


def test_client_against_three_servers_with_one_down_gets_every_job_done(cluster: Cluster):
    servers = [cluster.server() for _ in range(3)]
    cluster.worker("e2e-1")
    cluster.worker("e2e-2")
    dead_proc, dead_address = servers[1]
    dead_proc.signal(signal.SIGKILL)
    dead_proc.wait(10)
    jobs = [{"name": f"j{i}", "command": f"echo job {i}"} for i in range(12)]
    path = cluster.jobs_file(jobs)
    addresses = ",".join(address for _, address in servers)
    run = cluster.client("-file", str(path), "-servers", addresses)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = _summary_rows(run.stdout)
    assert len(rows) == 12 and all(status == "SUCCEEDED" for _, status in rows.values()), run.stdout
    # Round-robin reached the live servers; nothing went through the dead one.
    assert dead_address not in " ".join(line for line in run.stdout.splitlines() if line.startswith("submitted"))


def _wait_running(address: str, job_id: str) -> None:
    wait_for_sync(lambda: job_status(address, job_id).status == "RUNNING", timeout=20, what="job RUNNING")


def test_worker_sigterm_lets_the_running_job_finish_within_the_grace(cluster: Cluster, tmp_path: Path):
    _, address = cluster.server()
    worker = cluster.worker("e2e-grace", WORKER_SHUTDOWN_GRACE="20s")
    job_id = submit(address, command="sleep 1.5; echo finished")
    _wait_running(address, job_id)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    job = job_status(address, job_id)
    assert (job.status, job.attempts, job.output) == ("SUCCEEDED", 1, "finished\n"), worker.log()


def test_worker_sigterm_past_the_grace_requeues_and_another_worker_finishes(
    cluster: Cluster, redis_sync, tmp_path: Path
):
    _, address = cluster.server()
    first = cluster.worker("e2e-short", WORKER_SHUTDOWN_GRACE="0.5s")
    pgid_file = tmp_path / "pgid"
    # The first attempt would run 60 s: a worker that waited for it instead of its 0.5 s grace times out below.
    job_id = submit(
        address,
        command=f"echo $$ > {pgid_file}.$JOB_ATTEMPT; [ $JOB_ATTEMPT -gt 1 ] || sleep 60; echo done on $JOB_ATTEMPT",
        max_retries=0,
    )
    _wait_running(address, job_id)
    started = time.monotonic()
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0, "the worker waited for the job instead of its grace"
    print(f"worker stopped {time.monotonic() - started:.2f}s after SIGTERM (WORKER_SHUTDOWN_GRACE=0.5s)")
    assert "interrupted by shutdown, requeued" in first.log()
    interrupted = job_status(address, job_id)
    assert interrupted.status == "QUEUED", interrupted
    assert redis_sync.lrange(keys.PENDING, 0, -1) == [job_id]
    # The interrupted attempt's process group is gone.
    pgid = int(Path(f"{pgid_file}.1").read_text())
    wait_for_sync(lambda: not group_members(pgid), timeout=5, what="job process group gone")

    cluster.worker("e2e-other")
    wait_for_sync(lambda: job_status(address, job_id).status == "SUCCEEDED", timeout=30, what="job done")
    job = job_status(address, job_id)
    # max_retries=0 and still done: an interruption does not spend a retry.
    assert job.attempts == 2 and job.output == "done on 2\n"
    assert [a.worker_id for a in job.attempt_history] == ["e2e-short", "e2e-other"]
    assert "interrupted" in job.attempt_history[0].error


def test_server_sigterm_stops_cleanly(cluster: Cluster):
    server, address = cluster.server()
    assert submit(address, command="true")
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    assert time.monotonic() - started < 10
    assert "Traceback" not in server.log()


def test_server_without_postgres_answers_unavailable(cluster: Cluster):
    """A server started while PostgreSQL is unreachable: clear UNAVAILABLE, no hang, no traceback."""
    dead_pg = f"postgresql://postgres@127.0.0.1:{free_port()}/jobcluster"
    port = free_port()
    server, address = cluster.server(port, wait_ready=False, DATABASE_URL=dead_pg)
    wait_for_sync(lambda: port_open(port), timeout=20, what="server listening")
    started = time.monotonic()
    run = cluster.client("-cmd", "true", "-servers", address)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "PostgreSQL is not reachable" in run.stderr, run.stderr
    assert time.monotonic() - started < 30
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    assert "Traceback" not in server.log()


def test_server_without_redis_answers_unavailable_and_keeps_the_job(cluster: Cluster, settings):
    """PostgreSQL up, Redis down: the job is stored, the answer says so, the same key later queues it."""
    _, address = cluster.server(REDIS_ADDR=f"127.0.0.1:{free_port()}")
    run = cluster.client("-cmd", "echo kept", "-servers", address, "-idempotency-key", "k-redis-down")
    assert run.returncode == 3, run.stdout + run.stderr
    assert "Redis is unavailable" in run.stderr and "same idempotency key" in run.stderr, run.stderr
    job_id = re.search(UUID, run.stderr).group(0)
    assert job_status(address, job_id).status == "QUEUED"
    # A server with a working Redis takes the same submission and queues the stored job.
    _, good = cluster.server()
    cluster.worker("e2e-1")
    again = cluster.client("-cmd", "echo kept", "-servers", good, "-idempotency-key", "k-redis-down")
    assert again.returncode == 0, again.stdout + again.stderr
    assert job_id in again.stdout and job_status(good, job_id).output == "kept\n"


@pytest.mark.long("waits for cron ticks through the client: ~6.5 s")
def test_client_saves_cron_entries_and_shows_schedules_and_cluster(cluster: Cluster):
    _, address = cluster.server(CRON_MIN_INTERVAL="5s")
    cluster.worker("e2e-1")
    path = cluster.jobs_file(
        {
            "jobs": [
                {"name": "report", "command": "echo report", "cron": "0 6 * * *", "timezone": "Europe/Paris"},
                {"name": "now", "command": "echo now"},
            ]
        }
    )
    run = cluster.client("-file", str(path), "-servers", address)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "schedule 'report' saved" in run.stdout and "Europe/Paris" in run.stdout
    listed = cluster.client("-schedules", "-servers", address)
    assert listed.returncode == 0 and "report" in listed.stdout and "enabled" in listed.stdout, listed.stdout
    ran = cluster.client("-run-schedule", "report", "-servers", address)
    assert ran.returncode == 0 and "report" in ran.stdout and "SUCCEEDED" in ran.stdout, ran.stdout + ran.stderr
    paused = cluster.client("-pause-schedule", "report", "-servers", address)
    assert paused.returncode == 0 and "paused" in paused.stdout
    # The same file again keeps it paused (it once resumed it), and says so; "enabled" in the file decides.
    again = cluster.client("-file", str(path), "-servers", address)
    assert again.returncode == 0 and "kept paused" in again.stdout, again.stdout + again.stderr
    assert "paused" in cluster.client("-schedules", "-servers", address).stdout
    resumed_file = cluster.jobs_file(
        [
            {
                "name": "report",
                "command": "echo report",
                "cron": "0 6 * * *",
                "timezone": "Europe/Paris",
                "enabled": True,
            }
        ],
        name="resume.json",
    )
    resumed = cluster.client("-file", str(resumed_file), "-servers", address)
    assert resumed.returncode == 0 and "next run" in resumed.stdout, resumed.stdout + resumed.stderr
    assert "enabled" in cluster.client("-schedules", "-servers", address).stdout
    missing = cluster.client("-delete-schedule", "nope", "-servers", address)
    assert missing.returncode == 2 and "no schedule named 'nope'" in missing.stderr
    bad = cluster.jobs_file(
        [
            {"name": "first", "command": "true", "cron": "0 5 * * *"},
            {"name": "x", "command": "true", "cron": "99 * * * *"},
        ],
        name="bad.json",
    )
    refused = cluster.client("-file", str(bad), "-servers", address)
    assert refused.returncode == 2 and "invalid cron expression" in refused.stderr
    assert "bad.json: job 2 ('x')" in refused.stderr and "nothing was submitted" in refused.stderr
    assert "first" not in cluster.client("-schedules", "-servers", address).stdout  # checked before any save
    # A rule only the server knows (its CRON_MIN_INTERVAL) names the entry and what was saved before it.
    fast = cluster.jobs_file(
        [
            {"name": "slow", "command": "true", "cron": "0 4 * * *"},
            {"name": "fast", "command": "true", "cron": "* * * * * *"},
            {"command": "echo never"},
        ],
        name="fast.json",
    )
    too_fast = cluster.client("-file", str(fast), "-servers", address)
    assert too_fast.returncode == 2, too_fast.stdout + too_fast.stderr
    assert "fast.json: job 2 ('fast')" in too_fast.stderr and "saved before it: slow" in too_fast.stderr
    assert "no job was submitted" in too_fast.stderr
    wait_for_sync(
        lambda: "leader    " + address in cluster.client("-cluster", "-servers", address).stdout,
        timeout=15,
        what="cluster view with the leader",
    )
    shown = cluster.client("-cluster", "-servers", address)
    assert "e2e-1" in shown.stdout and "alive" in shown.stdout and "pending_jobs=" in shown.stdout, shown.stdout


def test_client_watch_cancel_and_dead_letters(cluster: Cluster, redis_sync):
    _, address = cluster.server()
    cluster.worker("e2e-1")
    slow = submit(address, command="for i in 1 2 3; do echo line $i; sleep 0.4; done")
    watched = cluster.client("-watch", slow, "-servers", address)
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout == "line 1\nline 2\nline 3\n" and "[SUCCEEDED" in watched.stderr
    long = submit(address, command="sleep 60")
    wait_for_sync(lambda: job_status(address, long).status == "RUNNING", timeout=20, what="RUNNING")
    cancelled = cluster.client("-cancel", long, "-servers", address)
    assert cancelled.returncode == 0 and "CANCELLED" in cancelled.stdout, cancelled.stderr
    again = cluster.client("-cancel", long, "-servers", address)
    assert again.returncode == 2 and "already ended (CANCELLED)" in again.stderr
    dead = submit(address, command="exit 4", max_retries=0)
    wait_for_sync(lambda: redis_sync.lrange(keys.DLQ, 0, -1) == [dead], timeout=20, what="dead letter")
    listed = cluster.client("-dlq", "-servers", address)
    assert dead in listed.stdout and "retries used up" in listed.stdout, listed.stdout
    retried = cluster.client("-retry-dlq", "all", "-servers", address)
    assert retried.returncode == 0 and "1 job(s) back in the queue" in retried.stdout
    wait_for_sync(
        lambda: job_status(address, dead).attempts == 2 and job_status(address, dead).status == "FAILED",
        timeout=20,
        what="retried job failing again",
    )
    purged = cluster.client("-purge-dlq", "all", "-servers", address)
    assert purged.returncode == 0 and "1 id(s) removed" in purged.stdout
    recent = cluster.client("-list", "-since", "10m", "-text", "line", "-servers", address)
    assert recent.returncode == 0 and slow in recent.stdout and long not in recent.stdout, recent.stdout
    bad_since = cluster.client("-list", "-since", "someday", "-servers", address)
    assert bad_since.returncode == 2 and "-since" in bad_since.stderr


def test_client_follows_twenty_jobs_of_300_kb_output_to_the_end(cluster: Cluster):
    """Once `python -m client -file` exited 3 (RESOURCE_EXHAUSTED) on these although every job succeeded."""
    _, address = cluster.server()
    cluster.worker("e2e-1", JOB_OUTPUT_LIMIT="256k")
    path = cluster.jobs_file(
        [{"name": f"big{n}", "command": f"head -c {300 * 1024} /dev/zero | tr '\\0' x"} for n in range(20)]
    )
    run = cluster.client("-file", str(path), "-servers", address)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    assert "20/20 succeeded" in run.stdout
