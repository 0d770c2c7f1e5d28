"""`make logs`: the last lines of each log, etcd's raft chatter left out unless ALL=1."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ETCD = """[WARNING] Deprecated '--logger=capnslog' flag is set; use '--logger=zap' flag instead
2026-12-02 13:05:16.085196 I | etcdserver: starting member b71f75320dc06a6c in cluster 1c45a069f3a1d796
raft2026/12/02 13:05:17 INFO: b71f75320dc06a6c became leader at term 2
2026-12-02 13:05:17.087806 I | embed: ready to serve client requests
"""


def _logs(workdir: Path, *args: str) -> str:
    return subprocess.run(
        ["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "logs", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def test_make_logs_leaves_out_raft_chatter_unless_asked(tmp_path: Path):
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "etcd.log").write_text(ETCD)
    (tmp_path / "log" / "worker-1.log").write_text("".join(f"line {i}\n" for i in range(100)))
    shown = _logs(tmp_path)
    assert "ready to serve client requests" in shown and "starting member" in shown
    assert "became leader" not in shown and "Deprecated" not in shown
    assert "line 99" in shown and "line 69" not in shown and "line 70" in shown  # the last 30
    everything = _logs(tmp_path, "ALL=1")
    assert "became leader" in everything and "Deprecated" in everything


def test_make_logs_without_logs_says_so(tmp_path: Path):
    assert "no logs yet (make start)" in _logs(tmp_path)
