"""What `-h` and errors look like: plain text (no reStructuredText marks), one error shape for refused calls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from client import display

JOBCLUSTER = Path(sys.executable).with_name("jobcluster")


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "client", "-h"],
        [sys.executable, "-m", "worker", "-h"],
        [sys.executable, "-m", "scheduler_server", "-h"],
        [sys.executable, "-m", "webui", "-h"],
        [str(JOBCLUSTER), "--help"],
        [str(JOBCLUSTER), "list", "-h"],
    ],
)
def test_help_is_plain_text(argv):
    shown = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.startswith("usage:")
    assert "`" not in shown.stdout, [line for line in shown.stdout.splitlines() if "`" in line]


class _Refused(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.NOT_FOUND

    def details(self):
        return "no job with id 'x'"


class _Pool:
    def call(self, fn):
        raise _Refused()


def test_every_refused_call_reads_error_code_details(capsys):
    assert display.show_jobs(_Pool(), ["x"], out=sys.stdout) == 2
    assert capsys.readouterr().err == "error: NOT_FOUND: no job with id 'x'\n"
    assert display.rpc_error(_Refused()) == "error: NOT_FOUND: no job with id 'x'"
