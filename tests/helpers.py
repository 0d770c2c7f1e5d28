"""Waiting for conditions with a deadline (never a bare sleep) and small shared helpers."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker import launcher


async def wait_for(
    cond: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll ``cond`` (sync or async) until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_for_sync(
    cond: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def procs_running(*argv: str) -> list[tuple[int, int]]:
    """(pid, uid) of live (not zombie) processes whose command line is exactly ``argv``."""
    want = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read() != want:
                    continue
            with open(f"/proc/{entry}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if not status["State"].strip().startswith("Z"):
            found.append((int(entry), int(status["Uid"].split()[0])))
    return found


def launchers_of(parent: int) -> list[int]:
    """Pids of the job launchers (worker/launcher.py) started by process ``parent``."""
    return [pid for pid, worker_pid, _ in launcher.launchers() if worker_pid == parent]
