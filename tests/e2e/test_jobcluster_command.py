"""The `jobcluster` command (.venv/bin/jobcluster, client/cli.py) against a real server and worker: every
subcommand does what the matching `python -m client` mode does, with its exit codes, and `-json` gives
output a script can read (integers as numbers)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from devtools.services import free_port
from jobcluster import keys
from tests.e2e.conftest import Cluster, job_status, submit
from tests.helpers import wait_for_sync

JOBCLUSTER = Path(sys.executable).with_name("jobcluster")
ROOT = Path(__file__).resolve().parents[2]


def jc(cluster: Cluster, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(JOBCLUSTER), *args],
        cwd=cluster.workdir,
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_command_is_installed_and_its_help_has_examples():
    assert JOBCLUSTER.exists(), "make deps installs the jobcluster command into .venv/bin"
    shown = subprocess.run([str(JOBCLUSTER), "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0
    for command in ("submit", "run", "status", "watch", "list", "cancel", "dlq", "schedules", "cluster"):
        assert f"\n  {command} " in shown.stdout, command
    assert "examples:" in shown.stdout and "jobcluster submit 'echo hello'" in shown.stdout
    assert "`" not in shown.stdout
    flags = subprocess.run([str(JOBCLUSTER), "submit", "-h"], capture_output=True, text=True, timeout=30)
    assert flags.returncode == 0 and "usage: jobcluster submit" in flags.stdout and "-max-retries" in flags.stdout


def test_mistakes_are_named_and_exit_2():
    wrong = subprocess.run([str(JOBCLUSTER), "sumbit", "true"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 2 and "unknown command 'sumbit'" in wrong.stderr and "submit" in wrong.stderr
    typo = subprocess.run([str(JOBCLUSTER), "submit", "true", "-cmnd", "x"], capture_output=True, text=True, timeout=30)
    assert typo.returncode == 2 and "unknown flag: -cmnd (did you mean -cmd?)" in typo.stderr, typo.stderr
    assert len(typo.stderr.splitlines()) == 2  # the flag named, not a usage block
    classic = subprocess.run([sys.executable, "-m", "client", "-cmnd", "x"], capture_output=True, text=True, timeout=30)
    assert classic.returncode == 2 and "unknown flag: -cmnd (did you mean -cmd?)" in classic.stderr
    missing = subprocess.run([str(JOBCLUSTER), "dlq", "retry"], capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "give the ids to retry, or all" in missing.stderr


def test_every_subcommand_against_a_cluster(cluster: Cluster, redis_sync):
    _, address = cluster.server()
    cluster.worker("jc-1")
    servers = ("-servers", address)

    ok = jc(cluster, "submit", "echo from-jobcluster", "-name", "greet", *servers)
    assert ok.returncode == 0, ok.stderr
    assert "1/1 succeeded" in ok.stdout and "from-jobcluster" in ok.stdout
    failed = jc(cluster, "submit", "-cmd", "exit 7", "-max-retries", "0", *servers)
    assert failed.returncode == 1 and "0/1 succeeded" in failed.stdout

    made = json.loads(jc(cluster, "submit", "echo as-json", "-json", *servers).stdout)
    assert made["succeeded"] == 1 and made["total"] == 1
    job = made["jobs"][0]
    assert job["output"] == "as-json\n" and job["status"] == "SUCCEEDED"
    assert isinstance(job["created_at_ms"], int) and isinstance(job["exit_code"], int)

    path = cluster.jobs_file({"jobs": [{"name": "a", "command": "echo a"}, {"name": "b", "command": "echo b"}]})
    ran = jc(cluster, "run", str(path), *servers)
    assert ran.returncode == 0 and "2/2 succeeded" in ran.stdout, ran.stderr

    shown = json.loads(jc(cluster, "status", job["id"], "-json", *servers).stdout)
    assert [j["id"] for j in shown["jobs"]] == [job["id"]]
    unknown = jc(cluster, "status", "00000000-0000-0000-0000-000000000000", *servers)
    assert unknown.returncode == 2

    slow = submit(address, command="for i in 1 2; do echo line $i; sleep 0.3; done")
    watched = jc(cluster, "watch", slow, *servers)
    assert watched.returncode == 0 and watched.stdout == "line 1\nline 2\n", watched.stderr

    nosuch = jc(cluster, "list", "-schedule", "nosuch", *servers)
    assert nosuch.returncode == 2 and "no schedule named 'nosuch'" in nosuch.stderr  # not an empty table
    listed = jc(cluster, "list", "FAILED", *servers)
    assert listed.returncode == 0 and "exit 7" in listed.stdout
    listed_json = json.loads(jc(cluster, "list", "-limit", "2", "-json", *servers).stdout)
    assert len(listed_json["jobs"]) == 2 and all(isinstance(j["attempts"], int) for j in listed_json["jobs"])

    long = submit(address, command="sleep 60")
    wait_for_sync(lambda: job_status(address, long).status == "RUNNING", timeout=20, what="RUNNING")
    cancelled = jc(cluster, "cancel", long, *servers)
    assert cancelled.returncode == 0 and "CANCELLED" in cancelled.stdout, cancelled.stderr

    wait_for_sync(lambda: len(redis_sync.lrange(keys.DLQ, 0, -1)) == 1, timeout=20, what="the dead letter")
    dead = jc(cluster, "dlq", *servers)
    assert dead.returncode == 0 and "exit code 7" in dead.stdout
    retried = json.loads(jc(cluster, "dlq", "retry", "all", "-json", *servers).stdout)
    assert retried["count"] == 1
    wait_for_sync(lambda: len(redis_sync.lrange(keys.DLQ, 0, -1)) == 1, timeout=20, what="dead again")
    purged = jc(cluster, "dlq", "purge", "all", *servers)
    assert purged.returncode == 0 and "1 id(s) removed" in purged.stdout

    schedule = cluster.jobs_file([{"name": "tick", "command": "true", "cron": "0 0 1 1 *"}], "cron.json")
    assert jc(cluster, "run", str(schedule), *servers).returncode == 0
    assert "tick" in jc(cluster, "schedules", *servers).stdout
    paused = jc(cluster, "schedules", "pause", "tick", *servers)
    assert paused.returncode == 0 and "paused" in paused.stdout
    nosuch = jc(cluster, "schedules", "resume", "nosuch", *servers)
    assert nosuch.returncode == 2

    info = json.loads(jc(cluster, "cluster", "-json", *servers).stdout)
    assert info["answered_by"] == address and [w["id"] for w in info["workers"]] == ["jc-1"]

    nobody = jc(cluster, "submit", "true", "-servers", f"127.0.0.1:{free_port()}")
    assert nobody.returncode == 3

    # A reader that stops early (`| head -1`) while 300 KB are still to be written: no traceback.
    big = submit(address, command="head -c 300000 /dev/zero | tr '\\0' x | fold -w 100")
    wait_for_sync(lambda: job_status(address, big).status == "SUCCEEDED", timeout=20, what="the big job")
    piped = subprocess.run(
        f"'{JOBCLUSTER}' status {big} -servers {address} | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        cwd=cluster.workdir,
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.stdout == f"job {big}  SUCCEEDED\n"
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr
    assert piped.returncode == 0


def test_make_run_client_passes_the_command_as_typed(cluster: Cluster):
    """Quotes and $VARS reach the job's shell: `make run-client CMD='echo "it works" && echo $HOME'`."""
    _, address = cluster.server()
    cluster.worker("jc-make")
    env = {**cluster.env(), "SERVERS": address}
    ran = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "run-client", 'CMD=echo "it works" && echo "home=$HOME"'],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    job_id = next(line.split()[1] for line in ran.stdout.splitlines() if line.startswith("submitted "))
    lines = job_status(address, job_id).output.splitlines()
    assert lines[0] == "it works" and lines[1].startswith("home=/") and len(lines[1]) > len("home=/"), lines


def test_status_of_a_running_job_shows_what_it_printed_so_far(cluster: Cluster):
    """GetJobStatus (so `jobcluster status` and /api/jobs/<id>) of a RUNNING job carries its live tail."""
    _, address = cluster.server()
    cluster.worker("jc-live")
    job_id = submit(address, command="echo first line; echo second line; sleep 30")
    wait_for_sync(
        lambda: job_status(address, job_id).output == "first line\nsecond line\n",
        timeout=20,
        what="the live output in GetJobStatus",
    )
    assert job_status(address, job_id).status == "RUNNING"
    shown = jc(cluster, "status", job_id, "-servers", address)
    assert "RUNNING" in shown.stdout and "    second line" in shown.stdout, shown.stdout


def test_a_job_no_worker_can_take_says_so_while_it_waits(cluster: Cluster):
    """No live worker at all: the follow line names why the job waits, instead of '1 queued' forever."""
    _, address = cluster.server()
    proc = subprocess.Popen(
        [str(JOBCLUSTER), "submit", "true", "-servers", address],
        cwd=cluster.workdir,
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        wait_for_sync(
            lambda: any("QUEUED: no live worker" in line for line in seen),
            timeout=20,
            what=f"the reason on the follow line (got {seen})",
        )
    finally:
        proc.kill()
        proc.wait()
