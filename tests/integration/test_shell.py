"""run_shell with real processes: timeouts, process groups, output caps, environment."""

import asyncio
import os
import time

import pytest

from tests.helpers import group_members, wait_for
from worker.shell import job_env, run_shell


async def _group_gone(pgid: int) -> None:
    """SIGKILL is sent before run_shell returns; the kernel ends the processes a moment later."""
    await wait_for(lambda: group_members(pgid) == [], timeout=5, what=f"process group {pgid} to be empty")


async def _run(cmd, **kw):
    opts = dict(timeout=10.0, kill_grace=1.0, output_limit=64 * 1024, env=job_env("j1", 1))
    opts.update(kw)
    return await run_shell(cmd, **opts)


async def test_output_and_exit_code():
    r = await _run("echo out; echo err >&2; exit 3")
    assert r.exit_code == 3 and not r.timed_out and not r.truncated
    assert r.output == b"out\nerr\n"


async def test_stdin_is_closed():
    r = await _run("cat; echo after")
    assert r.exit_code == 0 and r.output == b"after\n"


async def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "pgid"
    cmd = f"echo $$ > {pidfile}; trap '' TERM; sleep 30 & sh -c 'sleep 30' & wait"
    started = time.monotonic()
    r = await _run(cmd, timeout=0.5, kill_grace=0.5)
    assert r.timed_out and "timed out after 0.5s" in r.error
    assert r.exit_code == 128 + 9  # all ignored TERM, so KILL came after the grace
    assert time.monotonic() - started < 5
    pgid = int(pidfile.read_text())
    await _group_gone(pgid)


async def test_leftover_background_processes_die_with_the_job(tmp_path):
    pidfile = tmp_path / "pgid"
    r = await _run(f"echo $$ > {pidfile}; sleep 60 > /dev/null 2>&1 & echo started")
    assert r.exit_code == 0 and r.output == b"started\n"
    await _group_gone(int(pidfile.read_text()))


async def test_output_over_the_cap_keeps_the_tail():
    r = await _run("head -c 3000000 /dev/zero | tr '\\0' a; echo; echo END", output_limit=10_000)
    assert r.truncated and len(r.output) == 10_000
    assert r.output.endswith(b"a\nEND\n")


async def test_cancel_kills_the_job_at_once(tmp_path):
    pidfile = tmp_path / "pgid"
    task = asyncio.create_task(_run(f"echo $$ > {pidfile}; sleep 30; echo never"))
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _group_gone(int(pidfile.read_text()))


async def test_job_env_has_no_worker_secrets(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://secret")
    monkeypatch.setenv("SHARED_TOKEN", "t")
    r = await _run("env", env=job_env("job-9", 2, passthrough=("SHARED_TOKEN",)))
    env = dict(line.split("=", 1) for line in r.output.decode().splitlines() if "=" in line)
    assert "DATABASE_URL" not in env and env["SHARED_TOKEN"] == "t"
    assert env["JOB_ID"] == "job-9" and env["JOB_ATTEMPT"] == "2"
    assert os.environ["DATABASE_URL"] == "postgresql://secret"
