"""Kill a worker's jobs when the worker dies, however it dies (SIGKILL included).

A worker starts one reaper: this file run as a script by a fresh interpreter
(``python -I -S reaper.py WORKER_PID WORKER_ID``: standard library only, an empty
environment, its own session so a terminal's Ctrl-C does not reach it). The
reaper's stdin is the read end of a pipe whose only writer is the worker:

- ``=MARK`` first: a random token the worker also puts in every job's
  environment (``JOBCLUSTER_JOB_MARK``). A worker killed between starting a
  job's shell and writing its ``+`` line (an asyncio spawn has awaits in
  between: milliseconds on a loaded host, so a kill a minute finds it now and
  then) leaves a job the reaper was never told of; so on end of file it also
  kills, for a moment after, every process whose environment carries the mark,
  with its session.
- ``+PGID`` a line when a job's shell starts (it leads its own session and
  process group, so PGID is also its session id), ``-PGID`` when it has ended
  and its group was killed. One ``write()`` of a few bytes per change.
- ``.`` the worker stops cleanly (no job is starting: no mark to look for).
- End of file: the worker has exited, by a clean stop or by SIGKILL alike (the
  kernel closes its end either way). The reaper SIGKILLs every registered
  group and every process still in one of their sessions (a job's ``set -m``
  makes new groups inside its session), keeps at it until /proc shows none
  left, then exits. After a clean stop nothing is registered, so it just exits.

What it cannot catch: a process that left its job's session (``setsid``,
daemons) and cleared the mark from its environment. A reaper that dies does
not kill anything; the worker notices at once (a pidfd) and starts another,
which it tells about every job still running.

A worker restarted at once under the same id must not put its old jobs back in
the queue while their processes may still be running: it first waits for the
reapers of earlier processes with its id (:func:`wait_for_earlier`), which exit
only once their kills are done.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
#: After the worker is gone, keep killing (processes forked meanwhile) for at most this long.
KILL_FOR = 5.0
#: ...and keep looking for marked processes at least this long (a shell forked just before the worker
#: died execs with the mark a moment later).
MARK_WATCH = 0.25
MARK_ENV = "JOBCLUSTER_JOB_MARK"
SCAN_INTERVAL = 0.01
CLOSE_WAIT = 5.0

log = logging.getLogger("worker.reaper")


# --- the reaper process ---------------------------------------------------------------------------


def job_processes(sessions: set[int]) -> list[int]:
    """Live processes (not zombies) whose process group or session is one of ``sessions``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        # fields: state ppid pgrp session ...
        if fields[0] != b"Z" and (int(fields[2]) in sessions or int(fields[3]) in sessions):
            found.append(int(name))
    return found


def marked_sessions(mark: bytes) -> set[int]:
    """Sessions of the live processes whose environment holds ``JOBCLUSTER_JOB_MARK=mark``."""
    want = b"\0" + MARK_ENV.encode() + b"=" + mark + b"\0"
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if want not in b"\0" + f.read():
                    continue
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z" and int(fields[3]) > 1:
            found.add(int(fields[3]))
    return found


def kill_all(sessions: set[int], kill_for: float = KILL_FOR, mark: bytes = b"") -> int:
    """SIGKILL the groups ``sessions`` and every process in those sessions until none is left; with a
    ``mark``, also the sessions of processes carrying it, looked for at least :data:`MARK_WATCH`.

    Returns how many processes there were at first.
    """
    started = time.monotonic()
    if mark:
        sessions |= marked_sessions(mark)
    found = job_processes(sessions)
    for pgid in sessions:
        _kill(os.killpg, pgid)
    left = found
    deadline = started + kill_for
    while (left or (mark and time.monotonic() < started + MARK_WATCH)) and time.monotonic() < deadline:
        for pid in left:
            _kill(os.kill, pid)
        time.sleep(SCAN_INTERVAL)
        if mark:
            sessions |= marked_sessions(mark)
        left = job_processes(sessions)
    return len(found)


def reapers() -> list[tuple[int, int, str]]:
    """Every live job reaper on this host: (reaper pid, worker pid, worker id)."""
    found = []
    me = os.path.abspath(__file__).encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{name}/stat", "rb") as f:
                zombie = f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except OSError:
            continue
        # [python, -I, -S, reaper.py, WORKER_PID, WORKER_ID, ""]
        if len(argv) == 7 and argv[3] == me and argv[4].isdigit() and not zombie:
            found.append((int(name), int(argv[4]), argv[5].decode(errors="replace")))
    return found


def wait_for_earlier(worker_id: str, timeout: float = KILL_FOR + 2.0) -> list[int]:
    """Wait until no reaper of a *dead* worker with id ``worker_id`` is left on this host: each is
    still killing that worker's jobs (it exits once they are gone). A reaper whose worker lives is
    not waited for (that worker is running; the id check refuses a second one).

    Returns the reapers still there at ``timeout`` (stuck, or SIGSTOPped): the caller says so.
    """

    def earlier() -> list[int]:
        return [
            pid
            for pid, worker_pid, wid in reapers()
            if wid == worker_id and worker_pid != os.getpid() and not _alive(worker_pid)
        ]

    deadline = time.monotonic() + timeout
    left = earlier()
    while left and time.monotonic() < deadline:
        time.sleep(SCAN_INTERVAL)
        left = earlier()
    return left


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _kill(how: Callable[[int, int], None], target: int) -> None:
    try:
        how(target, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def read_registrations(fd: int, sessions: set[int]) -> bytes:
    """Apply ``+PGID`` / ``-PGID`` lines from ``fd`` to ``sessions`` until end of file; returns the
    ``=MARK`` (empty when none came)."""
    mark = b""
    pending = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:  # made non-blocking when the worker died: all that was written is read
            return mark
        if not chunk:
            return mark
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            # Only group ids > 1: killpg(0) would be the reaper's own group, 1 is init's.
            if line[:1] == b"=" and line[1:].isalnum():
                mark = line[1:]
            elif line == b".":  # a clean stop: no job is starting, so no marked process to look for
                mark = b""
            elif line[:1] in (b"+", b"-") and line[1:].isdigit() and int(line[1:]) > 1:
                (sessions.add if line[:1] == b"+" else sessions.discard)(int(line[1:]))


def _prctl(option: int, arg: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {arg}) failed")


def reaper_main(worker_pid: int) -> int:
    """Watch stdin until the worker is gone, then kill its jobs (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def parent_gone(signum: int = 0, frame: object = None) -> None:
        # The belt to the pipe's end of file (should the write end have leaked to another process):
        # SIGTERM is the parent-death signal. Reading goes on without blocking, so what the worker
        # wrote is still read, then the killing starts. From anyone else, while the worker lives,
        # SIGTERM is ignored: the worker's jobs must not die because its reaper was told to stop.
        if os.getppid() != worker_pid:
            os.set_blocking(0, False)

    signal.signal(signal.SIGTERM, parent_gone)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # Not dumpable: no process of the same user (a job, when jobs run as the worker's own user) may open
    # /proc/<reaper>/fd/0, which would give it a write end of the pipe: lines of its own, and no end of
    # file when the worker dies (the parent-death signal above covers that too).
    _prctl(PR_SET_DUMPABLE, 0)
    parent_gone()  # it may have died before the prctl
    sessions: set[int] = set()
    mark = read_registrations(0, sessions)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    told = len(sessions)
    started = time.monotonic()
    # A mark but no group registered: a clean stop, or a kill in the instant a job was starting.
    killed = kill_all(sessions, mark=mark)
    if killed:
        print(
            f"reaper: worker {worker_pid} is gone: SIGKILL to {told} job group(s) it was told of, "
            f"{len(sessions) - told} more found by the mark, "
            f"{killed} process(es) in them, all gone in {time.monotonic() - started:.3f}s",
            file=sys.stderr,
            flush=True,
        )
    return 0


# --- the worker's side --------------------------------------------------------------------------


class Reaper:
    """The worker's handle on its reaper: register job groups, and restart the reaper if it dies."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        #: In every job's environment (MARK_ENV): the reaper also kills what carries it.
        self.mark = secrets.token_hex(12)
        self._groups: set[int] = set()
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._pidfd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._replacing = False  # the reaper was killed for not reading; the pidfd callback replaces it

    @classmethod
    def start(cls, worker_id: str) -> Reaper:
        """Start a reaper for this process, the worker ``worker_id`` (call from the main thread: the
        parent-death signal fires when the thread that started the reaper ends)."""
        reaper = cls(worker_id)
        reaper._spawn()
        return reaper

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The reaper's exit status once it has ended (after :meth:`close`), else None."""
        assert self._proc is not None
        return self._proc.returncode

    def add(self, pgid: int) -> None:
        """A job's group (and session) started: kill it if this process dies."""
        self._groups.add(pgid)
        self._send(b"+%d\n" % pgid)

    def remove(self, pgid: int) -> None:
        """The job's group was killed after its shell ended: forget it."""
        self._groups.discard(pgid)
        self._send(b"-%d\n" % pgid)

    def _send(self, data: bytes) -> None:
        try:
            os.write(self._fd, data)  # a line is under PIPE_BUF: written whole or not at all
        except BlockingIOError:
            # The pipe is full: the reaper stopped reading (SIGSTOPped?). Never block the worker on it:
            # replace it; the new one is handed every group, this change included.
            if self._proc is not None and not self._replacing:
                log.warning("the job reaper (pid %d) is not reading; replacing it", self._proc.pid)
                self._proc.kill()
                self._replacing = True
        except OSError as exc:
            # It died and the pidfd callback has not run yet: that restarts it, with every group.
            log.debug("job reaper not reachable (%s); it is being restarted", exc)

    def _spawn(self) -> None:
        read_end, write_end = os.pipe()  # both close-on-exec: no job inherits the write end
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid()), self.worker_id],
                stdin=read_end,
                env={},
                start_new_session=True,
                cwd="/",
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._fd = write_end
        self._replacing = False
        os.set_blocking(self._fd, False)
        self._send(b"=%s\n" % self.mark.encode() + b"".join(b"+%d\n" % g for g in self._groups))
        self._watch()

    def _watch(self) -> None:
        """Call :meth:`_respawn` when the reaper exits (needs a running event loop; else not watched)."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._pidfd = os.pidfd_open(self.pid)
        self._loop.add_reader(self._pidfd, self._respawn)

    def _unwatch(self) -> None:
        if self._pidfd >= 0 and self._loop is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def _respawn(self) -> None:
        assert self._proc is not None
        self._unwatch()
        code = self._proc.wait()
        os.close(self._fd)
        self._fd = -1  # writes fail (and are ignored) until a new reaper is there
        log.warning(
            "the job reaper (pid %d) exited with %s; starting another, %d running job group(s) handed to it",
            self._proc.pid,
            code,
            len(self._groups),
        )
        try:
            self._spawn()
        except OSError as exc:
            log.error(
                "could not start a new job reaper (%s): the jobs of this worker now outlive it if it is "
                "killed with SIGKILL; restart the worker",
                exc,
            )

    def close(self) -> None:
        """Stop the reaper: it kills the groups still registered (none after a clean stop) and exits."""
        if self._closed or self._proc is None:
            return
        self._closed = True
        self._unwatch()
        if self._fd >= 0:
            self._send(b".\n")
            os.close(self._fd)
        try:
            self._proc.wait(CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            log.error("the job reaper (pid %d) did not exit; killing it", self._proc.pid)
            self._proc.kill()
            self._proc.wait()


if __name__ == "__main__":
    sys.exit(reaper_main(int(sys.argv[1])))
