"""A whole cluster on private services, a supervisor that restarts what died, and the faults to throw at it.

Shared by ``make chaos`` (scripts/chaos.py) and ``make soak`` (scripts/soak.py).
Every process here is one this module started; kills go by pid, never by name.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from devtools import services as svc
from devtools.job_user import job_user_env
from jobcluster.channels import open_aio_channel
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc

# Short timings so a cluster under faults converges in seconds (printed by the scripts).
CHAOS_SETTINGS = {
    "LEASE_TTL": "3s",
    "WORKER_DEAD_AFTER": "3s",
    "RECONCILE_AFTER": "2s",
    "HEARTBEAT_INTERVAL": "0.5s",
    "WORKER_SHUTDOWN_GRACE": "5s",
    "JOB_KILL_GRACE": "1s",
    "RETRY_BACKOFF_BASE": "0.2s",
    "RETRY_BACKOFF_MAX": "2s",
    "CRON_MIN_INTERVAL": "1s",
    "CRON_MISFIRE_GRACE": "30s",
    "WORKER_CONCURRENCY": "12",
    "PG_MAX_CONNS": "10",
    "LOG_LEVEL": "INFO",
}


@dataclass
class Program:
    """One server or worker: how to start it, and the process running now (restarted by the supervisor)."""

    name: str
    argv: list[str]
    log: Path
    address: str = ""  # servers: host:port
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    started_at: float = 0.0

    def spawn(self, env: dict[str, str], cwd: Path) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *self.argv],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.alive() and self.proc is not None else None

    def kill(self, sig: int = signal.SIGKILL) -> bool:
        """Signal the process we started (by its pid); reap it after SIGKILL. False if it was not running."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.kills += 1
            self.proc.wait()
        return True


@dataclass
class Cluster:
    """Servers and workers on the services of :func:`services.private_services`, as ``make start`` runs them."""

    root: Path
    services: dict[str, svc.Service]
    servers: int = 3
    workers: int = 3
    extra_env: dict[str, str] = field(default_factory=dict)
    programs: dict[str, Program] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "TMPDIR")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update(job_user_env(os.environ.get("JOB_USER", "")))
        env.update(CHAOS_SETTINGS)
        env.update(
            {
                "DATABASE_URL": self.services["postgres"].url,
                "REDIS_ADDR": self.services["redis"].url,
                "ETCD_ENDPOINTS": self.services["etcd"].url,
                "JOB_WORKDIR_ROOT": str(self.root / "jobs"),
                "ELECTION_NAMESPACE": "/chaos",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    @property
    def addresses(self) -> list[str]:
        return [p.address for p in self.programs.values() if p.address]

    def start(self, timeout: float = 60.0) -> None:
        """Start every server and worker; return once each server answers health checks."""
        from devtools.cluster import wait_healthy

        for i in range(1, self.servers + 1):
            port = svc.free_port()
            self.programs[f"server-{i}"] = Program(
                f"server-{i}",
                ["-m", "scheduler_server", "--port", str(port)],
                self.root / f"server-{i}.log",
                address=f"127.0.0.1:{port}",
            )
        for i in range(1, self.workers + 1):
            self.programs[f"worker-{i}"] = Program(
                f"worker-{i}", ["-m", "worker", "--id", f"chaos-worker-{i}"], self.root / f"worker-{i}.log"
            )
        env = self.env()
        for program in self.programs.values():
            program.spawn(env, self.root)
        late = wait_healthy(self.addresses, timeout=timeout)
        if late:
            raise RuntimeError(f"servers {late} not SERVING within {timeout:.0f}s; logs in {self.root}")

    def note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))

    async def supervise(self, stop: asyncio.Event, every: float = 0.2) -> None:
        """Restart any server or worker that died, until ``stop`` is set (as a service manager would)."""
        env = self.env()
        while not stop.is_set():
            for program in self.programs.values():
                # not in a tight loop: a worker restarted under its old id refuses to start until
                # its old heartbeat is WORKER_DEAD_AFTER old, and exits
                if not program.alive() and time.monotonic() - program.started_at > 0.5:
                    program.spawn(env, self.root)
            try:
                async with asyncio.timeout(every):
                    await stop.wait()
            except TimeoutError:
                pass

    def pick(self, prefix: str) -> Program | None:
        alive = [p for p in self.programs.values() if p.name.startswith(prefix) and p.alive()]
        return random.choice(alive) if alive else None

    async def leader(self) -> Program | None:
        """The server that leads now, by GetClusterInfo asked of any live server."""
        for program in self.programs.values():
            if not program.address or not program.alive():
                continue
            try:
                async with open_aio_channel(program.address) as channel:
                    info = await pb_grpc.JobServiceStub(channel).GetClusterInfo(pb.ClusterInfoRequest(), timeout=2)
            except grpc.RpcError:
                continue
            for candidate in self.programs.values():
                if info.leader and candidate.address == info.leader:
                    return candidate
            return None
        return None

    def stop_all(self) -> None:
        for program in self.programs.values():
            program.kill()

    def sample(self) -> dict[str, tuple[int, int, int]]:
        """Per program and service: (pid, RSS in KiB, open fds), from /proc."""
        out: dict[str, tuple[int, int, int]] = {}
        pids = {name: p.pid for name, p in self.programs.items()}
        pids.update({name: s.pid for name, s in self.services.items() if s.proc.poll() is None})
        for name, pid in pids.items():
            if pid is not None and (usage := proc_usage(pid)) is not None:
                out[name] = (pid, *usage)
        return out


def proc_usage(pid: int) -> tuple[int, int] | None:
    """(RSS in KiB, open fds) of a process, or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return rss, fds


T = TypeVar("T")


async def call(cluster: Cluster, what: str, rpc: Callable[[Any], Awaitable[T]], deadline: float = 120.0) -> T:
    """``rpc(stub)`` on the servers in turn until one answers (servers die here on purpose)."""
    end = time.monotonic() + deadline
    while True:
        for address in random.sample(cluster.addresses, len(cluster.addresses)):
            try:
                async with open_aio_channel(address) as channel:
                    return await rpc(pb_grpc.JobServiceStub(channel))
            except grpc.RpcError as e:
                if time.monotonic() > end:
                    raise RuntimeError(f"{what}: no server answered for {deadline:.0f}s ({e.code()})") from None
            await asyncio.sleep(0.2)


@dataclass(frozen=True)
class FaultPlan:
    """When each fault happens, in seconds from the start of the load; 0 turns a periodic kill off."""

    worker_every: float = 5.0
    server_every: float = 10.0
    leader_every: float = 20.0
    redis_stop_at: float = 12.0
    redis_stop_for: float = 6.0
    postgres_restart_at: float | None = 30.0
    etcd_restart_at: float | None = 45.0

    @property
    def last_one_off(self) -> float:
        moments = [self.redis_stop_at + self.redis_stop_for, self.postgres_restart_at or 0, self.etcd_restart_at or 0]
        return max(moments) + 2.0


async def _restart_service(cluster: Cluster, name: str) -> None:
    """Stop a service and start it again on the same port with the same data (a crash-safe restart)."""
    old = cluster.services[name]
    if name == "postgres":  # SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for every client to leave)
        old.proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(old.proc.wait, 60)
    else:
        await asyncio.to_thread(old.stop)

    def start() -> svc.Service:
        if name == "postgres":
            return svc.start_postgres(
                old.data_dir, old.port, old.log_path, settings={"fsync": "off", "synchronous_commit": "off"}
            )
        return svc.start_etcd(old.data_dir, old.port, int(old.extra["peer_port"]), old.log_path)

    cluster.services[name] = await asyncio.to_thread(start)


async def _pause_redis(cluster: Cluster, seconds: float) -> None:
    redis = cluster.services["redis"].proc
    os.kill(redis.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        os.kill(redis.pid, signal.SIGCONT)


async def inject_faults(cluster: Cluster, plan: FaultPlan, stop: asyncio.Event) -> Counter[str]:
    """Throw ``plan``'s faults at ``cluster`` until ``stop`` is set; how many of each kind happened."""
    done: Counter[str] = Counter()
    t0 = time.monotonic()
    due = {"worker": plan.worker_every, "server": plan.server_every, "leader": plan.leader_every}
    once: dict[str, float | None] = {
        "redis": plan.redis_stop_at,
        "postgres": plan.postgres_restart_at,
        "etcd": plan.etcd_restart_at,
    }
    pausing: list[asyncio.Task[None]] = []
    try:
        while not stop.is_set():
            now = time.monotonic() - t0
            for kind, at in list(due.items()):
                if at and now >= at:
                    victim = (await cluster.leader()) if kind == "leader" else cluster.pick(kind)
                    period = {"worker": plan.worker_every, "server": plan.server_every, "leader": plan.leader_every}[
                        kind
                    ]
                    if victim is not None and victim.kill():
                        done[f"kill -9 {kind}"] += 1
                        cluster.note(f"kill -9 {victim.name} ({kind})")
                        due[kind] = at + period
                    else:  # none to kill now (no leader yet, all down): try again in a second
                        due[kind] = now + 1.0
            for what, when in list(once.items()):
                if when is not None and now >= when:
                    once[what] = None
                    cluster.note(f"{what} fault begins")
                    if what == "redis":
                        pausing.append(asyncio.create_task(_pause_redis(cluster, plan.redis_stop_for)))
                        done[f"SIGSTOP redis {plan.redis_stop_for:g}s"] += 1
                    else:
                        await _restart_service(cluster, what)
                        done[f"restart {what}"] += 1
            try:
                async with asyncio.timeout(0.2):
                    await stop.wait()
            except TimeoutError:
                pass
    finally:
        for task in pausing:
            await task
    return done
