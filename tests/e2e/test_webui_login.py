"""The login limit of the real web UI (``python -m webui`` under uvicorn): spoofed and concurrent logins.

Needs no servers: a password login never calls them.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from devtools.services import free_port, port_open
from tests.helpers import wait_for_sync
from webui.sessions import MAX_FAILURES

PASSWORD = "correct horse battery"
UI = Callable[..., str]


@pytest.fixture
def start_ui(tmp_path: Path) -> Iterator[UI]:
    """``start_ui(**env)``: ``python -m webui`` with a password, listening on loopback; its URL."""
    procs: list[subprocess.Popen[bytes]] = []
    password_file = tmp_path / "webui.pw"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)

    def start(**env: str) -> str:
        port = free_port()
        log = open(tmp_path / f"webui-{port}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "webui", "--addr", f"127.0.0.1:{port}", "--servers", "127.0.0.1:1"],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1", "WEBUI_PASSWORD_FILE": str(password_file), **env},
        )
        log.close()
        procs.append(proc)
        wait_for_sync(lambda: port_open(port) or proc.poll() is not None, timeout=30, what="web UI listening")
        assert proc.poll() is None, (tmp_path / f"webui-{port}.log").read_text()
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


async def wrong_logins(url: str, forwarded_for: list[str]) -> list[tuple[int, str]]:
    """One wrong-password POST of /login per entry, all at once, each with ``X-Forwarded-For: <entry>``;
    the status and page of each."""
    async with httpx2.AsyncClient(base_url=url, timeout=30) as client:
        page = await client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text

        async def post(address: str) -> tuple[int, str]:
            r = await client.post(
                "/login",
                data={"csrf": csrf.group(1), "password": "not the password"},
                headers={"X-Forwarded-For": address},
            )
            return r.status_code, r.text

        return list(await asyncio.gather(*(post(a) for a in forwarded_for)))


async def test_spoofed_and_concurrent_logins_hit_the_per_address_limit(start_ui: UI) -> None:
    url = start_ui()
    answers = await wrong_logins(url, [f"10.9.0.{i}" for i in range(30)])
    # Without WEBUI_TRUSTED_PROXIES the header means nothing: all 30 come from 127.0.0.1, and are
    # counted before the password is looked at, so concurrency does not get more tries either.
    statuses = [status for status, _ in answers]
    assert Counter(statuses) == {401: MAX_FAILURES, 429: 30 - MAX_FAILURES}, statuses
    assert all("Too many failed logins from 127.0.0.1" in page for status, page in answers if status == 429)


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(start_ui: UI) -> None:
    url = start_ui(WEBUI_TRUSTED_PROXIES="127.0.0.0/8")
    answers = await wrong_logins(url, ["10.9.0.1"] * 8 + ["10.9.0.2"] * 2)
    statuses = [status for status, _ in answers]
    assert statuses[8:] == [401, 401], statuses  # 10.9.0.2 is not held back by 10.9.0.1's failures
    assert Counter(statuses[:8]) == {401: MAX_FAILURES, 429: 8 - MAX_FAILURES}, statuses
    assert all("Too many failed logins from 10.9.0.1" in page for status, page in answers if status == 429)
