"""The worker unit's capabilities (devtools/systemd.py) are enough, and each one is needed.

A process limited as the unit limits the worker (no_new_privs, bounding set =
WORKER_CAPABILITIES, root) starts a job as JOB_USER through its job launcher, kills its
group at the timeout and removes what it left in its scratch directory (a 0700
directory, a read-only file, a sticky directory). Without any one capability,
one of those steps fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.systemd import WORKER_CAPABILITIES

SETPRIV = shutil.which("setpriv")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the worker unit runs as root; so must this test"),
    pytest.mark.skipif(SETPRIV is None, reason="util-linux setpriv is not installed"),
]

#: One attempt as the worker runs it: scratch directory, the job as JOB_USER, a timeout, the cleanup.
ATTEMPT = """
import asyncio, json, os, sys, time
from pathlib import Path
from worker.launch import Launcher
from worker.sandbox import Sandbox, resolve_job_user
from worker.shell import run_shell

async def main():
    user, run_as = resolve_job_user(sys.argv[2])
    sandbox = Sandbox(user, run_as, Path(sys.argv[1]))
    scratch = sandbox.create("caps", 1)
    started = time.monotonic()
    launcher = Launcher.start("caps")
    result = await run_shell(
        "id -u; mkdir -m 700 private; echo x > private/f; chmod 400 private/f; mkdir -m 1777 sticky; "
        "touch sticky/f; sleep 12 & wait",
        timeout=1, kill_grace=0.5, output_limit=4096, env=sandbox.env({"PATH": "/usr/bin:/bin"}, scratch),
        cwd=scratch.path, run_as=run_as, launcher=launcher)
    launcher.close()
    took = time.monotonic() - started
    await sandbox.remove(scratch)
    print(json.dumps({"output": result.output.decode(errors="replace").strip(), "timed_out": result.timed_out,
                      "seconds": took, "left": os.path.exists(scratch.path)}))

asyncio.run(main())
"""


def _attempt(root: Path, job_user: str, caps: tuple[str, ...]) -> dict[str, object] | str:
    """Run ATTEMPT limited to ``caps``; its JSON line, or its stderr when it failed."""
    assert SETPRIV is not None
    bounding = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])
    done = subprocess.run(
        [
            SETPRIV,
            "--no-new-privs",
            "--inh-caps=-all",
            f"--bounding-set={bounding}",
            "--",
            sys.executable,
            "-c",
            ATTEMPT,
            str(root),
            job_user,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    if done.returncode != 0:
        return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A JOB_WORKDIR_ROOT the job user can pass through (as /tmp is)."""
    for path in (tmp_path.parent, tmp_path):
        os.chmod(path, 0o711)
    return tmp_path / "jobs"


def test_the_unit_capabilities_run_a_job_as_the_job_user(root: Path, job_user: str) -> None:
    import pwd

    got = _attempt(root, job_user, WORKER_CAPABILITIES)
    assert isinstance(got, dict), got
    assert got["output"] == str(pwd.getpwnam(job_user).pw_uid)  # the launcher switched to JOB_USER
    # its group (another uid) was killed at the 1 s timeout, not left to its 12 s sleep
    assert got["timed_out"] is True and float(str(got["seconds"])) < 8
    assert got["left"] is False  # its private and sticky directories were removed with their files


@pytest.mark.long("one systemd unit start per capability taken away, each waiting for the worker to fail: ~18 s")
@pytest.mark.parametrize("missing", WORKER_CAPABILITIES)
def test_each_capability_is_needed(root: Path, job_user: str, missing: str) -> None:
    got = _attempt(root, job_user, tuple(c for c in WORKER_CAPABILITIES if c != missing))
    ok = (
        isinstance(got, dict)
        and got.get("left") is False
        and got.get("timed_out") is True
        and float(str(got.get("seconds"))) < 8
        and str(got.get("output", "")).isdigit()
        and got["output"] != "0"
    )
    assert not ok, f"without {missing} the attempt still worked: {got}"
