"""``make start`` from a checkout in a private (0700) directory, as root: the ``postgres`` user cannot
enter it, so PostgreSQL keeps its data under /var/lib/jobcluster; a job still runs, ``make stop``
ends everything, and ``make clean``'s step removes that data.

The copy uses this checkout's venv through a symlink, and make runs with ``-o .venv/.installed``
so bootstrap never re-points the editable install at the copy; PYTHONPATH and the working
directory make the copy's code the code that runs (checked through the ``.pyc`` files the
servers and workers write into the copy).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.services import free_port
from tests.helpers import wait_for_sync
from tests.other_user import run_all

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the private-directory problem is root's")


def _copy_checkout(dest: Path) -> None:
    """This checkout's files (tracked and new, not ignored), as a fresh clone would have them."""
    if not (ROOT / ".git").exists():  # a tarball: everything but what make and the tests leave
        shutil.copytree(
            ROOT,
            dest,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(".venv", ".run", "log", ".env", ".servers", "__pycache__", ".*_cache"),
        )
        return
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _free_pair() -> int:
    """A port p with p+1 free too (make start gives etcd p and its peers p+1)."""
    while True:
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


def _pids(checkout: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text().split()[0]) for p in (checkout / ".run").glob("*.pid")}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture
def checkout() -> Iterator[Path]:
    private = Path(tempfile.mkdtemp(prefix="jobcluster-private-"))
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    checkout = private / "jobcluster"
    checkout.mkdir()
    _copy_checkout(checkout)
    (checkout / ".venv").symlink_to(sys.prefix)  # the venv running this test
    ports = {"redis": free_port(), "pg": free_port(), "etcd": _free_pair(), "webui": free_port()}
    (checkout / ".env").write_text(
        f"REDIS_ADDR=127.0.0.1:{ports['redis']}\n"
        f"DATABASE_URL=postgresql://jobcluster@127.0.0.1:{ports['pg']}/jobcluster\n"
        f"ETCD_ENDPOINTS=127.0.0.1:{ports['etcd']}\n"
        f"WEBUI_ADDR=127.0.0.1:{ports['webui']}\n"
    )
    try:
        yield checkout
    finally:
        for pid in _pids(checkout).values():  # only what this checkout's make start recorded
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        _make(checkout, "-s", "-o", ".venv/.installed", "clean")
        shutil.rmtree(private, ignore_errors=True)


def _logs_and_etcd_are_closed_to_other_users(checkout: Path, base_port: int) -> None:
    """log/ is 0700 with 0600 files (the services' own included), no log line names the leader's lease, and
    another user, even with the checkout's directories open to passers-by, reads no log and reaches no lease."""
    log = checkout / "log"
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in log.iterdir()}
    assert stat.S_IMODE(log.stat().st_mode) == 0o700 and set(modes.values()) == {0o600}, modes
    assert {"redis.log", "postgres.log", "etcd.log", f"server-{base_port}.log", "worker-1.log", "webui.log"} <= set(
        modes
    )
    etcd = next(
        line.split("=", 1)[1]
        for line in (checkout / ".env").read_text().splitlines()
        if line.startswith("ETCD_ENDPOINTS=")
    )
    tls = checkout / ".run" / "etcd-tls"
    files = [f"--cacert={tls / 'ca.pem'}", f"--cert={tls / 'etcd-client.pem'}", f"--key={tls / 'etcd-client.key'}"]
    listed = run_all([["etcdctl", f"--endpoints={etcd}", *files, "lease", "list"]], as_other_user=False)[0]
    leases = [lease.lstrip("0") for lease in listed.output.splitlines()[1:]]
    assert listed.succeeded and leases, listed
    logged = "".join(f.read_text(errors="replace") for f in log.iterdir()).lower()
    assert not [lease for lease in leases if lease in logged], "a log names a lease"
    peer = f"http://127.0.0.1:{int(etcd.rsplit(':', 1)[1]) + 1}/leases"
    checkout.parent.chmod(0o711)  # as a checkout in a home directory others may pass through
    try:
        theirs = run_all(
            [
                ["cat", str(log / f"server-{base_port}.log")],
                ["ls", str(log)],
                ["cat", str(tls / "etcd-client.key")],
                ["etcdctl", f"--endpoints={etcd}", "lease", "list"],
                ["etcdctl", f"--endpoints={etcd}", *files, "lease", "list"],
                ["curl", "-sS", "--fail", "--max-time", "4", "-X", "POST", "--data-binary", "x", peer],
            ],
            as_other_user=True,
            timeout=5,
        )
    finally:
        checkout.parent.chmod(0o700)
    assert not [a for a in theirs if a.succeeded], "\n".join(map(str, theirs))


def _make(checkout: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    # Nothing from this process's environment: .env alone says where the services are.
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(checkout),
    }
    return subprocess.run(["make", *args], cwd=checkout, env=env, capture_output=True, text=True, timeout=timeout)


def test_make_start_works_from_a_private_directory_and_make_stop_ends_it_all(checkout: Path) -> None:
    base_port = free_port()
    # The server's port is held by a socket that does not listen, as a connection of another program can hold a
    # port of Linux's ephemeral range, until the server has failed to bind it once: make start starts it again.
    holder = socket.socket()
    holder.bind(("127.0.0.1", base_port))
    server_log = checkout / "log" / f"server-{base_port}.log"

    def release() -> None:
        try:
            wait_for_sync(
                lambda: server_log.exists() and "cannot start" in server_log.read_text(),
                timeout=60,
                what="the server failing to bind its held port",
            )
        finally:
            holder.close()

    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    started = _make(
        checkout, "-o", ".venv/.installed", "start", "SERVER_COUNT=1", "WORKER_COUNT=1", f"BASE_PORT={base_port}"
    )
    releaser.join(5)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"server  127.0.0.1:{base_port} stopped at start" in started.stdout, started.stdout
    hash_dir = next(line for line in started.stdout.splitlines() if line.strip().startswith("postgres"))
    assert "/var/lib/jobcluster/" in hash_dir and "the postgres user cannot enter" in hash_dir, started.stdout
    secrets = checkout / ".run" / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in secrets.iterdir()} == {0o600}

    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "PYTHONPATH": str(checkout)}
    job = subprocess.run(
        [sys.executable, "-m", "client", "-cmd", "echo hello from a private checkout"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert job.returncode == 0 and "SUCCEEDED" in job.stdout, job.stdout + job.stderr
    assert "hello from a private checkout" in job.stdout

    # make status logs in to Redis and etcd as the programs do.
    def status_with_leader() -> str | None:
        out = _make(checkout, "-s", "-o", ".venv/.installed", "status").stdout
        return out if f"leader: 127.0.0.1:{base_port}" in out else None

    status = wait_for_sync(status_with_leader, timeout=20, what="make status naming the leader")
    assert "queues: pending_jobs=0" in status, status
    _logs_and_etcd_are_closed_to_other_users(checkout, base_port)

    # The copy's code ran: the server and the worker compiled its modules there.
    assert list((checkout / "scheduler_server" / "__pycache__").glob("server.*.pyc"))
    assert list((checkout / "worker" / "__pycache__").glob("worker.*.pyc"))
    pids = _pids(checkout)
    assert {"redis", "postgres", "etcd", f"server-{base_port}", "worker-1", "webui"} <= set(pids)
    assert Path(f"/proc/{pids[f'server-{base_port}']}/cwd").resolve() == checkout.resolve()

    stopped = _make(checkout, "-o", ".venv/.installed", "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    wait_for_sync(
        lambda: not any(_alive(pid) for pid in pids.values()),
        timeout=15,
        what=f"every process of make start gone: {pids}",
    )
    data_home = Path(hash_dir.split("data ", 1)[1].split(",", 1)[0]).parent
    assert data_home.is_dir()
    cleaned = _make(checkout, "-o", ".venv/.installed", "clean")
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert not data_home.exists() and not (checkout / ".run").exists()
