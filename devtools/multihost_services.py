"""The processes of ``make multihost``'s hosts: how each is started inside its host, and etcd's raft leader.

PostgreSQL and Redis get passwords as ``make start``'s do (:mod:`.lockdown`), reachable from the other
hosts over the bridge; etcd is one member per host; Redis may instead be a primary, a replica and a
sentinel per host (:mod:`.sentinel`). Each process runs with ``ip netns exec`` in its host.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devtools import lockdown
from devtools import services as svc
from devtools.netns import Network
from devtools.sentinel import Member, SentinelGroup, start_group

PG_PORT, REDIS_PORT, ETCD_PORT, ETCD_PEER_PORT, SERVER_PORT, SENTINEL_PORT = 5432, 6379, 2379, 2380, 50051, 26379
APP_USER, DATABASE = "jobcluster", "jobcluster"


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
            self.proc = subprocess.Popen(
                net.run_in(self.host, self.argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive() and self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(30)


def _addr(host: int, port: int) -> str:
    return f"{Network.address(host)}:{port}"


def postgres_argv(data: Path) -> list[str]:
    """initdb (first time) and pg_hba (passwords from the hosts' subnet); the command that runs it on host 1."""
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        svc._give_to_postgres(data)
        subprocess.run(
            [
                svc._need("initdb", "postgresql"),
                "-D",
                str(data),
                "-U",
                lockdown.PG_SUPERUSER,
                "--auth-local=peer",
                "--auth-host=reject",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **svc._postgres_user(),
        )
    lockdown.write_pg_auth(data, admins=(lockdown.PG_SUPERUSER, getpass.getuser()))
    with open(data / "pg_hba.conf", "a") as hba:  # the other hosts: passwords over the bridge only
        hba.write(f"host   all  all  {Network.address(0)}/24  scram-sha-256\n")
    # setpriv execs (runuser would stay as a parent): the pid we hold is PostgreSQL's own
    return [
        "setpriv",
        "--reuid=postgres",
        "--regid=postgres",
        "--clear-groups",
        svc._need("postgres", "postgresql"),
        "-D",
        str(data),
        "-p",
        str(PG_PORT),
        "-k",
        str(data),
        "-c",
        f"listen_addresses={Network.address(1)}",
        "-c",
        "max_connections=200",
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
    ]


def redis_argv(data: Path, password: str) -> list[str]:
    """One Redis on host 1 whose only user is the programs' (ACL, as make start's)."""
    data.mkdir(mode=0o700, exist_ok=True)
    conf = data / svc.REDIS_CONF
    lines = [
        f"port {REDIS_PORT}",
        f"bind {Network.address(1)}",
        "protected-mode yes",
        "daemonize no",
        f'dir "{data}"',
        'save ""',
        "appendonly no",
        *lockdown.redis_acl(APP_USER, password),
    ]
    conf.write_text("".join(line + "\n" for line in lines))
    conf.chmod(0o600)
    return [svc._need("redis-server", "redis-server"), str(conf)]


def etcd_argv(data: Path, host: int, hosts: list[int], token: str) -> list[str]:
    """Member ``h<host>``; on a restart its data directory makes the cluster flags moot."""
    peers = ",".join(f"h{h}=http://{_addr(h, ETCD_PEER_PORT)}" for h in hosts)
    client, peer = f"http://{_addr(host, ETCD_PORT)}", f"http://{_addr(host, ETCD_PEER_PORT)}"
    return [
        svc._need("etcd", "etcd-server"),
        "--name",
        f"h{host}",
        "--data-dir",
        str(data),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        peers,
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        token,
        # a member back from a partition would otherwise bump the term and depose a healthy leader
        "--pre-vote",
    ]


def etcd_leader(hosts: list[int]) -> int | None:
    """The host whose etcd member is raft leader now (from its /metrics), or None."""
    for host in hosts:
        try:
            with urllib.request.urlopen(f"http://{_addr(host, ETCD_PORT)}/metrics", timeout=2) as reply:
                if b"\netcd_server_is_leader 1" in reply.read():
                    return host
        except OSError:
            continue
    return None


def move_etcd_leader(hosts: list[int], to: int, root_password: str) -> None:
    """Hand etcd's raft leadership to the member on ``to`` (etcdctl move-leader, as etcd's root)."""
    leader = etcd_leader(hosts)
    if leader is None or leader == to:
        return
    env = {"PATH": os.environ["PATH"], "ETCDCTL_API": "3", "ETCDCTL_USER": "root", "ETCDCTL_PASSWORD": root_password}
    listed = subprocess.run(
        ["etcdctl", "--endpoints", _addr(to, ETCD_PORT), "member", "list", "-w", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    member = next(m["ID"] for m in json.loads(listed.stdout)["members"] if m["name"] == f"h{to}")
    subprocess.run(
        ["etcdctl", "--endpoints", _addr(leader, ETCD_PORT), "move-leader", f"{member:x}"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )


def start_sentinels(net: Network, root: Path, hosts: list[int], passwords: dict[str, str]) -> SentinelGroup:
    """Redis primary on host 1, its replica on host 2, a sentinel on each host (quorum 2); the programs log in
    as on one Redis (``passwords["redis"]``), the sentinels take ``passwords["sentinel"]``."""

    def member(host: int, port: int) -> Member:
        return Member(Network.address(host), port, tuple(net.run_in(host, [])))

    return start_group(
        root / "redis-sentinel",
        [member(1, REDIS_PORT), member(2, REDIS_PORT)],
        [member(h, SENTINEL_PORT) for h in hosts],
        admin_password=passwords["admin"],
        acl=lockdown.redis_acl(APP_USER, passwords["redis"]),
        sentinel_password=passwords["sentinel"],
    )
