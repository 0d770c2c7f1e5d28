"""What another local user (``nobody``) can reach of etcd: commands run as that user, all at once, each
for at most a few seconds (etcdctl 3.4 retries a refused TLS handshake until it is killed)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass

OTHER_USER, OTHER_GROUP = "nobody", "nogroup"
ETCDCTL_ENV = {"PATH": "/usr/bin:/bin", "ETCDCTL_API": "3", "HOME": "/"}


@dataclass(frozen=True)
class Attempt:
    """One command's outcome: its exit status (None: still trying when its time was up) and output."""

    argv: tuple[str, ...]
    returncode: int | None
    output: str

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0

    def __str__(self) -> str:
        status = "timed out" if self.returncode is None else f"exit {self.returncode}"
        return f"{' '.join(self.argv)}: {status}: {self.output[-300:]!r}"


def run_all(
    commands: list[list[str]], *, as_other_user: bool, timeout: float = 6.0, stdin: bytes = b""
) -> list[Attempt]:
    """Run ``commands`` side by side (as ``nobody`` when ``as_other_user``), killing what runs past ``timeout``."""
    who = {"user": OTHER_USER, "group": OTHER_GROUP, "extra_groups": []} if as_other_user else {}
    procs = [
        subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd="/",
            env=ETCDCTL_ENV,
            start_new_session=True,
            **who,
        )
        for argv in commands
    ]
    deadline = time.monotonic() + timeout
    attempts = []
    for argv, proc in zip(commands, procs):
        try:
            out, _ = proc.communicate(stdin, timeout=max(0.1, deadline - time.monotonic()))
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            code = None
        attempts.append(Attempt(tuple(argv), code, out.decode(errors="replace")))
    return attempts
