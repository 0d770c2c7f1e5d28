"""A Redis primary, a replica and sentinels as real processes, for tests and ``make multihost``.

Each member listens on its own address: 127.0.0.1 with free ports in the
tests, or one host address per network namespace in scripts/multihost.py,
where ``exec_prefix`` (``("ip", "netns", "exec", "h1")``) runs the member and
every check on it inside its host. Checks go through ``redis-cli`` with that
prefix, so they work where the calling process cannot reach the address.
Timings are short (a primary is down after ``down_after_ms``), so a failover
takes a few seconds.

Logins (all optional): ``admin_password`` is the group's own ACL user
(:data:`ADMIN_USER`, every command), with which replicas replicate, sentinels
watch and reconfigure the data nodes, and the checks run; ``acl`` are more
config lines for the data nodes, such as the programs' user from
:func:`devtools.lockdown.redis_acl` (which also turns the default
user off); ``sentinel_password`` is the sentinels' own ``requirepass``
(REDIS_SENTINEL_PASSWORD_FILE). Passwords reach no command line: they are in
the 0600 config files, and in the environment of the ``redis-cli`` checks.

Use::

    group = start_group(root, [Member("127.0.0.1", p1), Member("127.0.0.1", p2)],
                        [Member("127.0.0.1", s) for s in (s1, s2, s3)])
    settings = replace(settings, redis_sentinels=group.sentinel_addrs, redis_sentinel_master=group.master)
    old = group.primary_addr()              # host:port, as the sentinels say
    group.kill(group.primary_name())        # SIGKILL the primary
    new = group.wait_failover(old)          # once every live sentinel names another one
    group.stop()
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.services import ServiceError, _need, _tail

#: The master name the sentinels watch, and REDIS_SENTINEL_MASTER's default.
MASTER = "jobcluster"
#: The ACL user of replication, the sentinels and the checks, when the group has an admin password.
ADMIN_USER = "ha-admin"


@dataclass(frozen=True)
class Member:
    """Where one process listens, and how to run a command on its host."""

    host: str
    port: int
    exec_prefix: tuple[str, ...] = ()

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Node:
    """One running redis-server (data node or sentinel)."""

    name: str
    member: Member
    conf: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class SentinelGroup:
    """Redis data nodes (the first starts as primary, the others as its replicas) and their sentinels."""

    nodes: list[Node]
    sentinels: list[Node]
    master: str = MASTER
    admin_password: str | None = None
    sentinel_password: str | None = None

    @property
    def sentinel_addrs(self) -> tuple[str, ...]:
        """REDIS_SENTINELS for the programs."""
        return tuple(s.member.addr for s in self.sentinels)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes + self.sentinels if n.name == name)

    def cli(self, node: Node, *args: str, timeout: float = 3.0, script: str | None = None) -> str:
        """``redis-cli`` against ``node`` on its host (``script``: commands a line, on its stdin, in one
        session); its output, or "" when it could not ask."""
        cmd = [*node.member.exec_prefix, "redis-cli", "-h", node.member.host, "-p", str(node.member.port)]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        password = self.sentinel_password if node in self.sentinels else self.admin_password
        if password:
            env["REDISCLI_AUTH"] = password  # not -a: a command line is readable by every local user
            cmd += [] if node in self.sentinels else ["--user", ADMIN_USER]
        try:
            done = subprocess.run(
                cmd + list(args), capture_output=True, text=True, timeout=timeout, env=env, input=script, check=False
            )
        except subprocess.TimeoutExpired:
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    def primary_addr(self) -> str | None:
        """``host:port`` of the primary as the first sentinel that answers names it."""
        for s in self.sentinels:
            if s.alive():
                reply = self.cli(s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master).split()
                if len(reply) == 2:
                    return f"{reply[0]}:{reply[1]}"
        return None

    def primary_name(self) -> str:
        """The name of the data node the sentinels name as primary."""
        addr = self.primary_addr()
        for n in self.nodes:
            if n.member.addr == addr:
                return n.name
        raise ServiceError(f"no sentinel names one of {[n.member.addr for n in self.nodes]} as primary ({addr})")

    def kill(self, name: str) -> None:
        """SIGKILL one member (as a crash would) and reap it."""
        node = self.node(name)
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()

    def starve_replicas(self) -> None:
        """Let the replicas receive none of the primary's writes from now on, so that the next failover
        loses them all (what asynchronous replication loses, made certain): the primary's admin password
        is changed and its replica links are closed, so they cannot log in again. Needs ``admin_password``."""
        if not self.admin_password:
            raise ValueError("starve_replicas needs a group started with admin_password")
        primary = self.node(self.primary_name())
        # One session: after the first command our own password is gone too. On stdin: no command line.
        reply = self.cli(
            primary,
            script=f"ACL SETUSER {ADMIN_USER} resetpass >{secrets.token_urlsafe(16)}\nCLIENT KILL TYPE replica\n",
        ).split()
        if len(reply) != 2 or reply[0] != "OK" or not reply[1].isdigit():
            raise ServiceError(f"could not cut {primary.name} off from its replicas: {reply}")

    def restart(self, name: str, timeout: float = 20.0) -> None:
        """Start a stopped member again from its config (a former primary comes back as a replica:
        the sentinels reconfigure it)."""
        node = self.node(name)
        if not node.alive():
            self._launch(node)
            self._wait(lambda: self.cli(node, "PING") == "PONG", timeout, f"{node.name} answering PING", node)

    def wait_failover(self, old_primary: str, timeout: float = 30.0) -> str:
        """Wait until every live sentinel names a primary other than ``old_primary`` (host:port); return it."""

        def moved() -> bool:
            seen = {
                self.cli(s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master).replace("\n", ":")
                for s in self.sentinels
                if s.alive()
            }
            return len(seen) == 1 and "" not in seen and old_primary not in seen

        self._wait(moved, timeout, f"the sentinels to name a primary other than {old_primary}")
        addr = self.primary_addr()
        assert addr is not None
        return addr

    def stop(self) -> None:
        """SIGTERM every member, SIGKILL what is still there after 5 s."""
        for node in self.sentinels + self.nodes:
            if node.alive():
                assert node.proc is not None
                node.proc.terminate()
        for node in self.sentinels + self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(5)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()

    def _launch(self, node: Node) -> None:
        with open(node.log_path, "ab") as log:
            cmd = [*node.member.exec_prefix, _need("redis-server", "redis-server"), str(node.conf)]
            node.proc = subprocess.Popen(
                cmd + (["--sentinel"] if node in self.sentinels else []),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _wait(self, cond: object, timeout: float, what: str, node: Node | None = None) -> None:
        assert callable(cond)
        deadline = time.monotonic() + timeout
        while not cond():
            if node is not None and not node.alive():
                raise ServiceError(f"{node.name} exited at start; see {node.log_path}:\n{_tail(node.log_path)}")
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n.name}\n{_tail(n.log_path, 8)}" for n in self.nodes + self.sentinels)
                raise ServiceError(f"timed out after {timeout:g}s waiting for {what}\n{logs}")
            time.sleep(0.1)

    def _ready_data(self, timeout: float) -> None:
        for node in self.nodes:
            self._wait(lambda n=node: self.cli(n, "PING") == "PONG", timeout, f"{node.name} answering PING", node)
        for node in self.nodes[1:]:
            self._wait(
                lambda n=node: "master_link_status:up" in self.cli(n, "INFO", "replication"),
                timeout,
                f"{node.name} to replicate the primary",
                node,
            )

    def _ready_sentinels(self, timeout: float) -> None:
        # A failover before a sentinel knows the replicas (from the primary's INFO) and the other sentinels
        # (from their hello messages) would find no replica to promote, or no quorum.
        for s in self.sentinels:
            self._wait(
                lambda s=s: _sentinel_sees(
                    self.cli(s, "SENTINEL", "MASTER", self.master), len(self.nodes) - 1, len(self.sentinels) - 1
                ),
                timeout,
                f"{s.name} to see every replica and sentinel",
                s,
            )


def _sentinel_sees(reply: str, replicas: int, others: int) -> bool:
    lines = reply.splitlines()
    state = dict(zip(lines[::2], lines[1::2]))
    return state.get("num-slaves") == str(replicas) and state.get("num-other-sentinels") == str(others)


def _write_conf(path: Path, lines: list[str]) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # may hold the password
    with os.fdopen(fd, "w") as f:
        f.write("".join(line + "\n" for line in lines))


def _quoted(value: str | Path) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def start_group(
    root: Path,
    data: Sequence[Member],
    sentinels: Sequence[Member],
    *,
    master: str = MASTER,
    quorum: int | None = None,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 5000,
    admin_password: str | None = None,
    acl: Sequence[str] = (),
    sentinel_password: str | None = None,
    timeout: float = 30.0,
) -> SentinelGroup:
    """Start ``data[0]`` as primary, ``data[1:]`` as its replicas and a sentinel on each of ``sentinels``
    (quorum: a majority of them); return once every sentinel sees every replica and the other sentinels.

    Files (configs, logs) go in ``root``; the logins are in the module's docstring.
    """
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    group = SentinelGroup([], [], master, admin_password, sentinel_password)
    quorum = quorum or len(sentinels) // 2 + 1
    auth = list(acl)
    if admin_password:
        digest = hashlib.sha256(admin_password.encode()).hexdigest()
        auth += [
            f"user {ADMIN_USER} on #{digest} ~* &* +@all",
            f"masteruser {ADMIN_USER}",
            f"masterauth {_quoted(admin_password)}",
        ]
    primary = data[0]
    for number, member in enumerate(data):
        name = f"redis{number + 1}"
        workdir = root / name
        workdir.mkdir(mode=0o700, exist_ok=True)
        lines = [
            f"port {member.port}",
            f"bind {member.host}",
            "protected-mode no",
            "daemonize no",
            f"dir {_quoted(workdir)}",
            'save ""',
            "appendonly no",
            # a replica joining waits 5 s by default for others to share the transfer
            "repl-diskless-sync-delay 0",
            *auth,
        ]
        if number:
            lines.append(f"replicaof {primary.host} {primary.port}")
        group.nodes.append(Node(name, member, workdir / "redis.conf", root / f"{name}.log"))
        _write_conf(group.nodes[-1].conf, lines)
    for number, member in enumerate(sentinels):
        name = f"sentinel{number + 1}"
        workdir = root / name
        workdir.mkdir(mode=0o700, exist_ok=True)
        lines = [
            f"port {member.port}",
            f"bind {member.host}",
            "protected-mode no",
            "daemonize no",
            f"dir {_quoted(workdir)}",
            f"sentinel monitor {master} {primary.host} {primary.port} {quorum}",
            f"sentinel down-after-milliseconds {master} {down_after_ms}",
            f"sentinel failover-timeout {master} {failover_timeout_ms}",
            f"sentinel parallel-syncs {master} 1",
        ]
        if admin_password:
            lines += [
                f"sentinel auth-user {master} {ADMIN_USER}",
                f"sentinel auth-pass {master} {_quoted(admin_password)}",
            ]
        if sentinel_password:
            lines += [
                f"requirepass {_quoted(sentinel_password)}",
                f"sentinel sentinel-pass {_quoted(sentinel_password)}",
            ]
        # The sentinel rewrites its own config (what it learns, the new primary): it must be writable.
        group.sentinels.append(Node(name, member, workdir / "sentinel.conf", root / f"{name}.log"))
        _write_conf(group.sentinels[-1].conf, lines)
    try:
        for node in group.nodes:
            group._launch(node)
        group._ready_data(timeout)
        # Started once replication is up: a sentinel's first INFO of the primary then lists the replicas
        # (the next one comes 10 s later).
        for node in group.sentinels:
            group._launch(node)
        group._ready_sentinels(timeout)
    except BaseException:
        group.stop()
        raise
    return group
