"""run_shell with real processes: timeouts, process groups, output caps, environment."""

import asyncio
import os
import pwd
import secrets
import signal
import subprocess
import sys
import time

import pytest

from jobcluster.settings import MAX_COMMAND_LIMIT
from tests.helpers import group_members, launchers_of, procs_running, wait_for, wait_for_sync
from worker import launch, shell
from worker import launcher as launcher_mod
from worker.launch import Launcher
from worker.sandbox import resolve_job_user
from worker.shell import job_env, run_shell


async def _group_gone(pgid: int) -> None:
    """SIGKILL is sent before run_shell returns; the kernel ends the processes a moment later."""
    await wait_for(lambda: group_members(pgid) == [], timeout=5, what=f"process group {pgid} to be empty")


async def _run(cmd, **kw):
    """run_shell through ``launcher=`` or a launcher of its own, stopped afterwards."""
    opts = dict(timeout=10.0, kill_grace=1.0, output_limit=64 * 1024, env=job_env("j1", 1))
    opts.update(kw)
    if "launcher" in opts:
        return await run_shell(cmd, **opts)
    launcher = Launcher.start("test-shell")
    try:
        return await run_shell(cmd, launcher=launcher, **opts)
    finally:
        launcher.close()


async def test_output_and_exit_code():
    r = await _run("echo out; echo err >&2; exit 3")
    assert r.exit_code == 3 and not r.timed_out and not r.truncated
    assert r.output == b"out\nerr\n"


async def test_stdin_is_closed():
    r = await _run("cat; echo after")
    assert r.exit_code == 0 and r.output == b"after\n"


async def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "pgid"
    cmd = f"echo $$ > {pidfile}; trap '' TERM; sleep 30 & sh -c 'sleep 30' & wait"
    started = time.monotonic()
    r = await _run(cmd, timeout=0.5, kill_grace=0.5)
    assert r.timed_out and "timed out after 0.5s" in r.error
    assert r.exit_code == 128 + 9  # all ignored TERM, so KILL came after the grace
    assert time.monotonic() - started < 5
    pgid = int(pidfile.read_text())
    await _group_gone(pgid)


async def test_leftover_background_processes_die_with_the_job(tmp_path):
    pidfile = tmp_path / "pgid"
    r = await _run(f"echo $$ > {pidfile}; sleep 60 > /dev/null 2>&1 & echo started")
    assert r.exit_code == 0 and r.output == b"started\n"
    await _group_gone(int(pidfile.read_text()))


async def test_output_over_the_cap_keeps_the_tail():
    r = await _run("head -c 3000000 /dev/zero | tr '\\0' a; echo; echo END", output_limit=10_000)
    assert r.truncated and len(r.output) == 10_000
    assert r.output.endswith(b"a\nEND\n")


async def test_cancel_kills_the_job_at_once(tmp_path):
    pidfile = tmp_path / "pgid"
    task = asyncio.create_task(_run(f"echo $$ > {pidfile}; sleep 30; echo never"))
    await wait_for(
        lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10, interval=0.02, what="job started"
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _group_gone(int(pidfile.read_text()))


# --- the attempt ends when its shell exits (issue 17) ------------------------------------------------


def _gone(pid: int) -> bool:
    """``pid`` has ended (a zombie counts: it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def marker():
    """Unique arguments for processes a job leaves behind (``sleep 30.<n>``, ``yes <tag>``), found by
    their command line; whatever a failed test left is killed at the end."""
    made: list[str] = []

    def make() -> str:
        made.append(f"30.{secrets.randbelow(10**8):08d}1")
        return made[-1]

    yield make
    for tag in made:
        for prog in ("sleep", "yes"):
            for pid, _ in procs_running(prog, tag):
                os.kill(pid, signal.SIGKILL)


async def _none_left(prog: str, tag: str) -> None:
    await wait_for(lambda: procs_running(prog, tag) == [], timeout=5, interval=0.01, what=f"no `{prog} {tag}` left")


@pytest.mark.parametrize("redirect", ["", " > /dev/null 2>&1"], ids=["keeps-stdout", "redirected"])
@pytest.mark.parametrize("code", [0, 3])
async def test_the_attempt_ends_with_its_shell_and_what_it_left_is_killed(tmp_path, marker, redirect, code):
    tag, pidfile, leftfile = marker(), tmp_path / "pgid", tmp_path / "left"
    # The shell waits until its background sleep runs, then exits at once: the sleep would take 30 s.
    cmd = (
        f"echo $$ > {pidfile}; echo before; sleep {tag}{redirect} & echo $! > {leftfile}; "
        f"until [ \"$(tr -d '\\0' < /proc/$!/cmdline)\" = sleep{tag} ]; do :; done; echo after; exit {code}"
    )
    started = time.monotonic()
    r = await _run(cmd, timeout=5)
    took = time.monotonic() - started
    assert (r.exit_code, r.timed_out, r.error, r.output) == (code, False, "", b"before\nafter\n")
    assert took < 2.5, f"the attempt took {took:.2f}s"
    assert _gone(int(leftfile.read_text()))  # killed before run_shell returned, not merely later
    await _none_left("sleep", tag)
    await _group_gone(int(pidfile.read_text()))


async def test_output_still_in_the_pipe_when_the_shell_exits_is_kept(tmp_path, marker):
    """900,000 bytes written into an enlarged pipe (F_SETPIPE_SZ) while the event loop is blocked, then the
    shell exits with `sleep` holding the pipe open: what is buffered is read, without waiting for the close."""
    tag, pidfile, go = marker(), tmp_path / "pid", tmp_path / "go"
    fill = 'import fcntl, os; fcntl.fcntl(1, 1031, 1 << 20); os.write(1, b"a" * 900_000)'
    cmd = f"echo $$ > {pidfile}; sleep {tag} & until [ -e {go} ]; do :; done; python3 -c '{fill}'; echo; echo END"
    task = asyncio.create_task(_run(cmd, timeout=5, output_limit=1 << 20))
    pid = int(
        await wait_for(
            lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10, interval=0.01, what="the job started"
        )
    )
    go.touch()
    # Block the event loop (no read of the pipe) until the shell has exited.
    wait_for_sync(lambda: _gone(pid), timeout=10, interval=0.01, what="the shell to exit")
    r = await task
    assert not r.timed_out and r.exit_code == 0 and not r.truncated
    assert r.output == b"a" * 900_000 + b"\nEND\n"
    await _none_left("sleep", tag)


async def test_a_process_moved_to_another_group_of_the_session_dies_with_the_shell(tmp_path, marker):
    """A leftover in a group of its own inside the job's session (as `set -m` makes) that holds the output
    pipe: found through the session, and killed."""
    tag, leftfile = marker(), tmp_path / "left"
    move = f'import os; os.setpgid(0, 0); os.execvp("sleep", ["sleep", "{tag}"])'
    cmd = (
        f"python3 -c '{move}' & echo $! > {leftfile}; "
        f"until [ \"$(cut -d' ' -f5 /proc/$!/stat)\" = $! ]; do :; done; echo moved; exit 4"
    )
    started = time.monotonic()
    r = await _run(cmd, timeout=5)
    assert (r.exit_code, r.timed_out, r.output) == (4, False, b"moved\n")
    assert time.monotonic() - started < 2.5
    assert _gone(int(leftfile.read_text()))
    await _none_left("sleep", tag)


async def test_a_process_that_left_the_session_does_not_hold_the_attempt(marker):
    """`setsid yes` keeps writing into the job's pipe: the attempt still ends with its shell, the output
    stays bounded, and `yes` dies of SIGPIPE once the worker closes its end (it is not killed: not found)."""
    tag = marker()
    cmd = f"setsid yes {tag} & until [ \"$(cut -d' ' -f6 /proc/$!/stat)\" = $! ]; do :; done; echo detached >&2; exit 5"
    started = time.monotonic()
    r = await _run(cmd, timeout=5, output_limit=10_000)
    assert (r.exit_code, r.timed_out) == (5, False) and len(r.output) <= 10_000
    assert time.monotonic() - started < 2.5
    await _none_left("yes", tag)


async def test_only_a_job_that_left_something_behind_costs_a_scan_of_proc(monkeypatch, marker):
    """The hot path: a job that leaves nothing ends with one killpg (no one left) and a read of its pipe to
    end of file; the session's processes are looked for in /proc (milliseconds) only after one that did."""
    scans: list[object] = []
    real = shell.kill_all
    monkeypatch.setattr(shell, "kill_all", lambda *args: scans.append(args) or real(*args))
    for cmd in ("true", "echo hi", "head -c 200000 /dev/zero", "exec echo x", "sleep 0.01 & wait"):
        r = await _run(cmd)
        assert r.exit_code == 0 and not r.timed_out, cmd
    assert scans == []
    tag = marker()
    r = await _run(f"sleep {tag} > /dev/null & exit 0")
    assert r.exit_code == 0 and len(scans) == 1
    await _none_left("sleep", tag)


async def test_on_a_timeout_the_group_keeps_its_grace_after_the_shell_died():
    """SIGTERM ends the shell at once; its child cleans up in its trap for 0.3 s and that output is kept:
    the grace lasts until the group has let go of the output pipe, not only until the shell is gone."""
    cmd = "sh -c 'trap \"sleep 0.3; echo cleaned; exit 0\" TERM; echo ready; while :; do sleep 0.05; done'; echo never"
    started = time.monotonic()
    r = await _run(cmd, timeout=0.5, kill_grace=3)
    assert r.timed_out and r.exit_code == 128 + signal.SIGTERM
    assert r.output.startswith(b"ready\n") and r.output.endswith(b"cleaned\n"), r.output
    assert time.monotonic() - started < 2.5  # the grace ended when the group did, not after 3 s


async def test_job_env_has_no_worker_secrets(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://secret")
    monkeypatch.setenv("SHARED_TOKEN", "t")
    r = await _run("env", env=job_env("job-9", 2, passthrough=("SHARED_TOKEN",)))
    env = dict(line.split("=", 1) for line in r.output.decode().splitlines() if "=" in line)
    assert "DATABASE_URL" not in env and env["SHARED_TOKEN"] == "t"
    assert env["JOB_ID"] == "job-9" and env["JOB_ATTEMPT"] == "2"
    assert os.environ["DATABASE_URL"] == "postgresql://secret"


# --- as another user (a root worker's JOB_USER) ------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.fixture
def job_dir(tmp_path, job_user):
    """A directory of the job user's own, reachable through tmp_path."""
    for path in (tmp_path.parent, tmp_path):
        os.chmod(path, 0o711)
    user = pwd.getpwnam(job_user)
    os.chown(tmp_path, user.pw_uid, user.pw_gid)
    return tmp_path


def test_the_launcher_has_its_vfork_helper_here():
    """worker/spawn.c is built by the install (make deps): without it every job costs about 1.5 ms more."""
    assert launcher_mod.load_vfork() is not None


@needs_root
@pytest.mark.parametrize("way", ["vfork", "fork"])
async def test_run_as_keeps_only_the_users_uid_gid_and_groups(job_dir, job_user, way):
    run_as = resolve_job_user(job_user)[1]
    launcher = Launcher.start("test-shell", "" if way == "vfork" else way)
    worker_groups = os.getgroups()
    os.setgroups([0, 4])  # a worker in root's and adm's groups: neither may reach the job
    try:
        r = await _run(
            "id -u; id -g; id -G; pwd; grep -E '^(Uid|Gid|SigBlk|SigIgn|CapPrm|CapEff|NoNewPrivs)' /proc/self/status",
            run_as=run_as,
            cwd=str(job_dir),
            launcher=launcher,
        )
    finally:
        os.setgroups(worker_groups)
        launcher.close()
    user = pwd.getpwnam(job_user)
    lines = r.output.decode().splitlines()
    assert r.exit_code == 0 and lines[:4] == [
        str(user.pw_uid),
        str(user.pw_gid),
        " ".join(map(str, os.getgrouplist(job_user, user.pw_gid))),
        str(job_dir),
    ]
    # Python's fork path cannot reset glibc's own signals 32 and 33 (an ancestor may have ignored them).
    ignored = "SigIgn:\t0000000000000000"
    if way == "fork":
        got = next(line for line in lines if line.startswith("SigIgn:"))
        ignored = got if int(got.split()[1], 16) & ~(3 << 31) == 0 else ignored
    # Real, effective, saved and filesystem ids all the user's; no capability left.
    assert lines[4:] == [
        f"Uid:\t{user.pw_uid}\t{user.pw_uid}\t{user.pw_uid}\t{user.pw_uid}",
        f"Gid:\t{user.pw_gid}\t{user.pw_gid}\t{user.pw_gid}\t{user.pw_gid}",
        "SigBlk:\t0000000000000000",  # no signal blocked, none ignored (the launcher ignores SIGINT,
        ignored,  # Python SIGPIPE and SIGXFSZ, whatever started the tests maybe SIGHUP or SIGQUIT)
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
    ]


#: Run by a job against one pid: signal it, trace it, read its environment, list its descriptors.
REACH = (
    "for pid in {pids}; do kill -0 $pid 2>/dev/null && echo signalled $pid; "
    "cat /proc/$pid/environ >/dev/null 2>&1 && echo read $pid; ls /proc/$pid/fd >/dev/null 2>&1 && echo fds $pid; "
    "/usr/bin/python3 -c 'import ctypes, sys; sys.exit(ctypes.CDLL(None).ptrace(16, int(sys.argv[1]), 0, 0) != 0)' "
    "$pid && echo traced $pid; done; echo end"
)


@needs_root
async def test_a_job_user_cannot_signal_trace_or_read_the_worker_or_its_launcher(job_dir, job_user):
    run_as = resolve_job_user(job_user)[1]
    launcher = Launcher.start("test-shell")
    try:
        r = await _run(
            REACH.format(pids=f"$PPID {launcher.pid} {os.getpid()}"), run_as=run_as, cwd=str(job_dir), launcher=launcher
        )
    finally:
        launcher.close()
    assert r.exit_code == 0 and r.output.decode() == "end\n"


@needs_root
async def test_timeout_kills_the_whole_group_of_a_job_user(job_dir, job_user):
    run_as = resolve_job_user(job_user)[1]
    pidfile = job_dir / "pgid"
    cmd = f"echo $$ > {pidfile}; trap '' TERM; sleep 30 & sh -c 'sleep 30' & wait"
    r = await _run(cmd, timeout=0.5, kill_grace=0.5, run_as=run_as, cwd=str(job_dir))
    assert r.timed_out and r.exit_code == 128 + 9
    await _group_gone(int(pidfile.read_text()))  # the worker (root) killed another user's processes


@pytest.mark.parametrize("way", ["vfork", "fork"])
async def test_a_job_that_cannot_start_says_why_and_a_long_command_starts(tmp_path, way):
    launcher = Launcher.start("test-shell", "" if way == "vfork" else way)
    try:
        r = await _run("echo never", cwd=str(tmp_path / "gone"), launcher=launcher)
        assert r.exit_code == 127 and r.output == b""
        assert r.error == f"could not start /bin/sh: [Errno 2] No such file or directory: '{tmp_path / 'gone'}'"
        # The longest command JOB_MAX_COMMAND_BYTES allows (over a datagram's worth: it goes in a memfd).
        long = await _run(": " + "x" * (MAX_COMMAND_LIMIT - 13) + "; echo long", launcher=launcher)
        assert long.exit_code == 0 and long.output == b"long\n"
    finally:
        launcher.close()


@needs_root
async def test_a_user_that_cannot_enter_the_cwd_fails_cleanly(tmp_path, job_user):
    # chdir happens before the switch: a cwd the job user may not enter is still its working directory,
    # which is why the worker makes each attempt's directory the job user's own.
    run_as = resolve_job_user(job_user)[1]
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    r = await _run("pwd; touch f && echo wrote", run_as=run_as, cwd=str(private))
    out = r.output.decode()
    assert out.startswith(f"{private}\n") and "wrote" not in out and "Permission denied" in out


# --- the launcher: a killed worker's jobs die with it (worker/launcher.py) -------------------------

#: A worker in miniature: starts a launcher, runs one job through it with run_shell, and waits.
PARENT = """
import asyncio, subprocess, sys
from worker.launch import Launcher
from worker.sandbox import resolve_job_user
from worker.shell import job_env, run_shell

async def main():
    launcher = Launcher.start("test-shell")
    if sys.argv[3:] == ["leak"]:  # another process holds the worker's end: no end of file for the launcher
        holder = subprocess.Popen(["sleep", "4459"], pass_fds=(launcher._sock.fileno(),), start_new_session=True)
    run_as = resolve_job_user(sys.argv[2])[1] if sys.argv[2:3] not in ([], [""]) else None
    await run_shell(sys.argv[1], timeout=0, kill_grace=1, output_limit=1000, env=job_env("j", 1),
                    cwd="/", run_as=run_as, launcher=launcher)
    launcher.close()

asyncio.run(main())
"""
#: A job with a child in its group, one in a group of its own inside its session (as `set -m` makes), and
#: its shell waiting on a third.
FAMILY = 'sleep {0}1 & python3 -c \'import os; os.setpgid(0, 0); os.execvp("sleep", ["sleep", "{0}2"])\' & sleep {0}3'


def family_left(tag: str) -> list[tuple[int, int]]:
    return [p for n in (1, 2, 3) for p in procs_running("sleep", f"{tag}{n}")]


@pytest.fixture
def parent(tmp_path):
    """Start PARENT with a job command (and optionally a job user); kill whatever is left at the end."""
    started: list[subprocess.Popen] = []

    tags: list[str] = []

    def start(tag: str, *args: str, command: str = FAMILY) -> subprocess.Popen:
        log = open(tmp_path / f"parent-{tag}.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-c", PARENT, command.format(tag), *args], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        started.append(proc)
        tags.append(tag)
        return proc

    yield start
    for proc in started:
        for pid in launchers_of(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
    for pid, _ in [p for tag in tags for p in family_left(tag)] + procs_running(
        "sleep", "4459"
    ):  # left by a failed test: none of ours may stay
        os.kill(pid, signal.SIGKILL)


async def _killed_and_gone(proc: subprocess.Popen, tag: str) -> float:
    """SIGKILL ``proc``; the job's processes must be gone within the promised 2 s."""
    proc.kill()
    killed = time.monotonic()
    await wait_for(
        lambda: family_left(tag) == [],
        timeout=2.0,
        interval=0.01,
        what=f"the killed parent's job processes (sleep {tag}N) to be gone",
    )
    return time.monotonic() - killed


async def test_a_killed_parent_takes_its_jobs_groups_and_session_with_it(parent):
    proc = parent("4451")
    await wait_for(lambda: len(family_left("4451")) == 3, timeout=10, what="the job's three sleeps")
    took = await _killed_and_gone(proc, "4451")
    print(f"job processes gone {took:.3f}s after the SIGKILL")


@needs_root
async def test_a_root_parent_takes_the_job_users_processes_with_it(parent, job_user):
    proc = parent("4452", job_user)
    left = await wait_for(
        lambda: (lambda p: p if len(p) == 3 else None)(family_left("4452")), timeout=10, what="the job's three sleeps"
    )
    assert {uid for _, uid in left} == {pwd.getpwnam(job_user).pw_uid}
    await _killed_and_gone(proc, "4452")


async def test_a_killed_launcher_takes_its_jobs_with_it_and_is_replaced():
    """The launcher is the jobs' parent: once it is gone their ends cannot be learnt, so the worker kills
    them (their attempts end, saying why) and starts another launcher for the next jobs."""
    launcher = Launcher.start("test-shell")
    try:
        first = launcher.pid
        task = asyncio.create_task(_run(FAMILY.format("4453"), timeout=0, launcher=launcher))
        await wait_for(lambda: len(family_left("4453")) == 3, timeout=10, what="the job's three sleeps")
        os.kill(first, signal.SIGKILL)
        r = await asyncio.wait_for(task, 5)
        assert family_left("4453") == [] and r.exit_code == 128 + 9
        assert f"job launcher (pid {first}) died" in r.error
        again = await _run("echo again", launcher=launcher)
        assert again.output == b"again\n" and launcher.pid != first
    finally:
        launcher.close()
    assert launcher.returncode == 0


async def test_a_clean_close_ends_the_launcher_and_a_finished_job_is_forgotten():
    launcher = Launcher.start("test-shell")
    r = await _run("echo $$", launcher=launcher)
    pgid = int(r.output)
    launcher.close()
    assert launcher.returncode == 0 and launcher.pid not in launchers_of(os.getpid())
    assert group_members(pgid) == []


async def test_without_end_of_file_the_parent_death_signal_still_kills_the_jobs(parent):
    proc = parent("4454", "", "leak")
    await wait_for(
        lambda: len(family_left("4454")) == 3 and procs_running("sleep", "4459"),
        timeout=10,
        what="the job's three sleeps and the process holding the socket",
    )
    await _killed_and_gone(proc, "4454")


async def test_a_job_that_left_its_session_is_found_by_its_mark(parent, job_user):
    """A process that made a session of its own (setsid) but kept the job's environment: the launcher
    finds it by the mark when the worker dies."""
    proc = parent("4455", job_user if os.geteuid() == 0 else "", command="setsid sleep {0}1 & sleep {0}2 & sleep {0}3")
    await wait_for(lambda: len(family_left("4455")) == 3, timeout=10, what="the job's three sleeps")
    await _killed_and_gone(proc, "4455")


async def test_a_launcher_that_stops_answering_is_replaced_without_blocking_the_worker(monkeypatch):
    monkeypatch.setattr(launch, "START_TIMEOUT", 0.5)
    launcher = Launcher.start("test-shell")
    first = launcher.pid
    os.kill(first, signal.SIGSTOP)
    try:
        r = await _run("echo never", launcher=launcher)
        assert r.exit_code == 127 and "did not start the job within 0.5s" in r.error
        await wait_for(
            lambda: launcher.pid != first and not os.path.exists(f"/proc/{first}"),
            timeout=10,
            what="the stopped launcher replaced",
        )
        again = await _run("echo again", launcher=launcher)
        assert again.output == b"again\n"
    finally:
        if launcher.pid == first:  # not replaced (a failure): still our unreaped child, so the pid is its
            os.kill(first, signal.SIGKILL)  # leave no stopped launcher behind
        launcher.close()
    assert launcher.returncode == 0
