"""Private Redis, PostgreSQL and etcd processes on loopback, for tests and the dev cluster.

PostgreSQL refuses to run as root, so as root it runs as the ``postgres``
user, with a data directory that user owns. Given a :class:`Login`, a service
starts with passwords on (see :mod:`.lockdown`); without one it is open to
every local process, as the tests' services are by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from devtools import lockdown
from devtools.tls import ETCD_NAMES, DevTls, ensure_etcd_tls

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


class ServiceError(RuntimeError):
    """A service did not come up; the message says which and where its log is."""


@dataclass(frozen=True)
class Login:
    """Who the programs log in as, and the file (mode 0600) that holds the password; made when missing."""

    user: str
    password_file: Path

    @property
    def password(self) -> str:
        return lockdown.secret_file(self.password_file)


@dataclass
class Service:
    """One running service process."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path
    url: str
    extra: dict[str, str] = field(default_factory=dict)
    login: Login | None = None  # None: no password asked
    tls: DevTls | None = None  # etcd locked: its CA, and the programs' certificate (DevTls.etcd_client_env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then after ``timeout`` SIGKILL of the process and every process below it; returns once
        all have exited (the service's own process reaped)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_tree(self.proc, timeout)

    def kill(self) -> None:
        """SIGKILL of the process and every process below it, as a crash; returns once all have exited."""
        if self.proc.poll() is None:
            kill_tree(self.proc, 10.0)


def kill_tree(root: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGKILL ``root`` and its descendants and wait, up to ``timeout``, until each has exited; reap ``root``.

    PostgreSQL's children outlive a postmaster killed alone (a checkpointer in the middle of its fsyncs, say)
    and keep its shared memory: a new start on that data directory then fails with "pre-existing shared
    memory block is still in use". The tree is stopped first (SIGSTOP: a stopped process forks no more, and
    the postmaster restarts no child), each process held by a pidfd, so no reused pid is ever signalled."""
    pidfds: dict[int, int] = {}
    try:
        _stop_tree(root.pid, pidfds)
        for fd in pidfds.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        running = list(pidfds.values())
        while running and time.monotonic() < deadline:
            select.select(running, [], [], deadline - time.monotonic())
            running = [fd for fd in running if not select.select([fd], [], [], 0)[0]]
        stuck = [pid for pid, fd in pidfds.items() if fd in running]
    finally:
        for fd in pidfds.values():
            os.close(fd)
    root.wait()
    if stuck:
        raise ServiceError(f"processes {stuck} had not exited {timeout:g}s after kill -9")


def _stop_tree(root: int, pidfds: dict[int, int]) -> None:
    """SIGSTOP ``root`` and every process below it, until no new one appears; each one's pidfd in ``pidfds``."""
    while True:
        procs = _procs()
        new = [pid for pid in _below(root, procs) if pid not in pidfds]
        if not new:
            return
        for pid in new:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            if pid != root and _procs([pid]).get(pid, (0, -1))[1] != procs[pid][1]:  # gone, its pid reused
                os.close(fd)
                continue
            pidfds[pid] = fd
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGSTOP)


def _procs(pids: list[int] | None = None) -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time), of ``pids`` or of every process, from /proc."""
    found = {}
    for pid in pids if pids is not None else [int(e) for e in os.listdir("/proc") if e.isdigit()]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
            found[pid] = (int(fields[1]), int(fields[19]))  # ppid, starttime (fields 4 and 22 of stat)
        except (OSError, IndexError, ValueError):
            continue
    return found


def _below(root: int, procs: dict[int, tuple[int, int]]) -> list[int]:
    """``root`` and its descendants in ``procs``."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def free_port() -> int:
    """A TCP port nobody listens on right now (on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_port(
    name: str, proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float, host: str = "127.0.0.1"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{name} exited with {proc.returncode} at start; see {log_path}:\n" + _tail(log_path))
        if port_open(port, host):
            return
        time.sleep(0.05)
    proc.kill()
    raise ServiceError(f"{name} did not listen on port {port} within {timeout:.0f}s; see {log_path}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def open_log(path: Path) -> BinaryIO:
    """``path`` opened for appending, mode 0600 (made so too when an older start left it readable by others):
    a log says what a service or program does, for its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def _spawn(cmd: list[str], log_path: Path, detach: bool, as_postgres: bool = False) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open_log(log_path) as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
            **(_postgres_user() if as_postgres else {}),
        )


def which(program: str) -> str | None:
    """Find a server binary on PATH or in PostgreSQL's versioned bin directories."""
    found = shutil.which(program)
    if found:
        return found
    for d in PG_BIN_DIRS:
        if (d / program).exists():
            return str(d / program)
    return None


def _need(program: str, package: str) -> str:
    path = which(program)
    if path is None:
        raise ServiceError(
            f"{program} not found: install the Debian package {package} "
            f"(apt-get install -y {package}) or run `make deps`"
        )
    return path


REDIS_CONF = "redis.conf"


def start_redis(
    data_dir: Path,
    port: int,
    log_path: Path,
    *,
    persist: bool = False,
    detach: bool = False,
    timeout: float = 20.0,
    login: Login | None = None,
) -> Service:
    """Redis from ``data_dir/redis.conf`` (mode 0600, rewritten each start, so an older ``.run`` gets the
    current settings): with ``persist``, an append-only file in ``data_dir``; with ``login``, its ACL user,
    and without a password only reads of the queue lists (:data:`lockdown.REDIS_READER_RULES`).

    With ``login``, Redis first listens only on a Unix socket in a new directory of mode 0700 (root's
    alone) while it loads its data, as an unrestricted default user: Redis 7.0.15 replays its
    append-only file as that user and would drop every MULTI/EXEC block in it otherwise. Once it has
    loaded, one MULTI opens the TCP port and restricts the default user; the socket is then removed."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)  # an older .run made it 0755, and the append-only files in it are 0644
    quoted = '"' + str(data_dir).replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = [
        f"port {0 if login is not None else port}",
        "bind 127.0.0.1",
        "protected-mode yes",
        "daemonize no",
        f"dir {quoted}",
        'save ""',
        f"appendonly {'yes' if persist else 'no'}",
    ]
    if persist:
        # AOF, fsync'd once a second: a crash of Redis or the machine loses at most the last second of
        # writes, and reconciliation puts those ids back from PostgreSQL. "always" would fsync per write.
        lines.append("appendfsync everysec")
    sock_dir = None
    if login is not None:
        sock_dir = Path(tempfile.mkdtemp(prefix="jobcluster-redis-"))  # 0700, short enough for sun_path
        lines += [
            "# TCP opens only once the data is loaded (devtools.services.start_redis);",
            "# until then the socket below, in a directory only root may enter, is the only way in.",
            f"unixsocket {sock_dir / 'redis.sock'}",
            "unixsocketperm 700",
            *lockdown.redis_acl_loading(login.user, login.password),
        ]
    conf = data_dir / REDIS_CONF
    conf.unlink(missing_ok=True)
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    proc = _spawn([_need("redis-server", "redis-server"), str(conf)], log_path, detach)
    if login is not None and sock_dir is not None:
        try:
            _open_when_loaded(proc, sock_dir / "redis.sock", port, login, log_path, timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            (sock_dir / "redis.sock").unlink(missing_ok=True)  # Redis keeps serving it; nobody can reach it
            sock_dir.rmdir()
    _wait_port("redis", proc, port, log_path, timeout)
    return Service("redis", proc, port, data_dir, log_path, f"127.0.0.1:{port}", login=login)


def _open_when_loaded(
    proc: subprocess.Popen[bytes], sock: Path, port: int, login: Login, log_path: Path, timeout: float
) -> None:
    """Once Redis has loaded its data (PING answers, not LOADING): restrict the default user and open the
    TCP port, in one MULTI, so no client reaches the port before the rules hold."""
    import redis  # only make start and locked tests need it here

    deadline = time.monotonic() + timeout
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=5, socket_connect_timeout=1)
    try:
        while True:
            if proc.poll() is not None:
                raise ServiceError(f"redis exited with {proc.returncode} at start; see {log_path}:\n" + _tail(log_path))
            try:
                client.ping()
                break
            except redis.ConnectionError:  # no socket yet, or LOADING (BusyLoadingError)
                if time.monotonic() > deadline:
                    raise ServiceError(f"redis did not load its data within {timeout:.0f}s; see {log_path}") from None
                time.sleep(0.05)
        pipe: Any = client.pipeline(transaction=True)  # (execute_command has no annotations)
        pipe.execute_command("CONFIG", "SET", "port", str(port))
        pipe.execute_command("ACL", "SETUSER", "default", *lockdown.redis_acl_loaded(login.user, login.password))
        try:
            pipe.execute()
        except redis.ResponseError as exc:
            raise ServiceError(f"redis could not listen on 127.0.0.1:{port} ({exc}); see {log_path}") from None
    finally:
        client.close()


def _postgres_user() -> dict[str, Any]:
    """As root, exec PostgreSQL as the ``postgres`` user (it refuses root); the pid stays postgres' own."""
    if os.geteuid() == 0:
        return {"user": "postgres", "group": "postgres", "extra_groups": [], "cwd": "/"}
    return {}


def _give_to_postgres(*paths: Path) -> None:
    if os.geteuid() == 0:
        for path in paths:
            shutil.chown(path, "postgres", "postgres")


def _wait_accepting(proc: subprocess.Popen[bytes], port: int, socket_dir: Path, log_path: Path, timeout: float) -> None:
    """Until PostgreSQL accepts connections: its port opens before it has finished starting up (crash
    recovery of an old data directory), when a connection gets "the database system is starting up".
    Asked over its socket as its superuser, who may log in there: a probe as another role (pg_isready's
    default, the OS user) would leave 'FATAL: role "root" does not exist' in its log at every start."""
    ready = _need("pg_isready", "postgresql")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(
                f"postgresql exited with {proc.returncode} at start; see {log_path}:\n" + _tail(log_path)
            )
        if (
            subprocess.run(
                [ready, "-q", "-h", str(socket_dir), "-p", str(port), "-U", lockdown.PG_SUPERUSER, "-d", "postgres"]
            ).returncode
            == 0
        ):
            return
        time.sleep(0.05)
    raise ServiceError(f"postgresql on port {port} did not accept connections within {timeout:g}s; see {log_path}")


def start_postgres(
    data_dir: Path,
    port: int,
    log_path: Path,
    *,
    detach: bool = False,
    database: str = "jobcluster",
    timeout: float = 60.0,
    settings: dict[str, str] | None = None,
    login: Login | None = None,
) -> Service:
    """initdb (first time), then run postgres on 127.0.0.1:port with its socket in the data directory.

    With ``login``: scram passwords from 127.0.0.1 only (pg_hba rewritten each start, so an old
    open data directory is closed too), and the role ``login.user`` owning ``database``.
    Without: every local user may log in as anyone (``trust``), as the tests' PostgreSQL.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    _give_to_postgres(data_dir)
    if not (data_dir / "PG_VERSION").exists():
        auth = ["-A", "trust"] if login is None else ["--auth-local=peer", "--auth-host=reject"]
        init = subprocess.run(
            [
                _need("initdb", "postgresql"),
                "-D",
                str(data_dir),
                "-U",
                lockdown.PG_SUPERUSER,
                *auth,
                "-E",
                "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            **_postgres_user(),
        )
        if init.returncode != 0:
            raise ServiceError(f"initdb failed in {data_dir}:\n{init.stdout}\n{init.stderr}")
    if login is not None:
        lockdown.write_pg_auth(data_dir, admins=(lockdown.PG_SUPERUSER, getpass.getuser()))
        _give_to_postgres(data_dir / "pg_hba.conf", data_dir / "pg_ident.conf")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    options = {"listen_addresses": "127.0.0.1", "max_connections": "200", "fsync": "on"}
    options.update(settings or {})
    cmd = [_need("postgres", "postgresql"), "-D", str(data_dir), "-p", str(port), "-k", str(data_dir)]
    for key, value in options.items():
        cmd += ["-c", f"{key}={value}"]
    proc = _spawn(cmd, log_path, detach, as_postgres=True)
    _wait_port("postgresql", proc, port, log_path, timeout)
    _wait_accepting(proc, port, data_dir, log_path, timeout)
    if login is not None:
        try:
            asyncio.run(lockdown.ensure_pg_role(data_dir, port, login.user, login.password, database))
        except BaseException:
            proc.terminate()
            proc.wait(timeout)
            raise
    user = login.user if login is not None else lockdown.PG_SUPERUSER
    return Service(
        "postgresql", proc, port, data_dir, log_path, f"postgresql://{user}@127.0.0.1:{port}/{database}", login=login
    )


@dataclass(frozen=True)
class EtcdUsers:
    """etcd locked: ``root`` (needed to turn auth on) and the programs' user, limited to ``prefix``; and both
    ports TLS, open only to certificates of the private CA in ``tls_dir`` (made there when missing)."""

    root_password_file: Path
    login: Login
    prefix: str
    tls_dir: Path


def _etcd_tls_flags(tls: DevTls) -> list[str]:
    """Both ports TLS with client certificates of ``tls``'s CA: etcd 3.4 checks no password on leases
    (LeaseKeepAlive, LeaseLeases, the peer port's /leases), so a certificate is what keeps other local
    users from them. The peer port takes etcd's own certificate only (its CN), not the programs'."""
    files = ["--cert-file", str(tls.cert), "--key-file", str(tls.key), "--trusted-ca-file", str(tls.ca)]
    peer = ["--peer-cert-file", str(tls.cert), "--peer-key-file", str(tls.key), "--peer-trusted-ca-file", str(tls.ca)]
    return [*files, "--client-cert-auth", *peer, "--peer-client-cert-auth", "--peer-cert-allowed-cn", ETCD_NAMES[0]]


def start_etcd(
    data_dir: Path,
    port: int,
    peer_port: int,
    log_path: Path,
    *,
    detach: bool = False,
    timeout: float = 30.0,
    users: EtcdUsers | None = None,
) -> Service:
    """etcd on 127.0.0.1:port. With ``users``: TLS with client certificates on both ports (files in
    ``users.tls_dir``), and auth on (set up through its gRPC API, passwords in no argv)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tls = ensure_etcd_tls(users.tls_dir) if users is not None else None
    scheme = "https" if tls else "http"
    client = f"{scheme}://127.0.0.1:{port}"
    peer = f"{scheme}://127.0.0.1:{peer_port}"
    cmd = [
        _need("etcd", "etcd-server"),
        "--name",
        "default",
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        f"default={peer}",
        *(_etcd_tls_flags(tls) if tls else []),
    ]
    proc = _spawn(cmd, log_path, detach)
    _wait_port("etcd", proc, port, log_path, timeout)
    if users is not None and tls is not None:
        try:
            lockdown.lock_etcd(
                f"127.0.0.1:{port}",
                lockdown.secret_file(users.root_password_file),
                users.login.user,
                users.login.password,
                users.prefix,
                tls=tls.etcd_client_tls(),
            )
        except BaseException:
            proc.terminate()
            proc.wait(timeout)
            raise
    return Service(
        "etcd",
        proc,
        port,
        data_dir,
        log_path,
        f"127.0.0.1:{port}",
        extra={"peer_port": str(peer_port)},
        login=users.login if users else None,
        tls=tls,
    )


@contextlib.contextmanager
def private_services(
    root: Path, pg_settings: dict[str, str] | None = None, *, locked: bool = False, etcd_prefix: str = "/"
) -> Iterator[dict[str, Service]]:
    """Redis, PostgreSQL and etcd on free loopback ports with data under ``root``; stopped on exit.

    ``root`` must be enterable by the ``postgres`` user (not pytest's /tmp/pytest-of-root).
    ``locked``: passwords on, as under ``make start``; each service's ``login`` says the user and
    the password file (in ``root/secrets``); the etcd user may touch only keys under ``etcd_prefix``,
    and etcd takes only clients with a certificate of its CA (in ``root/etcd-tls``, mode 0700; the etcd
    service's ``tls``).
    """
    secrets = root / "secrets"

    def login(name: str, user: str = "jobcluster") -> Login | None:
        return Login(user, secrets / f"{name}_password") if locked else None

    etcd_login = login("etcd")
    users = (
        EtcdUsers(secrets / "etcd_root_password", etcd_login, etcd_prefix, root / "etcd-tls") if etcd_login else None
    )
    started: dict[str, Service] = {}
    try:
        started["redis"] = start_redis(root / "redis", free_port(), root / "redis.log", login=login("redis"))
        started["postgres"] = start_postgres(
            root / "pg", free_port(), root / "pg.log", settings=pg_settings, login=login("postgres")
        )
        started["etcd"] = start_etcd(root / "etcd", free_port(), free_port(), root / "etcd.log", users=users)
        yield started
    finally:
        for service in reversed(list(started.values())):
            service.stop()
