"""The job launcher: one long-lived root process per worker that starts its jobs and kills them when the
worker dies, however it dies (SIGKILL included).

A worker starts one launcher: this file run as a script by a fresh interpreter (``python -I -S
launcher.py WORKER_PID WORKER_ID``: standard library only, an empty environment, its own session so a
terminal's Ctrl-C does not reach it, not dumpable, ``no_new_privs`` set for it and every job it starts).
Its stdin is one end of a ``SOCK_SEQPACKET`` socket pair whose other end only the worker holds. Each
message is one datagram:

- ``=MARK`` first: a random token the worker also puts in every job's environment
  (``JOBCLUSTER_JOB_MARK``). When the worker dies, the launcher also kills, for a moment after, every
  process whose environment carries it, with its session (a job that left its session but kept its
  environment).
- ``+{json}`` with one descriptor (SCM_RIGHTS): start a job. The JSON names the request (``i``), the
  command, its environment, its directory and the credentials to drop to (uid, gid, groups); the
  descriptor becomes the job's stdout and stderr. A request over :data:`INLINE_MAX` bytes comes as
  ``+`` alone with a second descriptor, a memfd that holds the JSON. The launcher vforks (through
  worker/spawn.c, the extension ``worker._spawn``; os.fork when it was not built); the child makes a new
  session, sets stdin to /dev/null, enters the directory, drops to the job user (groups, gid, uid),
  resets every signal and execs ``/bin/sh -c COMMAND``. The reply, ``S i pid`` (running) or ``E i
  reason`` (not started), comes once the exec has happened or failed. The job's session is registered
  before the launcher reads another message: no window in which the worker's death leaves it unknown.
- ``-PID``: the worker has killed what the job ``PID`` left in its session; forget the session.
- ``.``: the worker stops cleanly (no job is running).

When a job's shell exits, the launcher reaps it and replies ``X pid returncode`` (-N: killed by signal
N); the worker kills what the job left (its group; its session when something was left) and sends
``-PID``.

End of file: the worker has exited, by a clean stop or by SIGKILL alike (the kernel closes its end
either way); SIGTERM, its parent-death signal, is the belt to that. The launcher SIGKILLs every
registered group and every process still in one of their sessions (a job's ``set -m`` makes new groups
inside its session), keeps at it until /proc shows none left, then exits.

What it cannot catch: a process that left its job's session (``setsid``, daemons) and cleared the mark
from its environment. A launcher that dies takes nothing with it: the worker notices at once (a pidfd),
kills the sessions of the jobs it had started (their attempts end as failures that say so), and starts
another.

A worker restarted at once under the same id must not put its old jobs back in the queue while their
processes may still be running: it first waits for the launchers of earlier processes with its id
(:func:`wait_for_earlier`), which exit only once their kills are done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.machinery
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
#: A request larger than this (a long command) comes in a memfd attached beside the output descriptor,
#: not in the datagram: a datagram may be at most the socket's send buffer, which the host may keep small.
INLINE_MAX = 60 * 1024
#: After the worker is gone, keep killing (processes forked meanwhile) for at most this long.
KILL_FOR = 5.0
#: ...and keep looking for marked processes at least this long (a shell forked just before the worker
#: died execs with the mark a moment later).
MARK_WATCH = 0.25
MARK_ENV = "JOBCLUSTER_JOB_MARK"
SCAN_INTERVAL = 0.01


# --- killing what a job left -----------------------------------------------------------------------


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


def launchers() -> list[tuple[int, int, str]]:
    """Every live job launcher on this host: (launcher pid, worker pid, worker id)."""
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
        # [python, -I, -S, launcher.py, WORKER_PID, WORKER_ID, (WAY,) ""]
        if len(argv) in (7, 8) and argv[3] == me and argv[4].isdigit() and not zombie:
            found.append((int(name), int(argv[4]), argv[5].decode(errors="replace")))
    return found


def wait_for_earlier(worker_id: str, timeout: float = KILL_FOR + 2.0) -> list[int]:
    """Wait until no launcher of a *dead* worker with id ``worker_id`` is left on this host: each is
    still killing that worker's jobs (it exits once they are gone). A launcher whose worker lives is
    not waited for (that worker is running; the id check refuses a second one).

    Returns the launchers still there at ``timeout`` (stuck, or SIGSTOPped): the caller says so.
    """

    def earlier() -> list[int]:
        return [
            pid
            for pid, worker_pid, wid in launchers()
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


def _prctl(option: int, arg: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {arg}) failed")


# --- the launcher process --------------------------------------------------------------------------

#: Reset in each job before its exec (an ignored signal stays ignored across exec): the launcher ignores
#: SIGINT, Python SIGPIPE and SIGXFSZ, and whatever started the worker may have ignored others (a
#: background job of a shell: SIGINT, SIGQUIT; nohup: SIGHUP). Python cannot reset glibc's own signals
#: (32, 33); worker/spawn.c resets every one.
JOB_SIGNALS = tuple(sorted(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}))


def _child(req: dict[str, Any], out_fd: int, err_w: int, devnull: int) -> None:
    """In the forked child: new session, stdin /dev/null, stdout and stderr ``out_fd``, the directory
    (entered with the launcher's rights, as before the switch), then the job user, then ``sh -c``. Never
    returns: on failure the reason goes to ``err_w`` and the child exits 127."""
    try:
        signal.set_wakeup_fd(-1)
        for sig in JOB_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        if req.get("cwd"):
            os.chdir(req["cwd"])
        if req.get("uid") is not None:
            os.setgroups(req["groups"])
            os.setresgid(req["gid"], req["gid"], req["gid"])
            os.setresuid(req["uid"], req["uid"], req["uid"])
        os.execve("/bin/sh", ["/bin/sh", "-c", req["command"]], req["env"])
    except BaseException as exc:  # noqa: BLE001 - the child must never return into the launcher's loop
        try:
            os.write(err_w, str(exc).encode(errors="replace")[:4000] or b"failed")
        except OSError:
            pass
    finally:
        os._exit(127)


SHELL = b"/bin/sh"
#: What jc_spawn's failed step was doing, and the path it names (None: none).
STEPS = {
    1: ("setsid", None),
    2: ("stdin, stdout and stderr", None),
    3: ("chdir", None),
    4: ("setgroups", None),
    5: ("setresgid", None),
    6: ("setresuid", None),
    7: ("exec", "/bin/sh"),
}


def load_vfork() -> Any:
    """worker/spawn.c's ``jc_spawn``, built beside this file as the extension ``worker._spawn``; None
    when it was not built (no C compiler where the project was installed)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(here, "_spawn" + suffix)
        if not os.path.exists(path):
            continue
        try:
            fn = ctypes.CDLL(path).jc_spawn
        except (OSError, AttributeError):
            return None
        c_int_p = ctypes.POINTER(ctypes.c_int)
        fn.argtypes = [
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
            ctypes.c_long,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_uint),
            c_int_p,
            c_int_p,
        ]
        fn.restype = ctypes.c_int
        return fn
    return None


class LauncherProcess:
    """The launcher's state: its jobs' sessions, the worker's mark, the socket to the worker."""

    def __init__(self, sock: socket.socket, vfork: Any = None) -> None:
        self.sock = sock
        self.vfork = vfork  # load_vfork(), or None: os.fork
        self.mark = b""
        self.sessions: set[int] = set()  # every job started and not yet forgotten (pid = pgid = sid)
        self.running: set[int] = set()  # those whose shell has not been reaped
        self.devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        self.buf = bytearray(INLINE_MAX + 1)

    def reply(self, data: bytes) -> None:
        try:
            self.sock.send(data)  # blocking: a worker that does not read holds the launcher, not its jobs
        except OSError:
            pass  # the worker is gone: end of file comes next

    def start(self, req: dict[str, Any], out_fd: int) -> None:
        """Start the job; reply ``S i pid`` once its shell runs, ``E i reason`` when it could not start."""
        try:
            pid, failed = (self._vfork if self.vfork is not None else self._fork)(req, out_fd)
        except OSError as exc:  # no memory, the process limit reached, no descriptor left
            pid, failed = 0, str(exc)
        finally:
            os.close(out_fd)
        if failed:
            if pid:
                os.waitpid(pid, 0)
                self.sessions.discard(pid)
            self.reply(b"E %d %s" % (req["i"], failed.encode(errors="replace")[:4000]))
        else:
            self.running.add(pid)
            self.reply(b"S %d %d" % (req["i"], pid))

    def _vfork(self, req: dict[str, Any], out_fd: int) -> tuple[int, str]:
        """Through worker/spawn.c: the child has exec'd (or failed) when this returns."""
        assert self.vfork is not None
        env = [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in req["env"].items()]
        groups = req.get("groups") or []
        uid = req.get("uid")
        err, step = ctypes.c_int(0), ctypes.c_int(0)
        pid = self.vfork(
            SHELL,
            (ctypes.c_char_p * 4)(SHELL, b"-c", os.fsencode(req["command"]), None),
            (ctypes.c_char_p * (len(env) + 1))(*env, None),
            os.fsencode(req.get("cwd") or ""),
            self.devnull,
            out_fd,
            -1 if uid is None else uid,
            -1 if uid is None else req["gid"],
            len(groups),
            (ctypes.c_uint * max(1, len(groups)))(*groups),
            ctypes.byref(err),
            ctypes.byref(step),
        )
        if pid < 0:
            raise OSError(-pid, os.strerror(-pid))
        self.sessions.add(pid)  # before anything else: the worker's death now kills it
        if not err.value:
            return pid, ""
        what, path = STEPS.get(step.value, ("start", None))
        if what == "chdir":
            path = req.get("cwd")
        return pid, (what + ": " if path is None else "") + str(OSError(err.value, os.strerror(err.value), path))

    def _fork(self, req: dict[str, Any], out_fd: int) -> tuple[int, str]:
        """Without worker/spawn.c's helper: os.fork, the child in Python (about 1.5 ms more CPU a job)."""
        err_r, err_w = os.pipe()  # both close-on-exec: EOF once the exec succeeded
        try:
            pid = os.fork()
            if pid == 0:
                _child(req, out_fd, err_w, self.devnull)
            self.sessions.add(pid)  # before anything else: the worker's death now kills it
            os.close(err_w)
            err_w = -1
            failed = b""
            while chunk := os.read(err_r, 4096):
                failed += chunk
        finally:
            if err_w >= 0:
                os.close(err_w)
            os.close(err_r)
        return pid, failed.decode(errors="replace")

    def reap(self) -> None:
        """Reply ``X pid returncode`` for each shell that exited (-N: killed by signal N)."""
        while self.running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.running:
                self.running.discard(pid)
                self.reply(b"X %d %d" % (pid, os.waitstatus_to_exitcode(status)))

    def read(self) -> bool:
        """Handle every message waiting; False at end of file (the worker is gone)."""
        while True:
            try:
                n, fds = self._recv()
            except BlockingIOError:
                return True
            except OSError:
                return False
            if n == 0:
                return False
            self.handle(bytes(memoryview(self.buf)[:n]), fds)

    def _recv(self) -> tuple[int, list[int]]:
        n, anc, _, _ = self.sock.recvmsg_into(
            [self.buf], socket.CMSG_SPACE(2 * 4), socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
        )
        fds = [
            int.from_bytes(data[i : i + 4], sys.byteorder, signed=True)
            for level, kind, data in anc
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
            for i in range(0, len(data) - len(data) % 4, 4)
        ]
        return n, fds

    def handle(self, msg: bytes, fds: list[int]) -> None:
        kind, rest = msg[:1], msg[1:]
        if kind == b"+" and len(fds) in (1, 2) and len(msg) <= INLINE_MAX:
            try:
                if len(fds) == 2:  # a long request: the JSON is in the memfd
                    with os.fdopen(fds.pop(), "rb") as f:
                        f.seek(0)  # the worker's writes moved the shared offset to the end
                        rest = f.read()
                req = json.loads(rest)
            except (OSError, ValueError):
                os.close(fds[0])
                return
            self.start(req, fds[0])
            return
        for fd in fds:  # a descriptor on any other message is a mistake: never keep it
            os.close(fd)
        if kind == b"=" and rest.isalnum():
            self.mark = rest
        elif kind == b"-" and rest.isdigit():
            self.sessions.discard(int(rest))
        elif kind == b".":  # a clean stop: no job is starting, so no marked process to look for
            self.mark = b""


def launcher_main(worker_pid: int, way: str = "") -> int:
    """Start jobs for the worker until it is gone, then kill them (see the module docstring). ``way``
    ``fork``: without the vfork helper even when it is there (tests)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=0)
    gone = False

    def parent_gone(signum: int = 0, frame: object = None) -> None:
        # The belt to the socket's end of file (should the worker's end have leaked to another process):
        # SIGTERM is the parent-death signal. From anyone else, while the worker lives, SIGTERM is
        # ignored: the worker's jobs must not die because its launcher was told to stop.
        nonlocal gone
        if os.getppid() != worker_pid:
            gone = True

    signal.signal(signal.SIGTERM, parent_gone)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)  # a signal wakes the poll below
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # Not dumpable: no process of the same user (a job, when jobs run as the worker's own user) may open
    # /proc/<launcher>/fd/0, which would give it the worker's socket.
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)  # for every job too: no setuid program gives a job more rights
    parent_gone()  # it may have died before the prctl
    me = LauncherProcess(sock, None if way == "fork" else load_vfork())
    poll = select.poll()
    poll.register(sock.fileno(), select.POLLIN)
    poll.register(wake_r, select.POLLIN)
    while not gone:
        poll.poll()
        try:
            while os.read(wake_r, 512):
                pass
        except BlockingIOError:
            pass
        me.reap()
        if not me.read():
            break
    me.read()  # what the worker wrote before it died (its mark)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    told = len(me.sessions)
    started = time.monotonic()
    killed = kill_all(me.sessions, mark=me.mark)
    if killed:
        print(
            f"job launcher: worker {worker_pid} is gone: SIGKILL to {told} job session(s) it started, "
            f"{len(me.sessions) - told} more found by the mark, "
            f"{killed} process(es) in them, all gone in {time.monotonic() - started:.3f}s",
            file=sys.stderr,
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(launcher_main(int(sys.argv[1]), sys.argv[3] if len(sys.argv) > 3 else ""))
