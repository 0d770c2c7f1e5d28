"""Three hosts on one machine for ``make multihost``: a 3-member etcd, PostgreSQL and Redis on host 1, a server
and a worker on each host, all with passwords, TLS and a token.

The hosts are network namespaces (:mod:`.netns`); this process drives them from the observer namespace, so it
reaches every host at its own address, as a client on another machine would. Every process is started with
``ip netns exec``; a whole host dies with :meth:`MultiHost.kill_host` (kill -9 of all that runs in it).
"""

from __future__ import annotations

import asyncio
import getpass
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from jobcluster.channels import ChannelSecurity, open_aio_channel
from jobcluster.devtools import lockdown
from jobcluster.devtools import services as svc
from jobcluster.devtools.chaos import CHAOS_SETTINGS
from jobcluster.devtools.job_user import job_user_env
from jobcluster.devtools.netns import Network
from jobcluster.devtools.tls import DevTls, ensure_server_tls
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc

PG_PORT, REDIS_PORT, ETCD_PORT, ETCD_PEER_PORT, SERVER_PORT = 5432, 6379, 2379, 2380, 50051
APP_USER, DATABASE = "jobcluster", "jobcluster"
#: The timings of make chaos (LEASE_TTL 3s, WORKER_DEAD_AFTER 3s, ...), with JSON logs to read times from.
MULTIHOST_SETTINGS = {**CHAOS_SETTINGS, "WORKER_CONCURRENCY": "4", "LOG_FORMAT": "json",
                      "ELECTION_NAMESPACE": "/multihost", "PYTHONUNBUFFERED": "1"}


@dataclass
class Proc:
    """One process on one host, started with ``ip netns exec`` (so its pid is the program's own)."""

    name: str
    host: int
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def spawn(self, net: Network, env: dict[str, str], cwd: Path) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(net.run_in(self.host, self.argv), cwd=cwd, env=env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive() and self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(30)


def _addr(host: int, port: int) -> str:
    return f"{Network.address(host)}:{port}"


@dataclass
class MultiHost:
    """The whole cluster. :meth:`start`, then the scenarios, then :meth:`stop` (the network goes separately)."""

    net: Network
    root: Path
    settings: dict[str, str] = field(default_factory=lambda: dict(MULTIHOST_SETTINGS))
    procs: dict[str, Proc] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    tls: DevTls | None = None
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
        path = self.root / "secrets" / f"{name}_password"
        lockdown.secret_file(path)
        return path

    # --- starting ---------------------------------------------------------------------------

    def start(self, leader_first: int = 2, timeout: float = 90.0) -> None:
        """Services, then the server of ``leader_first`` (so it leads), then every other program."""
        self.tls = ensure_server_tls(self.root / "tls", tuple(Network.address(h) for h in self.hosts))
        self.start_postgres()
        self.start_redis()
        for host in self.hosts:
            self.start_etcd(host)
        for host in self.hosts:
            svc._wait_port(f"etcd on host {host}", self.procs[f"etcd-{host}"].proc,  # type: ignore[arg-type]
                           ETCD_PORT, self.procs[f"etcd-{host}"].log, timeout, host=Network.address(host))
        lockdown.lock_etcd(_addr(1, ETCD_PORT), lockdown.secret_file(self.root / "secrets" / "etcd_root"),
                           APP_USER, lockdown.secret_file(self.secret("etcd")),
                           self.settings["ELECTION_NAMESPACE"].rstrip("/") + "/")
        self.start_program("server", leader_first)
        wait_until(lambda: self.leader_sync() == leader_first, timeout,
                   f"host {leader_first}'s server did not lead")
        for host in self.hosts:
            if host != leader_first:
                self.start_program("server", host)
            self.start_program("worker", host)
        from jobcluster.devtools.cluster import wait_healthy

        late = wait_healthy([self.server_address(h) for h in self.hosts], timeout, self.security)
        if late:
            raise RuntimeError(f"servers {late} not SERVING within {timeout:.0f}s; logs in {self.root}")

    def _start(self, name: str, host: int, argv: list[str], port: int, env: dict[str, str] | None = None,
               wait: bool = True) -> Proc:
        proc = Proc(name, host, argv, self.root / f"{name}.log")
        proc.spawn(self.net, env or {"PATH": os.environ["PATH"]}, self.root)
        self.procs[name] = proc
        if wait:
            svc._wait_port(name, proc.proc, port, proc.log, 60.0,  # type: ignore[arg-type]
                           host=Network.address(host))
        return proc

    def start_postgres(self) -> None:
        data = self.root / "pg"
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            svc._give_to_postgres(data)
            subprocess.run([svc._need("initdb", "postgresql"), "-D", str(data), "-U", lockdown.PG_SUPERUSER,
                            "--auth-local=peer", "--auth-host=reject", "-E", "UTF8", "--no-sync"],
                           check=True, capture_output=True, **svc._postgres_user())
        lockdown.write_pg_auth(data, admins=(lockdown.PG_SUPERUSER, getpass.getuser()))
        with open(data / "pg_hba.conf", "a") as hba:  # the other hosts: passwords over the bridge only
            hba.write(f"host   all  all  {Network.address(0)}/24  scram-sha-256\n")
        argv = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups",
                svc._need("postgres", "postgresql"), "-D", str(data), "-p", str(PG_PORT), "-k", str(data),
                "-c", f"listen_addresses={Network.address(1)}", "-c", "max_connections=200",
                "-c", "fsync=off", "-c", "synchronous_commit=off"]
        self._start("postgres", 1, argv, PG_PORT)
        asyncio.run(lockdown.ensure_pg_role(data, PG_PORT, APP_USER, lockdown.secret_file(self.secret("postgres")),
                                            DATABASE))

    def start_redis(self) -> None:
        data = self.root / "redis"
        data.mkdir(mode=0o700, exist_ok=True)
        conf = data / svc.REDIS_CONF
        lines = [f"port {REDIS_PORT}", f"bind {Network.address(1)}", "protected-mode yes", "daemonize no",
                 f'dir "{data}"', 'save ""', "appendonly no",
                 *lockdown.redis_acl(APP_USER, lockdown.secret_file(self.secret("redis")))]
        conf.write_text("".join(line + "\n" for line in lines))
        conf.chmod(0o600)
        self._start("redis", 1, [svc._need("redis-server", "redis-server"), str(conf)], REDIS_PORT)

    def start_etcd(self, host: int) -> None:
        """Member ``h<host>``; on a restart its data directory makes the cluster flags moot."""
        peers = ",".join(f"h{h}=http://{_addr(h, ETCD_PEER_PORT)}" for h in self.hosts)
        client, peer = f"http://{_addr(host, ETCD_PORT)}", f"http://{_addr(host, ETCD_PEER_PORT)}"
        argv = [svc._need("etcd", "etcd-server"), "--name", f"h{host}", "--data-dir", str(self.root / f"etcd-{host}"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", peers, "--initial-cluster-state", "new",
                "--initial-cluster-token", self.net.tag,
                # a member back from a partition would otherwise bump the term and depose a healthy leader
                "--pre-vote"]
        self._start(f"etcd-{host}", host, argv, ETCD_PORT, wait=False)

    def program_env(self, host: int) -> dict[str, str]:
        assert self.tls is not None
        keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "TMPDIR")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update(job_user_env(os.environ.get("JOB_USER", "")))
        env.update(self.settings)
        etcd = [_addr(host, ETCD_PORT)] + [_addr(h, ETCD_PORT) for h in self.hosts if h != host]
        env.update({
            "DATABASE_URL": f"postgresql://{APP_USER}@{_addr(1, PG_PORT)}/{DATABASE}",
            "DATABASE_PASSWORD_FILE": str(self.secret("postgres")),
            "REDIS_ADDR": _addr(1, REDIS_PORT), "REDIS_USER": APP_USER,
            "REDIS_PASSWORD_FILE": str(self.secret("redis")),
            "ETCD_ENDPOINTS": ",".join(etcd), "ETCD_USER": APP_USER, "ETCD_PASSWORD_FILE": str(self.secret("etcd")),
            "SERVER_HOST": Network.address(host), "SERVER_PORT": str(SERVER_PORT),
            "AUTH_TOKEN": self.token, **self.tls.server_env(),
            "WORKER_ID": f"h{host}-worker", "JOB_WORKDIR_ROOT": str(self.root / f"jobs-h{host}"),
        })
        return env

    def start_program(self, kind: str, host: int) -> Proc:
        """``server`` or ``worker`` on ``host`` (again, after a kill: same name, same log)."""
        module = "scheduler_server" if kind == "server" else "worker"
        return self._start(f"{kind}-{host}", host, [sys.executable, "-m", module], SERVER_PORT,
                           self.program_env(host), wait=False)

    def restart_host(self, host: int) -> None:
        """What a rebooted host runs again: its etcd member, server and worker (not PostgreSQL/Redis)."""
        self.down.discard(host)
        self.start_etcd(host)
        self.start_program("server", host)
        self.start_program("worker", host)

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

    # --- looking ------------------------------------------------------------------------------

    async def cluster_info(self, host: int, timeout: float = 2.0) -> Any:
        """GetClusterInfo asked of host ``host``'s server; None when it does not answer."""
        try:
            async with open_aio_channel(self.server_address(host), self.security) as channel:
                return await pb_grpc.JobServiceStub(channel).GetClusterInfo(pb.ClusterInfoRequest(),
                                                                            timeout=timeout)
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
