"""Three hosts on one machine for ``make multihost``: a 3-member etcd, PostgreSQL and Redis on host 1, a server
and a worker on each host, all with passwords, TLS and a token.

The hosts are network namespaces (:mod:`.netns`); this process drives them from the observer namespace, so it
reaches every host at its own address, as a client on another machine would. Every process is started with
``ip netns exec``; a whole host dies with :meth:`MultiHost.kill_host` (kill -9 of all that runs in it).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from devtools import lockdown
from devtools import services as svc
from devtools.chaos import CHAOS_SETTINGS
from devtools.job_user import job_user_env
from devtools.multihost_services import (
    APP_USER,
    DATABASE,
    ETCD_PORT,
    PG_PORT,
    REDIS_PORT,
    SENTINEL_PORT,
    SERVER_PORT,
    Proc,
    _addr,
    etcd_argv,
    etcd_leader,
    move_etcd_leader,
    postgres_argv,
    redis_argv,
    start_sentinels,
)
from devtools.netns import Network
from devtools.sentinel import MASTER, SentinelGroup
from devtools.tls import DevTls, ensure_server_tls
from jobcluster.channels import ChannelSecurity, open_aio_channel
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc

#: The timings of make chaos (LEASE_TTL 3s, WORKER_DEAD_AFTER 3s, ...), with JSON logs to read times from.
MULTIHOST_SETTINGS = {
    **CHAOS_SETTINGS,
    "WORKER_CONCURRENCY": "4",
    "LOG_FORMAT": "json",
    "ELECTION_NAMESPACE": "/multihost",
    "PYTHONUNBUFFERED": "1",
}


@dataclass
class MultiHost:
    """The whole cluster. :meth:`start`, then the scenarios, then :meth:`stop` (the network goes separately)."""

    net: Network
    root: Path
    settings: dict[str, str] = field(default_factory=lambda: dict(MULTIHOST_SETTINGS))
    procs: dict[str, Proc] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    tls: DevTls | None = None
    sentinel: bool = False  # Redis as a primary, a replica and three sentinels (REDIS_SENTINELS)
    redis_group: SentinelGroup | None = None
    down: set[int] = field(default_factory=set)  # hosts killed on purpose: not restarted by supervise()
    restarts: int = 0

    @property
    def hosts(self) -> list[int]:
        return list(range(1, self.net.hosts + 1))

    @property
    def security(self) -> ChannelSecurity:
        assert self.tls is not None
        return ChannelSecurity(token=self.token, ca_file=str(self.tls.ca))

    def server_address(self, host: int) -> str:
        return _addr(host, SERVER_PORT)

    def host_of(self, address: str) -> int | None:
        return next((h for h in self.hosts if self.server_address(h) == address), None)

    def secret(self, name: str) -> Path:
        """The file (0600) holding service ``name``'s password, made on first use."""
        path = self.root / "secrets" / f"{name}_password"
        lockdown.secret_file(path)
        return path

    def password(self, name: str) -> str:
        return lockdown.secret_file(self.secret(name))

    # --- starting ---------------------------------------------------------------------------

    def start(self, leader_first: int = 2, timeout: float = 90.0) -> None:
        """Services, then the server of ``leader_first`` (so it leads), then every other program."""
        self.tls = ensure_server_tls(self.root / "tls", tuple(Network.address(h) for h in self.hosts))
        self.start_postgres()
        self.start_redis()
        for host in self.hosts:
            self.start_etcd(host)
        for host in self.hosts:
            svc._wait_port(
                f"etcd on host {host}",
                self.procs[f"etcd-{host}"].proc,  # type: ignore[arg-type]
                ETCD_PORT,
                self.procs[f"etcd-{host}"].log,
                timeout,
                host=Network.address(host),
            )
        lockdown.lock_etcd(
            _addr(1, ETCD_PORT),
            self.password("etcd_root"),
            APP_USER,
            self.password("etcd"),
            self.settings["ELECTION_NAMESPACE"].rstrip("/") + "/",
        )
        self.start_program("server", leader_first)
        wait_until(lambda: self.leader_sync() == leader_first, timeout, f"host {leader_first}'s server did not lead")
        for host in self.hosts:
            if host != leader_first:
                self.start_program("server", host)
            self.start_program("worker", host)
        from devtools.cluster import wait_healthy

        late = wait_healthy([self.server_address(h) for h in self.hosts], timeout, self.security)
        if late:
            raise RuntimeError(f"servers {late} not SERVING within {timeout:.0f}s; logs in {self.root}")

    def _start(
        self, name: str, host: int, argv: list[str], port: int, env: dict[str, str] | None = None, wait: bool = True
    ) -> Proc:
        proc = Proc(name, host, argv, self.root / f"{name}.log")
        proc.spawn(self.net, env or {"PATH": os.environ["PATH"]}, self.root)
        self.procs[name] = proc
        if wait:
            svc._wait_port(
                name,
                proc.proc,  # type: ignore[arg-type]
                port,
                proc.log,
                60.0,
                host=Network.address(host),
            )
        return proc

    def start_postgres(self) -> None:
        self._start("postgres", 1, postgres_argv(self.root / "pg"), PG_PORT)
        asyncio.run(lockdown.ensure_pg_role(self.root / "pg", PG_PORT, APP_USER, self.password("postgres"), DATABASE))

    def start_redis(self) -> None:
        """One Redis on host 1, or (``sentinel``) a primary there, a replica on host 2, a sentinel per host."""
        if self.sentinel:
            self.redis_group = start_sentinels(
                self.net, self.root, self.hosts, {n: self.password(n) for n in ("admin", "redis", "sentinel")}
            )
        else:
            self._start("redis", 1, redis_argv(self.root / "redis", self.password("redis")), REDIS_PORT)

    def start_etcd(self, host: int) -> None:
        argv = etcd_argv(self.root / f"etcd-{host}", host, self.hosts, self.net.tag)
        self._start(f"etcd-{host}", host, argv, ETCD_PORT, wait=False)

    def redis_primary(self) -> tuple[str, int]:
        """Where Redis' primary is now."""
        if self.redis_group is None:
            return Network.address(1), REDIS_PORT
        host, port = (self.redis_group.primary_addr() or f"{Network.address(1)}:{REDIS_PORT}").split(":")
        return host, int(port)

    def program_env(self, host: int) -> dict[str, str]:
        assert self.tls is not None
        keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "TMPDIR")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update(job_user_env(os.environ.get("JOB_USER", "")))
        env.update(self.settings)
        etcd = [_addr(host, ETCD_PORT)] + [_addr(h, ETCD_PORT) for h in self.hosts if h != host]
        env.update(
            {
                "DATABASE_URL": f"postgresql://{APP_USER}@{_addr(1, PG_PORT)}/{DATABASE}",
                "DATABASE_PASSWORD_FILE": str(self.secret("postgres")),
                **self.redis_env(),
                "ETCD_ENDPOINTS": ",".join(etcd),
                "ETCD_USER": APP_USER,
                "ETCD_PASSWORD_FILE": str(self.secret("etcd")),
                "SERVER_HOST": Network.address(host),
                "SERVER_PORT": str(SERVER_PORT),
                "AUTH_TOKEN": self.token,
                **self.tls.server_env(),
                "WORKER_ID": f"h{host}-worker",
                "JOB_WORKDIR_ROOT": str(self.root / f"jobs-h{host}"),
            }
        )
        return env

    def redis_env(self) -> dict[str, str]:
        login = {"REDIS_USER": APP_USER, "REDIS_PASSWORD_FILE": str(self.secret("redis"))}
        if self.sentinel:
            return {
                **login,
                "REDIS_SENTINELS": ",".join(_addr(h, SENTINEL_PORT) for h in self.hosts),
                "REDIS_SENTINEL_MASTER": MASTER,
                "REDIS_SENTINEL_PASSWORD_FILE": str(self.secret("sentinel")),
            }
        return {**login, "REDIS_ADDR": _addr(1, REDIS_PORT)}

    def start_program(self, kind: str, host: int) -> Proc:
        """``server`` or ``worker`` on ``host`` (again, after a kill: same name, same log)."""
        module = "scheduler_server" if kind == "server" else "worker"
        return self._start(
            f"{kind}-{host}", host, [sys.executable, "-m", module], SERVER_PORT, self.program_env(host), wait=False
        )

    def restart_host(self, host: int) -> None:
        """What a rebooted host runs again: its etcd member, server and worker (not PostgreSQL/Redis)."""
        self.down.discard(host)
        self.start_etcd(host)
        if self.redis_group is not None:  # its sentinel, and its Redis (back as a replica) if it had one
            for node in self.redis_group.nodes + self.redis_group.sentinels:
                if node.member.host == Network.address(host):
                    self.redis_group.restart(node.name)
        self.start_program("server", host)
        self.start_program("worker", host)

    def etcd_leader(self) -> int | None:
        return etcd_leader(self.hosts)

    def move_etcd_leader(self, to: int) -> None:
        move_etcd_leader(self.hosts, to, self.password("etcd_root"))

    # --- faults -----------------------------------------------------------------------------

    def kill_host(self, host: int) -> int:
        """kill -9 every process in the host, jobs included; how many there were."""
        self.down.add(host)
        killed = self.net.kill_host(host)
        for proc in self.procs.values():
            if proc.host == host and proc.proc is not None:
                proc.proc.wait(30)
        return killed

    async def supervise(self, stop: asyncio.Event, every: float = 0.5) -> None:
        """Start again a server or worker that exited on a live host, as a service manager would."""
        while not stop.is_set():
            for proc in list(self.procs.values()):
                if proc.name.startswith(("server-", "worker-")) and proc.host not in self.down and not proc.alive():
                    self.start_program(proc.name.split("-")[0], proc.host)
                    self.restarts += 1
            try:
                async with asyncio.timeout(every):
                    await stop.wait()
            except TimeoutError:
                pass

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
        if self.redis_group is not None:
            self.redis_group.stop()

    # --- looking ------------------------------------------------------------------------------

    async def cluster_info(self, host: int, timeout: float = 2.0) -> Any:
        """GetClusterInfo asked of host ``host``'s server; None when it does not answer."""
        try:
            async with open_aio_channel(self.server_address(host), self.security) as channel:
                return await pb_grpc.JobServiceStub(channel).GetClusterInfo(pb.ClusterInfoRequest(), timeout=timeout)
        except grpc.RpcError:
            return None

    async def leader(self, ask: list[int] | None = None) -> tuple[int | None, int]:
        """(host whose server leads, term) as the first of ``ask`` that answers says; (None, 0) if none."""
        for host in ask or self.hosts:
            info = await self.cluster_info(host)
            if info is not None:
                return self.host_of(info.leader), info.leader_term
        return None, 0

    def leader_sync(self) -> int | None:
        return asyncio.run(self.leader())[0]


def wait_until(ok: Any, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout:.0f}s")
        time.sleep(every)
