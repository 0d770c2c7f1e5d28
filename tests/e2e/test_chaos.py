"""The 1,000-job `make chaos`: every kind of kill, a Redis freeze, PostgreSQL and etcd restarts, and the checks.

scripts/chaos.py starts its own Redis, PostgreSQL and etcd (it freezes and
restarts them, so not the session's) and prints a table; it exits 0 only when
every check found no violation.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.long("1,000 jobs under every kind of fault: ~30 s (make chaos runs 10,000)")
@pytest.mark.chaos
@pytest.mark.timeout(150)
def test_a_thousand_jobs_under_faults_break_no_promise() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "chaos.py"), "--jobs", "1000", "--quick", "--timeout", "60"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=140)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the script stops the cluster and services it started
        out, _ = proc.communicate(timeout=60)
    run = subprocess.CompletedProcess(proc.args, proc.returncode, out)
    assert "kill -9 worker" in out and "kill -9 server" in out and "kill -9 leader" in out, out
    assert "SIGSTOP redis" in out, out
    assert run.returncode == 0, out[-6000:]
