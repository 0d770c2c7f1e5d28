"""The worker's handle on its job launcher (worker/launcher.py): start a job through it, learn when its
shell exits, and start another launcher when one dies.

One launcher per worker, started from the worker's main thread (its parent-death signal fires when the
thread that started it ends). Requests and replies are datagrams on one socket pair, read here by one
callback on the event loop: a job costs the worker two sends (start, forget) and two replies (started,
exited), against a fork of the worker, an exec of setpriv and asyncio's subprocess transport before.
"""

from __future__ import annotations

import array
import asyncio
import collections
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from worker import launcher
from worker.launcher import KILL_FOR, MARK_ENV, kill_all

log = logging.getLogger("worker.launcher")

#: Start and exit replies are a few bytes; a failure's reason at most 4,000.
REPLY_MAX = 8192
#: A launcher that has not answered a start for this long is stuck (SIGSTOPped?): it is replaced.
START_TIMEOUT = 30.0
CLOSE_WAIT = 5.0


@dataclass(frozen=True)
class RunAs:
    """The credentials a job starts with: this uid and gid, and only these supplementary groups."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


class NotStarted(Exception):
    """The job's shell could not be started (the message says why)."""


@dataclass(eq=False)
class Child:
    """A job's shell, started by the launcher: its pid is also its process group and session id."""

    pid: int
    returncode: int | None = None  # once it exited: its code, or -N when killed by signal N
    lost: str = ""  # the launcher died before the shell was seen to exit (it was killed then)
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    async def wait(self) -> int | None:
        await asyncio.shield(self.done)
        return self.returncode


class Launcher:
    """Starts the worker's jobs through its launcher process, and replaces the launcher if it dies."""

    def __init__(self, worker_id: str, way: str = "") -> None:
        self.worker_id = worker_id
        self.way = way  # "fork": without worker/spawn.c's vfork helper (tests)
        #: In every job's environment (MARK_ENV): the launcher also kills what carries it.
        self.mark = secrets.token_hex(12)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._pidfd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next = 0
        self._starting: dict[int, asyncio.Future[Child]] = {}
        self._children: dict[int, Child] = {}  # running shells by pid
        self._ending: set[asyncio.Future[None]] = set()  # kills under way (held: tasks are weakly kept)
        self._outbox: collections.deque[tuple[bytes, list[int], list[int]]] = collections.deque()
        self._writing = False  # waiting for room in the socket to send the outbox
        self._closed = False

    @classmethod
    def start(cls, worker_id: str, way: str = "") -> Launcher:
        """Start a launcher for this process, the worker ``worker_id`` (from the main thread, with the
        event loop running: the loop watches the launcher and reads its replies)."""
        handle = cls(worker_id, way)
        handle._spawn()
        return handle

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The launcher's exit status once it has ended (after :meth:`close`), else None."""
        assert self._proc is not None
        return self._proc.returncode

    # --- jobs ----------------------------------------------------------------------------------------

    async def spawn(
        self, command: str, env: Mapping[str, str], cwd: str | None, run_as: RunAs | None, out_fd: int
    ) -> Child:
        """Start ``sh -c command`` in a new session, stdin /dev/null, stdout and stderr ``out_fd`` (the
        caller keeps and closes its own copy). Raises :class:`NotStarted` with the reason."""
        if self._sock is None:
            raise NotStarted("the job launcher is not running (it is being restarted)")
        self._next += 1
        req = {"i": self._next, "command": command, "env": {**env, MARK_ENV: self.mark}, "cwd": cwd}
        if run_as is not None:
            req |= {"uid": run_as.uid, "gid": run_as.gid, "groups": list(run_as.groups)}
        request = self._next
        data = b"+" + json.dumps(req).encode()
        fds = [out_fd]
        if len(data) > launcher.INLINE_MAX:  # a long command: the JSON goes in a memfd beside the pipe
            memfd = os.memfd_create("job-request", os.MFD_CLOEXEC)
            with open(memfd, "wb", closefd=False) as f:
                f.write(data[1:])
            data, fds = b"+", [out_fd, memfd]
        started: asyncio.Future[Child] = asyncio.get_running_loop().create_future()
        self._starting[request] = started
        self._send(data, fds, close=fds[1:])  # ``out_fd`` stays open (the caller's) until this returns
        try:
            # Not shielded: a cancel (the worker's shutdown) cancels ``started``, and a job started after
            # all is killed when its start is answered (_resolve).
            async with asyncio.timeout(START_TIMEOUT):
                return await started
        except TimeoutError:
            self._starting.pop(request, None)
            self._stuck(f"did not start a job within {START_TIMEOUT:g}s")
            raise NotStarted(f"the job launcher did not start the job within {START_TIMEOUT:g}s") from None

    def forget(self, pid: int) -> None:
        """The job's shell exited and what it left was killed: the launcher forgets its session."""
        self._send(b"-%d" % pid)

    def _send(self, data: bytes, fds: list[int] | None = None, close: list[int] | None = None) -> None:
        """Send one datagram with ``fds`` attached, now or as soon as the socket has room (a launcher
        busy for a moment neither blocks the worker nor loses a message), then close ``close``."""
        self._outbox.append((data, fds or [], close or []))
        if len(self._outbox) == 1:
            self._flush()

    def _flush(self) -> None:
        while self._outbox and self._sock is not None:
            data, fds, close = self._outbox[0]
            try:
                if fds:
                    self._sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                else:
                    self._sock.send(data)
            except BlockingIOError:
                if not self._writing and self._loop is not None:
                    self._loop.add_writer(self._sock.fileno(), self._flush)
                    self._writing = True
                return
            except OSError:
                return  # it died: the pidfd callback clears the outbox and starts another
            self._outbox.popleft()
            for fd in close:
                os.close(fd)
        if self._writing and self._loop is not None and self._sock is not None:
            self._loop.remove_writer(self._sock.fileno())
            self._writing = False

    def _stuck(self, why: str) -> None:
        """Never block the worker on its launcher: kill it; the pidfd callback replaces it."""
        if self._proc is not None and self._proc.poll() is None:
            log.warning("the job launcher (pid %d) %s; replacing it", self._proc.pid, why)
            self._proc.kill()

    def _on_reply(self) -> None:
        assert self._sock is not None
        while True:
            try:
                msg = self._sock.recv(REPLY_MAX, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                return  # it died: the pidfd callback deals with it
            if not msg:  # end of file: it died (the pidfd callback follows); stop reading
                if self._loop is not None:
                    self._loop.remove_reader(self._sock.fileno())
                return
            kind, _, rest = msg.partition(b" ")
            first, _, second = rest.partition(b" ")
            if kind == b"S":
                child = Child(int(second))
                self._children[child.pid] = child
                self._resolve(int(first), child)
            elif kind == b"E":
                self._resolve(int(first), NotStarted(second.decode(errors="replace")))
            elif kind == b"X":
                ended = self._children.pop(int(first), None)
                if ended is not None:
                    ended.returncode = int(second)
                    ended.done.set_result(None)

    def _resolve(self, request: int, result: Child | NotStarted) -> None:
        started = self._starting.pop(request, None)
        if started is not None and not started.done():
            if isinstance(result, Child):
                started.set_result(result)
            else:
                started.set_exception(result)
        elif isinstance(result, Child):  # nobody waits for it any more (a cancelled start): end it
            self._ending.add(asyncio.ensure_future(self._abandon(result)))

    async def _abandon(self, child: Child) -> None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            await child.wait()
            await asyncio.to_thread(kill_all, {child.pid}, 1.0)
        finally:
            self.forget(child.pid)
            self._ending.discard(asyncio.current_task())

    # --- the launcher process -----------------------------------------------------------------------

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # close-on-exec: no job gets one
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    os.path.abspath(launcher.__file__),
                    str(os.getpid()),
                    self.worker_id,
                    *([self.way] if self.way else []),
                ],
                stdin=theirs.fileno(),
                env={},
                start_new_session=True,
                cwd="/",
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)  # the kernel caps it at wmem_max
        ours.sendall(b"=%s" % self.mark.encode())
        ours.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(ours.fileno(), self._on_reply)
        self._pidfd = os.pidfd_open(self.pid)
        self._loop.add_reader(self._pidfd, self._died)

    def _unwatch(self) -> None:
        if self._loop is None:
            return
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            if self._writing:
                self._loop.remove_writer(self._sock.fileno())
                self._writing = False
            self._sock.close()
            self._sock = None
        for _, _, close in self._outbox:  # never sent: a new launcher gets none of it
            for fd in close:
                os.close(fd)
        self._outbox.clear()

    def _died(self) -> None:
        """The launcher exited while the worker lives: kill the jobs it had started (their shells'
        exits can no longer be learnt), end their attempts, and start another launcher."""
        assert self._proc is not None
        self._unwatch()
        code = self._proc.wait()
        pid, mark = self._proc.pid, self.mark
        starting, self._starting = self._starting, {}
        children, self._children = self._children, {}
        why = f"the worker's job launcher (pid {pid}) died (exit status {code})"
        for started in starting.values():
            if not started.done():
                started.set_exception(NotStarted(why))
        log.error("%s; %d running job(s) are killed; starting another launcher", why, len(children))
        self.mark = secrets.token_hex(12)  # the next launcher's jobs are not the dead one's
        if not self._closed:
            try:
                self._spawn()
            except OSError as exc:
                log.error("could not start a new job launcher (%s): jobs cannot start; restart the worker", exc)
        self._ending.add(asyncio.ensure_future(self._end(children, mark, why)))

    async def _end(self, children: dict[int, Child], mark: str, why: str) -> None:
        try:
            await asyncio.to_thread(kill_all, set(children), KILL_FOR, mark.encode())
        finally:
            for child in children.values():
                child.lost = why
                child.done.set_result(None)
            self._ending.discard(asyncio.current_task())

    def close(self) -> None:
        """Stop the launcher: it kills the sessions still registered (none after a clean stop) and exits."""
        if self._closed or self._proc is None:
            return
        self._closed = True
        if self._sock is not None:
            self._send(b".")
        self._unwatch()
        try:
            self._proc.wait(CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            log.error("the job launcher (pid %d) did not exit; killing it", self._proc.pid)
            self._proc.kill()
            self._proc.wait()
