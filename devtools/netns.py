"""Hosts on one machine: Linux network namespaces joined by a bridge, for ``make multihost``.

Each run gets names of its own, ``jcmh-<pid>-<random>-<role>``: the pid is the
process that made them, so a later ``--cleanup`` removes the namespaces of runs
that are gone and never those of one still running. The bridge lives in a
namespace of its own, so the machine's own network is never touched; host
``N`` has ``10.77.0.N/24`` on its ``eth0``, and the observer (the process that
drives the run) has ``10.77.0.100``. Cutting a host off sets the bridge's end of
its link down. Needs root and the ``ip`` command (iproute2).
"""

from __future__ import annotations

import ctypes
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "jcmh"
SUBNET = "10.77.0"
OBSERVER = 100
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_NAME = re.compile(rf"^{PREFIX}-(\d+)-([0-9a-f]+)-(\w+)$")


class NetnsError(RuntimeError):
    """A namespace or link could not be made; the message has the command and its error."""


def unavailable() -> str:
    """Why network namespaces cannot be used here ("" when they can)."""
    if os.geteuid() != 0:
        return "needs root (ip netns add)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    probe = f"{PREFIX}-{os.getpid()}-0-probe"
    # A SIGTERM or Ctrl-C while the probe exists would leave it behind: held until it is deleted again.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
    try:
        done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if done.returncode != 0:
            return f"ip netns add fails here: {done.stderr.strip()}"
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return ""


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Network:
    """Hosts ``1..hosts`` and an observer on one bridge; :meth:`create`, then :meth:`destroy`."""

    hosts: int = 3
    tag: str = field(default_factory=lambda: f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}")
    made: list[str] = field(default_factory=list)

    def ns(self, host: int | str) -> str:
        """The namespace of host ``host`` (a number), or of ``"br"`` / ``"obs"``."""
        return f"{self.tag}-{'h' + str(host) if isinstance(host, int) else host}"

    @staticmethod
    def address(host: int) -> str:
        return f"{SUBNET}.{host}"

    def create(self) -> None:
        """The bridge namespace, then each host and the observer with its link up and loopback up."""
        bridge = self.ns("br")
        self._add(bridge)
        ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        ip("-n", bridge, "link", "set", "br0", "up")
        for host in [*range(1, self.hosts + 1), OBSERVER]:
            name = self.ns(host if host != OBSERVER else "obs")
            self._add(name)
            port = f"p{host}"
            ip("link", "add", port, "netns", bridge, "type", "veth", "peer", "name", "eth0", "netns", name)
            ip("-n", name, "addr", "add", f"{SUBNET}.{host}/24", "dev", "eth0")
            for dev in ("lo", "eth0"):
                ip("-n", name, "link", "set", dev, "up")
            ip("-n", bridge, "link", "set", port, "master", "br0")
            ip("-n", bridge, "link", "set", port, "up")

    def _add(self, name: str) -> None:
        # Noted first: a SIGTERM while `ip netns add` runs may stop us after the kernel made the name, and
        # destroy() must delete it then too (deleting a name never made is harmless).
        self.made.append(name)
        ip("netns", "add", name)

    def cut(self, host: int) -> None:
        """Host ``host`` can reach nobody, and nobody it (its port on the bridge goes down)."""
        ip("-n", self.ns("br"), "link", "set", f"p{host}", "down")

    def heal(self, host: int) -> None:
        ip("-n", self.ns("br"), "link", "set", f"p{host}", "up")

    def run_in(self, host: int | str, argv: list[str]) -> list[str]:
        """``argv`` run inside host ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def pids(self, host: int | str) -> list[int]:
        return namespace_pids(self.ns(host))

    def kill_host(self, host: int) -> int:
        """kill -9 every process in host ``host`` (a machine losing power); how many there were."""
        return kill_all(self.ns(host))

    def enter(self, host: int | str) -> None:
        """Move the calling thread into a namespace. Call before any other thread starts (gRPC's, asyncio's
        executor): threads made later inherit it, earlier ones stay where they were."""
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(NETNS_DIR / self.ns(host), os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise NetnsError(f"setns {self.ns(host)}: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)

    def destroy(self) -> list[int]:
        """Kill what runs in our namespaces (but not this process) and delete them; safe to call twice.

        The observer goes first: a program started from it with ``ip netns exec`` may still be there, about
        to enter its host. Returns the pids that had not exited when :func:`remove` gave up (none normally)."""
        stuck = []
        for name in reversed(self.made):
            stuck += remove(name)
        self.made.clear()
        return stuck


def namespace_pids(name: str) -> list[int]:
    """The processes (this one excepted) whose network namespace is ``name``.

    Read from /proc here, as ``ip netns pids`` does: that command, run from inside the namespace, lists
    itself."""
    ns = _identity(name)
    if ns is None:
        return []
    me = os.getpid()
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) != me and _in_namespace(int(e), ns)]


def _identity(name: str) -> tuple[int, int] | None:
    """(device, inode) of namespace ``name``; None when there is no such name."""
    try:
        st = os.stat(NETNS_DIR / name)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _in_namespace(pid: int, ns: tuple[int, int]) -> bool:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:  # gone, or exiting (its namespaces already released)
        return False
    return (st.st_dev, st.st_ino) == ns


def kill_all(name: str) -> int:
    """kill -9 every process in namespace ``name`` now; how many there were."""
    pids = namespace_pids(name)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def remove(name: str, timeout: float = 10.0) -> list[int]:
    """kill -9 what runs in namespace ``name`` until nothing does and every one of those processes has
    exited, then delete the name; returns the pids still exiting after ``timeout`` (none normally).

    A killed process leaves the namespace's list before it has finished exiting (a big one frees its
    memory afterwards, for longer on a loaded machine), so each is watched through a pidfd until it has
    exited: a name deleted while a process still ran inside left that process behind."""
    deadline = time.monotonic() + timeout
    exiting: dict[int, int] = {}  # pid -> its pidfd, readable once the process has exited
    ns = _identity(name)
    try:
        while ns is not None and time.monotonic() < deadline:
            listed = [pid for pid in namespace_pids(name) if pid not in exiting]
            for pid in listed:
                _kill(pid, ns, exiting)
            running = [fd for fd in exiting.values() if not _exited(fd)]
            if not listed and not running:
                break
            select.select(running, [], [], 0.02)  # until one exits, or 20 ms for processes forked meanwhile
        stuck = [pid for pid, fd in exiting.items() if not _exited(fd)]
    finally:
        for fd in exiting.values():
            os.close(fd)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return stuck


def _kill(pid: int, ns: tuple[int, int], exiting: dict[int, int]) -> None:
    """SIGKILL ``pid`` through a pidfd, once sure the pidfd holds a process of namespace ``ns`` (the pid
    may have been reused since /proc was read); the pidfd goes in ``exiting``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    if not _in_namespace(pid, ns):
        os.close(fd)
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    exiting[pid] = fd


def _exited(pidfd: int) -> bool:
    return bool(select.select([pidfd], [], [], 0)[0])


def leftovers() -> list[str]:
    """Namespaces of earlier runs whose process is gone (a crash, a kill -9)."""
    names = [p.name for p in NETNS_DIR.iterdir()] if NETNS_DIR.is_dir() else []
    found = []
    for name in names:
        m = _NAME.match(name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            found.append(name)
    return sorted(found)
