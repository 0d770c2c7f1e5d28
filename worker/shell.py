"""Run one shell command the way a job runs: own process group, bounded output, timeout."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jobcluster.aio import wait_within
from worker.launch import Child, Launcher, NotStarted, RunAs
from worker.launcher import kill_all

#: Variables a job inherits from the worker; everything else (DATABASE_URL,
#: credentials...) stays out. JOB_ENV_PASSTHROUGH adds names to this list.
SAFE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "TMPDIR")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
READ_CHUNK = 64 * 1024
#: Once the shell has exited, read at most this much more (a pipe holds 1 MiB at most): what is buffered
#: then, not what a process outside the job's group may still be writing.
DRAIN_MAX_READS = 16
#: A job that left processes behind: go on killing its session's processes for at most this long.
SESSION_KILL_FOR = 1.0


@dataclass(frozen=True)
class ShellResult:
    """How one run ended."""

    exit_code: int  # the shell's exit status; 128+N when killed by signal N
    output: bytes  # stdout and stderr interleaved, the last `limit` bytes
    truncated: bool  # earlier output was dropped to stay under the limit
    timed_out: bool
    error: str  # '' when the command simply exited


def not_started(error: str) -> ShellResult:
    """The result of a job that could not be started (exit code 127, as a shell reports it)."""
    return ShellResult(exit_code=127, output=b"", truncated=False, timed_out=False, error=error)


def job_env(
    job_id: str, attempt: int, passthrough: Sequence[str] = (), source: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment a job sees: a safe subset of the worker's, plus JOB_ID and JOB_ATTEMPT."""
    src = os.environ if source is None else source
    env = {k: src[k] for k in (*SAFE_ENV, *passthrough) if k in src}
    env.setdefault("PATH", DEFAULT_PATH)
    env["SHELL"] = "/bin/sh"
    env["JOB_ID"] = job_id
    env["JOB_ATTEMPT"] = str(attempt)
    return env


class OutputTail:
    """Keeps the last ``limit`` bytes written to it, and counts them all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.truncated = False
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        self.buf += data
        excess = len(self.buf) - self.limit
        if excess > 0:
            del self.buf[:excess]
            self.truncated = True


class _Output:
    """The read end of the pipe that is the job's stdout and stderr, read into ``tail`` as data comes.

    Not asyncio's subprocess pipes: with them (Python 3.11) ``Process.wait()`` returns only once every
    process holding the pipe has closed it, so a job's ``sleep 30 &`` kept its attempt running 30 s.
    With a pipe of our own, ``wait()`` returns when the shell exits.
    """

    def __init__(self, tail: OutputTail) -> None:
        self.tail = tail
        self.fd, self.write_end = os.pipe()  # both close-on-exec; the shell gets the write end as 1 and 2
        self.eof = asyncio.Event()  # every process holding the write end has closed it
        self._loop = asyncio.get_running_loop()
        self._reading = True
        os.set_blocking(self.fd, False)
        self._loop.add_reader(self.fd, self.drain, 1)

    def drain(self, reads: int = DRAIN_MAX_READS) -> None:
        """Read what the pipe holds now (at most ``reads`` chunks), without waiting for more."""
        for _ in range(reads if self.fd >= 0 else 0):
            try:
                chunk = os.read(self.fd, READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.stop_reading()
                self.eof.set()
                return
            self.tail.add(chunk)

    def stop_reading(self) -> None:
        """Read no more as data comes (what is written after the shell's end is not the job's output)."""
        if self._reading:
            self._loop.remove_reader(self.fd)
            self._reading = False

    def close_write_end(self) -> None:
        if self.write_end >= 0:
            os.close(self.write_end)
            self.write_end = -1

    def close(self) -> None:
        self.close_write_end()
        if self.fd < 0:
            return
        self.stop_reading()
        self.eof.set()
        os.close(self.fd)
        self.fd = -1


def _killpg(pgid: int, sig: int) -> bool:
    """Signal the group; False when it has no process left (or none this process may signal)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def _terminate(proc: Child, out: _Output, grace: float) -> None:
    """TERM the whole group, KILL it after ``grace`` seconds, and reap the shell. The grace ends early
    once the shell has exited and nothing holds its output pipe (the group has, as a rule, ended)."""
    _killpg(proc.pid, signal.SIGTERM)
    await wait_within(_ended(proc, out), grace)
    _killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


async def _ended(proc: Child, out: _Output) -> None:
    await proc.wait()
    await out.eof.wait()


async def _exit_or_stop(proc: Child, stop: asyncio.Event | None) -> None:
    """Return when the shell exits or ``stop`` is set."""
    if stop is None:
        await proc.wait()
        return
    waiter = asyncio.ensure_future(proc.wait())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        stopper.cancel()


def _left_behind(pgid: int, out: _Output) -> bool:
    """The shell has exited: SIGKILL what it left in its group; the output is what the pipe holds now.
    True when something was left: in the group, or holding the output pipe from elsewhere."""
    left = _killpg(pgid, signal.SIGKILL)
    out.drain()
    out.stop_reading()
    return left or not out.eof.is_set()


async def _end_session(sid: int) -> None:
    """Kill every process left in the job's session (``set -m`` makes groups in it), off the event loop:
    it scans /proc, so only for a job that left something behind. One that left the session (``setsid``)
    is not found."""
    await asyncio.to_thread(kill_all, {sid}, SESSION_KILL_FOR)


async def run_shell(
    command: str,
    *,
    timeout: float,
    kill_grace: float,
    output_limit: int,
    env: Mapping[str, str],
    launcher: Launcher,
    cwd: str | None = None,
    run_as: RunAs | None = None,
    tail: OutputTail | None = None,
    stop: asyncio.Event | None = None,
) -> ShellResult:
    """Run ``sh -c command`` in a new session and process group with stdin closed.

    The attempt ends when the shell exits, with its exit code: whatever it
    left behind (``sleep 100 &``) is killed then, and the output read so far
    is kept (what a process still holds the pipe open for is not waited for).
    ``timeout`` 0 means none. When it passes, the group gets SIGTERM, then
    SIGKILL after ``kill_grace``. If this coroutine is cancelled, the group is
    killed at once and the shell reaped before the cancellation goes on.
    ``tail``: collect the output here (to watch it while it runs). ``stop``:
    when set, the group is terminated as on a timeout (error ``cancelled``).
    ``run_as``: start the shell with these credentials (the launcher must be root);
    None keeps the launcher's. ``launcher`` starts the shell (worker/launcher.py) and kills the job's
    session should the worker die; the session is forgotten there once the job has ended here.
    """
    try:
        out = _Output(tail or OutputTail(output_limit))
    except OSError as exc:  # no descriptor left for the pipe
        return not_started(f"could not start /bin/sh: {exc}")
    try:
        proc = await launcher.spawn(command, env, cwd, run_as, out.write_end)
    except NotStarted as exc:
        out.close()
        return not_started(f"could not start /bin/sh: {exc}")
    except BaseException:
        out.close()
        raise
    finally:
        out.close_write_end()  # end of file comes when the job's processes close theirs
    timed_out = stopped = False
    try:
        try:
            if not await wait_within(_exit_or_stop(proc, stop), timeout if timeout > 0 else None):
                timed_out = True
                await asyncio.shield(_terminate(proc, out, kill_grace))
            elif proc.returncode is None:  # stop was set
                stopped = True
                await asyncio.shield(_terminate(proc, out, kill_grace))
        except asyncio.CancelledError:
            await asyncio.shield(_terminate(proc, out, 0))
            raise
        finally:
            try:
                if _left_behind(proc.pid, out):
                    await asyncio.shield(_end_session(proc.pid))
            finally:
                launcher.forget(proc.pid)
    finally:
        out.close()
    if proc.lost:
        return ShellResult(128 + signal.SIGKILL, bytes(out.tail.buf), out.tail.truncated, timed_out, proc.lost)
    code, error = _outcome(proc.returncode, timed_out=timed_out, stopped=stopped, timeout=timeout)
    return ShellResult(
        exit_code=code, output=bytes(out.tail.buf), truncated=out.tail.truncated, timed_out=timed_out, error=error
    )


def _outcome(returncode: int | None, *, timed_out: bool, stopped: bool, timeout: float) -> tuple[int, str]:
    """The exit code as a shell reports it (128+N when killed by signal N) and what went wrong, if anything."""
    code = returncode if returncode is not None else -1
    error = ""
    if code < 0:
        sig = -code
        code = 128 + sig
        try:
            error = f"killed by {signal.Signals(sig).name}"
        except ValueError:
            error = f"killed by signal {sig}"
    if timed_out:
        error = f"timed out after {timeout:g}s" + (f" ({error})" if error else "")
    elif stopped:
        error = "cancelled" + (f" ({error})" if error else "")
    return code, error
