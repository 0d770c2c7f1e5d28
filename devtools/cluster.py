"""``make start / stop / status``: a whole cluster on this machine, tracked by pid files.

Redis, PostgreSQL and etcd are used where ``.env`` points at ones that answer;
otherwise this starts its own at those addresses, with passwords (data in
``.run/``, logs in ``log/``; see :mod:`.backing`). Then it starts the servers
and workers. ``stop`` ends exactly the processes whose pid files it wrote.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from devtools import backing, lockdown
from devtools import services as svc
from devtools.backing import LOG, ROOT, RUN
from devtools.job_user import JobUserError, close_env_file, job_user_env
from devtools.tls import DevTls, TlsError, cluster_tls
from jobcluster.channels import ChannelSecurity, open_channel
from jobcluster.credentials import etcd_auth
from jobcluster.settings import ConfigError, Settings

SERVERS_FILE = ROOT / ".servers"
#: Prometheus scrape targets of what make start started, one host:port per line (GET /metrics on each).
METRICS_FILE = ROOT / ".metrics"
#: /metrics ports: server on port P at P + METRICS_OFFSET, worker i at BASE_PORT + METRICS_OFFSET + 100 + i.
METRICS_OFFSET = 1000
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
STOP_WAIT = 40.0  # a worker gives running jobs WORKER_SHUTDOWN_GRACE (30s) to finish


@dataclass(frozen=True)
class Proc:
    """A process this tool started: its pid file and the words its command line must contain."""

    name: str
    marker: str

    @property
    def pidfile(self) -> Path:
        return RUN / f"{self.name}.pid"

    def pid(self) -> int | None:
        """The pid if the process is alive and still the one we started."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            return None
        if self.marker not in cmdline:
            return None
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return None
        return None if state == "Z" else pid

    def record(self, pid: int) -> None:
        RUN.mkdir(exist_ok=True)
        self.pidfile.write_text(f"{pid}\n")


def _hostport(addr: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(addr if "://" in addr else f"//{addr}")
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _say(msg: str) -> None:
    print(msg, flush=True)


def _ensure_service(
    name: str, host: str, port: int, start: Callable[[int], svc.Service], dev: backing.DevServices
) -> str:
    proc = Proc(name, {"redis": "redis-server", "postgres": "postgres", "etcd": "etcd"}[name])
    if svc.port_open(port, host if host not in LOCAL_HOSTS else "127.0.0.1"):
        pid = proc.pid()
        if pid is not None:
            dev.check_running(name, pid)  # one of ours without passwords: says how to upgrade
        owner = "ours" if pid else "already running, not ours: make start leaves its passwords alone"
        return f"{host or '127.0.0.1'}:{port} ({owner})"
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"{name} at {host}:{port} does not answer, and it is not on this machine to start")
    service = start(port)
    proc.record(service.pid)
    return f"127.0.0.1:{port} (started, pid {service.pid}, data {dev.where(service)})"


def private_log_dir() -> None:
    """``log/`` for this user alone (0700, files 0600; an older make start made them readable by all): logs
    say which jobs ran and what the leader did, and a job runs as another user."""
    LOG.mkdir(mode=0o700, exist_ok=True)
    LOG.chmod(0o700)
    for path in LOG.iterdir():
        if path.is_file() and not path.is_symlink():
            path.chmod(0o600)


def start_backing_services(settings: Settings) -> dict[str, str]:
    """Use or start Redis, PostgreSQL and etcd; then check the programs can log in to each."""
    RUN.mkdir(exist_ok=True)
    private_log_dir()
    os.chmod(RUN, 0o755)
    dev = backing.DevServices(settings)
    where = {}
    r_host, r_port = _hostport(settings.redis_addr, 6379)
    where["redis"] = _ensure_service("redis", r_host, r_port, dev.start_redis, dev)
    pg = urlsplit(settings.database_url)
    where["postgres"] = _ensure_service("postgres", pg.hostname or "", pg.port or 5432, dev.start_postgres, dev)
    if settings.etcd_endpoints:
        e_host, e_port = _hostport(settings.etcd_endpoints[0], 2379)
        where["etcd"] = _ensure_service("etcd", e_host, e_port, dev.start_etcd, dev)
    for line in dev.write_env():
        _say(f"  .env     {line}   (added: the programs log in with it)")
    problems = backing.login_problems(Settings.from_env())
    if problems:
        raise SystemExit(
            "".join(f"  {k:<9}{v}\n" for k, v in where.items())
            + "the programs could not log in:\n"
            + "\n".join(f"  {k}: {v}" for k, v in problems.items())
        )
    return where


def _spawn(proc: Proc, args: list[str], log_name: str, env: dict[str, str]) -> int:
    private_log_dir()
    with svc.open_log(LOG / log_name) as log:
        p = subprocess.Popen(
            args,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    proc.record(p.pid)
    return p.pid


def _metrics_env(port: int, what: str, targets: list[str]) -> dict[str, str]:
    """METRICS_PORT for one program, and its target noted; none when another program holds the port."""
    if svc.port_open(port):
        _say(f"  metrics of {what}: port {port} is taken by another program; this one exports none")
        return {"METRICS_PORT": "", "METRICS_ADDR": ""}
    targets.append(f"127.0.0.1:{port}")
    return {"METRICS_PORT": str(port), "METRICS_ADDR": ""}


def start_servers(
    count: int, base_port: int, extra_env: dict[str, str] | None = None, targets: list[str] | None = None
) -> list[str]:
    addrs = []
    targets = [] if targets is None else targets
    for port in range(base_port, base_port + count):
        addrs.append(f"127.0.0.1:{port}")
        start_server(port, extra_env, targets)
    SERVERS_FILE.write_text("".join(a + "\n" for a in addrs))
    return addrs


def start_server(port: int, extra_env: dict[str, str] | None, targets: list[str], quiet: bool = False) -> None:
    """One server on ``port`` unless ours runs there already; SystemExit when another program listens there."""
    proc = Proc(f"server-{port}", f"scheduler_server --port {port}")
    if (pid := proc.pid()) is not None:
        _say(f"  server  127.0.0.1:{port} already running (pid {pid})")
        targets.append(f"127.0.0.1:{port + METRICS_OFFSET}")
        return
    if svc.port_open(port):
        raise SystemExit(f"port {port} is taken by another program; choose BASE_PORT=...")
    env = {**os.environ, **(extra_env or {}), **_metrics_env(port + METRICS_OFFSET, f"server {port}", targets)}
    pid = _spawn(proc, [sys.executable, "-m", "scheduler_server", "--port", str(port)], f"server-{port}.log", env)
    if not quiet:
        _say(f"  server  127.0.0.1:{port} started (pid {pid}, log log/server-{port}.log)")


def wait_servers(
    addrs: list[str],
    extra_env: dict[str, str] | None,
    security: ChannelSecurity,
    timeout: float = 90.0,
    pause: float = 2.0,
) -> list[str]:
    """Until every server answers SERVING; those that did not within ``timeout``. One that exited meanwhile is
    started again every ``pause`` seconds: 50051 and up lie in Linux's ephemeral port range (32768-60999), so a
    connection of another program (to Redis, say), or one closed less than a minute ago (TIME_WAIT), can hold
    its port, and it then stops with 'Failed to bind ... Address already in use'."""
    deadline = time.monotonic() + timeout
    said: set[str] = set()
    waiting = list(addrs)
    while waiting and time.monotonic() < deadline:
        waiting = wait_healthy(waiting, timeout=1.0, security=security)
        for addr in waiting:
            port = int(addr.rsplit(":", 1)[1])
            if Proc(f"server-{port}", f"scheduler_server --port {port}").pid() is None:
                if addr not in said:
                    _say(
                        f"  server  {addr} stopped at start (log/server-{port}.log: its port was busy?); "
                        f"starting it again every {pause:g}s"
                    )
                    said.add(addr)
                time.sleep(pause)
                start_server(port, extra_env, [], quiet=True)
    return waiting


def start_workers(
    count: int, extra_env: dict[str, str] | None = None, base_port: int = 50051, targets: list[str] | None = None
) -> None:
    host = socket.gethostname()
    targets = [] if targets is None else targets
    for i in range(1, count + 1):
        wid = f"{host}-worker-{i}"
        proc = Proc(f"worker-{i}", f"worker --id {wid}")
        metrics_port = base_port + METRICS_OFFSET + 100 + i
        if (pid := proc.pid()) is not None:
            _say(f"  worker  {wid} already running (pid {pid})")
            targets.append(f"127.0.0.1:{metrics_port}")
            continue
        pid = _spawn(
            proc,
            [sys.executable, "-m", "worker", "--id", wid],
            f"worker-{i}.log",
            {**os.environ, **(extra_env or {}), **_metrics_env(metrics_port, wid, targets)},
        )
        _say(f"  worker  {wid} started (pid {pid}, log log/worker-{i}.log)")


def start_webui(settings: Settings, addrs: list[str], extra_env: dict[str, str] | None = None) -> str | None:
    """The web UI on WEBUI_ADDR, for the servers just started."""
    proc = Proc("webui", "webui --addr")
    addr = settings.webui_addr
    if (pid := proc.pid()) is not None:
        _say(f"  webui   {addr} already running (pid {pid})")
        return addr
    host, port = _hostport(addr, 8080)
    if svc.port_open(port, host):
        _say(f"  webui   NOT started: {addr} is taken by another program; set WEBUI_ADDR=127.0.0.1:<port>")
        return None
    pid = _spawn(
        proc,
        [sys.executable, "-m", "webui", "--addr", addr, "--servers", ",".join(addrs)],
        "webui.log",
        {**os.environ, **(extra_env or {})},
    )
    _say(f"  webui   {addr} started (pid {pid}, log log/webui.log)")
    return addr


def wait_healthy(addrs: list[str], timeout: float = 90.0, security: ChannelSecurity = ChannelSecurity()) -> list[str]:
    """Addresses that did not report SERVING within ``timeout``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    waiting = list(addrs)
    while waiting and time.monotonic() < deadline:
        for addr in list(waiting):
            with open_channel(addr, security) as ch:
                try:
                    resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        waiting.remove(addr)
                except grpc.RpcError:
                    pass
        if waiting:
            time.sleep(0.3)
    return waiting


def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    t0 = time.monotonic()
    _say("backing services:")
    for name, where in start_backing_services(settings).items():
        _say(f"  {name:<9}{where}")
    if not settings.etcd_endpoints:
        _say("  etcd     ETCD_ENDPOINTS is empty: no etcd")
    tls = _tls(args.tls)
    tls_env = {**tls.server_env(), **tls.client_env()} if tls else {}
    _say("programs:")
    targets: list[str] = []
    addrs = start_servers(args.servers, args.base_port, tls_env, targets) if args.servers else []
    if args.workers:
        start_workers(args.workers, _job_user(settings), args.base_port, targets)
    ui = start_webui(settings, addrs, tls_env) if addrs and not args.no_webui else None
    METRICS_FILE.write_text("".join(t + "\n" for t in [*targets, *([ui] if ui else [])]))
    late = wait_servers(addrs, tls_env, _security(settings, addrs))
    if late:
        _say(
            f"not ready after 90s: {', '.join(late)}; see log/server-*.log. 'Address already in use' there: "
            f"another program's connection held that port (50051 and up are in Linux's ephemeral range); "
            f"make start again, or choose BASE_PORT=7051"
        )
        return 1
    _say(f"ready in {time.monotonic() - t0:.1f}s. Servers (also in .servers): {','.join(addrs) or '-'}")
    if ui:
        _say(f"web UI: {'https' if tls or settings.tls_cert else 'http'}://{ui}")
    _say(_auth_line(settings))
    _say(f"metrics: Prometheus targets (GET /metrics) in .metrics: {' '.join(METRICS_FILE.read_text().split())}")
    if tls:
        _say(
            f"TLS: the client uses {tls.ca.relative_to(ROOT)} by itself for the servers in .servers; elsewhere:\n"
            f"      export TLS_CA={tls.ca}"
        )
    _say("try:  .venv/bin/jobcluster submit 'echo hello'      (or: make run-client CMD='echo hello')")
    _say("      make status | make logs | make stop")
    return 0


def _tls(wanted: bool) -> DevTls | None:
    """``make start TLS=1``: the private CA and server certificate in .run/tls (made when missing)."""
    running = any(p.pid() for p in all_procs() if p.name.startswith("server-"))
    try:
        tls = cluster_tls(RUN / "tls", wanted, running)
    except TlsError as exc:
        raise SystemExit(f"TLS: {exc}") from None
    if tls:
        _say(
            f"  tls      servers use {tls.cert.relative_to(ROOT)}, signed by the private CA "
            f"{tls.ca.relative_to(ROOT)} (keys mode 600)"
        )
    return tls


def _security(settings: Settings, addrs: list[str]) -> ChannelSecurity:
    """How make start and make status reach the servers: TLS_CA/AUTH_TOKEN, or make start TLS=1's CA."""
    return ChannelSecurity.from_settings(settings).for_servers(addrs, SERVERS_FILE, RUN / "tls" / "ca.pem")


def _auth_line(settings: Settings) -> str:
    if settings.auth_tokens_file:
        return f"tokens: the servers take the tokens of AUTH_TOKENS_FILE ({settings.auth_tokens_file})"
    if settings.auth_token:
        return "tokens: the servers take AUTH_TOKEN; every program here sends it (from the environment or .env)"
    return "tokens: none (AUTH_TOKEN unset): any local user may call the servers, on loopback only"


def _job_user(settings: Settings) -> dict[str, str]:
    """As root: workers run jobs as JOB_USER, else as jobcluster-job (created); .env closed to other users."""
    try:
        extra = job_user_env(settings.job_user)
    except JobUserError as exc:
        raise SystemExit(str(exc)) from None
    user = extra.get("JOB_USER") or settings.job_user
    if user and close_env_file(ROOT / ".env"):
        _say("  .env     was readable by every user: now mode o-rwx, so jobs cannot read it")
    _say(f"  jobs     run as {user or 'this user (not root)'}, each in a fresh directory (JOB_WORKDIR_ROOT)")
    return extra


def all_procs() -> list[Proc]:
    procs = []
    for pidfile in sorted(RUN.glob("*.pid")):
        name = pidfile.stem
        if name.startswith("server-"):
            procs.append(Proc(name, f"scheduler_server --port {name.split('-', 1)[1]}"))
        elif name.startswith("worker-"):
            procs.append(Proc(name, "worker --id"))
        elif name == "webui":
            procs.append(Proc(name, "webui --addr"))
        elif name in ("redis", "postgres", "etcd"):
            procs.append(Proc(name, {"redis": "redis-server", "postgres": "postgres", "etcd": "etcd"}[name]))
    return procs


def _stop(procs: list[Proc], sig: int) -> None:
    live = [(p, p.pid()) for p in procs]
    for proc, pid in live:
        if pid is None:
            proc.pidfile.unlink(missing_ok=True)
            continue
        os.kill(pid, sig)
    deadline = time.monotonic() + STOP_WAIT
    for proc, pid in live:
        if pid is None:
            continue
        while proc.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.pid() is not None:
            _say(f"  {proc.name} (pid {pid}) did not stop in {STOP_WAIT:.0f}s: SIGKILL")
            os.kill(pid, signal.SIGKILL)
        _say(f"  stopped {proc.name} (pid {pid})")
        proc.pidfile.unlink(missing_ok=True)


def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    procs = all_procs()
    programs = [p for p in procs if p.name.startswith(("server-", "worker-", "webui"))]
    if args.programs_only:
        programs = [p for p in programs if p.name.startswith(args.programs_only)]
        _stop(programs, signal.SIGTERM)
        return 0
    _stop(programs, signal.SIGTERM)
    # postgres: SIGINT is its "fast" shutdown; the others stop on SIGTERM.
    _stop([p for p in procs if p.name == "etcd"], signal.SIGTERM)
    _stop([p for p in procs if p.name == "postgres"], signal.SIGINT)
    _stop([p for p in procs if p.name == "redis"], signal.SIGTERM)
    if not procs:
        _say("nothing of ours is running")
    SERVERS_FILE.unlink(missing_ok=True)
    METRICS_FILE.unlink(missing_ok=True)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    procs = all_procs()
    if not procs:
        _say("nothing of ours is running (make start)")
    for proc in procs:
        pid = proc.pid()
        _say(f"  {proc.name:<14} {'running, pid ' + str(pid) if pid else 'NOT RUNNING (stale pid file)'}")
    addrs = SERVERS_FILE.read_text().split() if SERVERS_FILE.exists() else []
    if addrs:
        down = wait_healthy(addrs, timeout=1.0, security=_security(settings, addrs))
        for addr in addrs:
            _say(f"  {addr:<14} {'NOT SERVING' if addr in down else 'serving'}")
    _say(f"  leader: {_leader_line(settings)}")
    if METRICS_FILE.exists():
        targets = METRICS_FILE.read_text().split()
        _say("  metrics: " + " ".join(f"{t} ({'up' if _metrics_up(t) else 'DOWN'})" for t in targets))
    try:
        from jobcluster import keys

        r = backing.redis_client(settings)
        processing = sum(r.llen(k) for k in r.scan_iter(keys.PROCESSING_PREFIX + "*"))
        _say(
            f"  queues: {keys.PENDING}={r.llen(keys.PENDING)} processing={processing} "
            f"{keys.DELAYED}={r.zcard(keys.DELAYED)} {keys.DLQ}={r.llen(keys.DLQ)}"
        )
        others = {lane: r.llen(lane) for lane in sorted(cast(set[str], r.smembers(keys.LANES))) if lane != keys.PENDING}
        if any(others.values()):  # queues, priorities, constraints: only the lanes holding ids
            _say("  lanes: " + " ".join(f"{lane}={n}" for lane, n in others.items() if n))
        now = time.time() * 1000
        for wid, beat in cast(list[tuple[str, float]], r.zrange(keys.WORKERS, 0, -1, withscores=True)):
            _say(f"  worker {wid}: last heartbeat {(now - beat) / 1000:.1f}s ago")
    except Exception as exc:  # noqa: BLE001 - status must print what it can
        _say(f"  queues: Redis not reachable ({exc})")
    return 0


def _metrics_up(target: str) -> bool:
    """Whether GET /metrics on ``target`` answers (plain HTTP; a TLS web UI counts as down here)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def _leader_line(settings: Settings) -> str:
    if not settings.etcd_endpoints:
        return "none: ETCD_ENDPOINTS is empty, election is off"
    import asyncio

    from jobcluster.election import ETCD_ERRORS, read_leader
    from jobcluster.etcd_client import etcd_tls

    key = f"{settings.election_namespace}/{settings.election_key}"
    try:
        info = asyncio.run(
            read_leader(
                settings.etcd_endpoints,
                settings.election_namespace,
                settings.election_key,
                auth=etcd_auth(settings),
                tls=etcd_tls(settings),
            )
        )
    except ETCD_ERRORS + (ConfigError,) as exc:
        return f"unknown: etcd at {','.join(settings.etcd_endpoints)} not reachable ({exc or type(exc).__name__})"
    if info is None:
        return f"none right now (etcd key {key} is empty)"
    since = time.strftime("%H:%M:%S", time.localtime(info.since_ms / 1000))
    return f"{info.address} (pid {info.pid}) since {since}, term {info.token} (etcd key {key})"


def cmd_clean(args: argparse.Namespace, settings: Settings) -> int:
    removed = backing.remove_outside_data()
    if removed:
        _say(f"removed {removed} (PostgreSQL's data of this checkout)")
    return 0


def cmd_job_user(args: argparse.Namespace, settings: Settings) -> int:
    """``make run-worker``: print JOB_USER for a worker started here (empty when not root and unset)."""
    try:
        print(job_user_env(settings.job_user).get("JOB_USER", settings.job_user))
    except JobUserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.cluster", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("--servers", type=int, default=3)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--base-port", type=int, default=50051)
    s.add_argument("--no-webui", action="store_true", help="do not start the web UI")
    s.add_argument("--tls", action="store_true", help="every program talks TLS (a private CA in .run/tls)")
    st = sub.add_parser("stop")
    st.add_argument("--programs-only", choices=("server-", "worker-"), help="stop only servers or workers")
    sub.add_parser("status")
    sub.add_parser("job-user", help="print the JOB_USER a worker started here needs (as root: created)")
    sub.add_parser("clean", help="delete PostgreSQL's data kept outside the checkout (make clean)")
    args = p.parse_args()
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return {
            "start": cmd_start,
            "stop": cmd_stop,
            "status": cmd_status,
            "clean": cmd_clean,
            "job-user": cmd_job_user,
        }[args.cmd](args, settings)
    except (svc.ServiceError, lockdown.LockError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
