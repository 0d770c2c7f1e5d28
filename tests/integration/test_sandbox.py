"""Who a job runs as and where: JOB_USER, the attempt's scratch directory, leftovers, the dev tools' job user.

Real users, real directories and real processes (a worker's crash is a SIGKILL).
The test session runs as root, as CI does; these tests need it.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.job_user import JOB_USER, close_env_file, job_user_env
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.settings import ConfigError
from tests.helpers import wait_for
from worker.sandbox import MARKER, Sandbox, resolve_job_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching to JOB_USER needs root")


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    """tmp_path made passable (not listable) by the job user, as /tmp is: Sandbox roots go in here."""
    for path in (tmp_path.parent, tmp_path):
        os.chmod(path, 0o711)
    return tmp_path


def _sandbox(root: Path, job_user: str = JOB_USER, keep: bool = False) -> Sandbox:
    user, run_as = resolve_job_user(job_user)
    return Sandbox(user, run_as, root, keep)


def _job_uid() -> int:
    return pwd.getpwnam(JOB_USER).pw_uid


async def _written(path: Path) -> Path:
    """The directory a job wrote to ``path`` (``pwd > path``), once it has."""
    text = await wait_for(lambda: path.exists() and path.read_text().strip(), what=f"{path.name} written")
    return Path(text)


# --- JOB_USER -------------------------------------------------------------------------------


def test_a_root_worker_needs_a_job_user(job_user):
    with pytest.raises(
        ConfigError,
        match="the worker runs as root: set JOB_USER to an unprivileged user "
        r"\(make start creates jobcluster-job\), or JOB_USER=root",
    ):
        resolve_job_user("")
    with pytest.raises(ConfigError, match="JOB_USER=no-such-user-x: no such user on this machine; create it"):
        resolve_job_user("no-such-user-x")
    name, run_as = resolve_job_user(job_user)
    user = pwd.getpwnam(job_user)
    assert name == job_user and run_as is not None
    # Only that user's own groups: none of the worker's (root's) come along.
    assert (run_as.uid, run_as.gid, run_as.groups) == (
        user.pw_uid,
        user.pw_gid,
        tuple(os.getgrouplist(job_user, user.pw_gid)),
    )
    assert resolve_job_user("root") == ("root", None)  # knowingly: no switch, a warning


def test_a_worker_that_is_not_root_runs_jobs_as_itself(job_user):
    uid = _job_uid()
    assert resolve_job_user("", euid=uid) == (job_user, None)
    assert resolve_job_user(job_user, euid=uid) == (job_user, None)
    with pytest.raises(
        ConfigError,
        match=f"JOB_USER=root, but the worker runs as {job_user} .*not root, so it "
        f"cannot start jobs as another user: leave JOB_USER empty",
    ):
        resolve_job_user("root", euid=uid)


# --- JOB_WORKDIR_ROOT -----------------------------------------------------------------------


def test_the_root_is_made_reachable_but_not_listable_by_the_job_user(tmp, job_user):
    root = tmp / "jobs"
    sandbox = _sandbox(root)
    st = root.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o711) and (root / MARKER).exists()
    scratch = sandbox.create("job-1", 1)
    st = os.stat(scratch.path)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (_job_uid(), 0o700)
    assert Path(scratch.path).parent == root and Path(scratch.path).name.startswith("job-job-1-1-")
    assert sandbox.env({"PATH": "/bin", "USER": "root"}, scratch) == {
        "PATH": "/bin",
        "HOME": scratch.path,
        "TMPDIR": scratch.path,
        "USER": job_user,
        "LOGNAME": job_user,
    }
    os.close(scratch.lock_fd)


@pytest.mark.parametrize("case", ["symlink", "foreign owner", "foreign files", "job user's parent", "unreachable"])
def test_an_unsafe_root_is_refused_with_the_setting_named(tmp, case):
    root = tmp / "jobs"
    if case == "symlink":
        (tmp / "elsewhere").mkdir()
        root.symlink_to(tmp / "elsewhere")
        expected = "is not a directory"
    elif case == "foreign owner":
        root.mkdir()
        os.chown(root, _job_uid(), -1)
        expected = "belongs to uid"
    elif case == "foreign files":
        root.mkdir()
        (root / "precious").write_text("x")
        expected = "holds files jobcluster did not make"
    elif case == "job user's parent":
        parent = tmp / "shared"
        parent.mkdir()
        os.chown(parent, _job_uid(), -1)  # a job could rename the root and put a symlink in its place
        root = parent / "jobs"
        expected = f"{parent} can be changed by another user"
    else:
        locked = tmp / "private"
        locked.mkdir(mode=0o700)
        root = locked / "jobs"
        expected = "cannot reach it"
    with pytest.raises(ConfigError, match=f"JOB_WORKDIR_ROOT={root}.*{expected}"):
        _sandbox(root)
    if case == "foreign files":
        assert (root / "precious").read_text() == "x"


# --- removal ----------------------------------------------------------------------------------


async def test_removal_does_not_follow_the_jobs_symlinks(tmp):
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "keep").write_text("safe")
    sandbox = _sandbox(tmp / "jobs")
    scratch = sandbox.create("j", 1)
    inside = Path(scratch.path)
    (inside / "deep" / "er").mkdir(parents=True)
    (inside / "deep" / "er" / "f").write_text("x")
    (inside / "link").symlink_to(outside)
    (inside / "deep" / "readonly").mkdir(mode=0o500)
    await sandbox.remove(scratch)
    assert not inside.exists() and (outside / "keep").read_text() == "safe"


async def test_keep_workdir_keeps_it_and_removes_no_leftovers(tmp):
    sandbox = _sandbox(tmp / "jobs", keep=True)
    scratch = sandbox.create("j", 1)
    await sandbox.remove(scratch)
    assert Path(scratch.path).is_dir()
    assert sandbox.remove_leftovers() == 0 and Path(scratch.path).is_dir()


def test_leftovers_of_a_killed_worker_go_and_a_live_workers_stay(tmp):
    root = tmp / "jobs"
    _sandbox(root)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from worker.sandbox import Sandbox, resolve_job_user;"
        "from pathlib import Path; import time;"
        f"s = Sandbox(*resolve_job_user({JOB_USER!r}), Path(sys.argv[2])); print(s.create('x', 1).path, flush=True);"
        "time.sleep(60)"
    )
    repo = str(Path(__file__).resolve().parents[2])
    holders = [
        subprocess.Popen([sys.executable, "-c", code, repo, str(root)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        dead, live = (Path(h.stdout.readline().strip()) for h in holders)
        (dead / "output.bin").write_bytes(b"x" * 1000)
        holders[0].send_signal(signal.SIGKILL)
        holders[0].wait()
        assert dead.is_dir()  # a crash leaves it behind
        assert _sandbox(root).remove_leftovers() == 1
        assert not dead.exists() and live.is_dir()
    finally:
        for h in holders:
            h.kill()
            h.wait()


# --- the worker: each attempt in a fresh directory, removed however it ends --------------------


async def test_each_attempt_runs_as_the_job_user_in_a_fresh_directory_removed_afterwards(
    stub, make_worker, settings, job_user, tmp_path
):
    dirs = tmp_path / "dirs"  # each attempt appends its working directory
    show = f"pwd >> {dirs}; id -u; id -G; pwd; echo home=$HOME tmp=$TMPDIR user=$USER logname=$LOGNAME; touch f; ls"
    ok = await stub.SubmitJob(pb.Job(command=show, max_retries=0))
    failing = await stub.SubmitJob(pb.Job(command=f"pwd >> {dirs}; mkdir -p a/b; exit 3", max_retries=1))
    slow = await stub.SubmitJob(pb.Job(command=f"pwd >> {dirs}; sleep 30", timeout_seconds=1, max_retries=0))
    await make_worker(job_kill_grace=0.2).run()
    job = await stub.GetJobStatus(pb.JobId(id=ok.job_id))
    lines = job.output.splitlines()
    user = pwd.getpwnam(job_user)
    assert lines[0] == str(user.pw_uid)
    assert lines[1].split() == [str(g) for g in os.getgrouplist(job_user, user.pw_gid)]
    where = lines[2]
    assert Path(where).parent == Path(settings.job_workdir_root)
    assert lines[3] == f"home={where} tmp={where} user={job_user} logname={job_user}" and lines[4:] == ["f"]
    for job_id, attempts, error in ((failing.job_id, 2, "exit code 3"), (slow.job_id, 1, "timed out")):
        job = await stub.GetJobStatus(pb.JobId(id=job_id))
        assert (job.status, job.attempts) == ("FAILED", attempts) and error in job.last_error
    ran_in = dirs.read_text().split()
    assert len(ran_in) == 4 and len(set(ran_in)) == 4, ran_in  # a fresh one for each attempt
    assert where in ran_in and not any(Path(d).exists() for d in ran_in)


async def test_a_cancelled_or_interrupted_attempt_leaves_no_directory(stub, make_worker, settings, tmp_path):
    where = tmp_path / "where"
    cancelled = await stub.SubmitJob(pb.Job(command=f"pwd > {where}.1; sleep 30"))
    worker = make_worker("w-sandbox", burst=False, job_kill_grace=0.2, worker_shutdown_grace=0.2)
    running = asyncio.create_task(worker.run())
    try:
        first = await _written(tmp_path / "where.1")
        await stub.CancelJob(pb.JobId(id=cancelled.job_id))
        await wait_for(lambda: not first.exists(), what="cancelled job's directory removed")
        await stub.SubmitJob(pb.Job(command=f"pwd > {where}.2; sleep 30"))
        second = await _written(tmp_path / "where.2")
        worker.stop()  # past the 0.2 s grace the attempt is interrupted (its task cancelled)
        await running
        assert not second.exists()
    finally:
        worker.stop()
        await asyncio.gather(running, return_exceptions=True)


# --- the dev tools' job user (make start, make run-worker, scripts, these tests) ---------------


def test_dev_tools_give_root_workers_the_job_user(job_user, tmp_path):
    assert job_user_env("") == {"JOB_USER": JOB_USER} and pwd.getpwnam(JOB_USER)
    assert job_user_env("someone-chosen") == {}
    env_file = tmp_path / ".env"
    env_file.write_text("AUTH_TOKEN=x\n")
    env_file.chmod(0o644)
    assert close_env_file(env_file) and stat.S_IMODE(env_file.stat().st_mode) == 0o640
    assert not close_env_file(env_file) and not close_env_file(tmp_path / "missing")
    repo = Path(__file__).resolve().parents[2]
    printed = subprocess.run(
        [sys.executable, "-m", "devtools.cluster", "job-user"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(repo), "JOB_USER": ""},
    )
    assert (printed.returncode, printed.stdout) == (0, f"{JOB_USER}\n"), printed.stderr
