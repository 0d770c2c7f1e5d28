"""Invariant 7 with the real programs: a job cannot touch the cluster.

The hostile job of issue 8 runs on a real worker. It is not root, it runs in a
scratch directory outside the checkout (removed afterwards), and no setting of
its worker reaches it, not even through ``/proc``. A worker whose jobs run as
its own user is protected by being non-dumpable; the control test shows the
same read succeeding when the worker stays dumpable.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from devtools.job_user import JOB_USER, close_env_file
from tests.e2e.conftest import Cluster, Proc, job_status, submit
from tests.helpers import group_members, wait_for_sync

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="jobs switch to JOB_USER only under a root worker")

#: The job's parent is its worker's launcher (worker/launcher.py), whose parent is the worker.
HOSTILE = r"""id -u; pwd; ls -a; wpid=$(awk '{{print $4}}' /proc/$PPID/stat); echo ppid=$PPID worker=$wpid
tr '\0' '\n' < /proc/$PPID/environ
tr '\0' '\n' < /proc/$wpid/environ
cat {checkout}/.env
for p in /proc/[0-9]*; do tr '\0' '\n' < $p/environ; done 2>/dev/null \
  | grep -E 'DATABASE_URL|REDIS_ADDR|AUTH_TOKEN|{secret}'
echo end"""

#: Run by a worker of the job's own user: its launcher's and its worker's environment, and its own shell's
#: (dumpable again).
SAME_USER = r"""wpid=$(awk '{print $4}' /proc/$PPID/stat); echo uid=$(id -u) worker=$wpid
tr '\0' '\n' < /proc/$PPID/environ | grep -E 'DATABASE_URL|AUTH_TOKEN'
tr '\0' '\n' < /proc/$wpid/environ | grep -E 'DATABASE_URL|AUTH_TOKEN'
cat /proc/$$/environ | tr '\0' '\n' | grep '^JOB_ID='
echo end"""


@pytest.fixture
def secret() -> str:
    return f"jcsecret{secrets.token_hex(8)}"


@pytest.fixture
def checkout(secret: str) -> Iterator[Path]:
    """A checkout as an operator has one: readable by all (like /opt/jobcluster), with a Makefile and a .env."""
    path = Path(tempfile.mkdtemp(prefix="jobcluster-checkout-"))
    path.chmod(0o755)
    (path / "Makefile").write_text("start:\n")
    (path / ".env").write_text(f"AUTH_TOKEN={secret}\n")
    (path / ".env").chmod(0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _with_password(database_url: str, password: str) -> str:
    """DATABASE_URL carrying ``password`` (the tests' PostgreSQL trusts local logins, so it still connects)."""
    parts = urlsplit(database_url)
    netloc = (
        parts.netloc
        if "@" in parts.netloc and ":" in parts.netloc.split("@")[0]
        else parts.netloc.replace("@", f":{password}@", 1)
    )
    return parts._replace(netloc=netloc).geturl()


def _worker(cluster: Cluster, worker_id: str, cwd: Path, argv: list[str] | None = None, **env: str) -> Proc:
    """``python -m worker`` (or ``argv``) in ``cwd``, killed at the test's end."""
    log_path = cluster.workdir / f"worker-{worker_id}.log"
    with open(log_path, "w") as out:
        popen = subprocess.Popen(
            argv or [sys.executable, "-m", "worker", "--id", worker_id],
            cwd=cwd,
            env=cluster.env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    proc = Proc(f"worker-{worker_id}", popen, log_path)
    cluster.procs.append(proc)
    return proc


def _finished(address: str, job_id: str):
    wait_for_sync(
        lambda: job_status(address, job_id).status in ("SUCCEEDED", "FAILED"), timeout=30, what="job finished"
    )
    return job_status(address, job_id)


def test_the_hostile_job_on_a_root_worker_is_not_root_not_in_the_checkout_and_sees_no_setting(
    cluster: Cluster, checkout: Path, secret: str
):
    _, address = cluster.server()
    assert close_env_file(checkout / ".env")  # what make start does to a .env others may read
    database_url = _with_password(cluster.settings.database_url, secret)
    worker = _worker(cluster, "e2e-hostile", checkout, DATABASE_URL=database_url, AUTH_TOKEN=secret)
    job = _finished(address, submit(address, command=HOSTILE.format(checkout=checkout, secret=secret), max_retries=0))
    out = job.output
    print(f"the hostile job's output:\n{out}")
    lines = out.splitlines()
    assert job.status == "SUCCEEDED" and lines[-1] == "end", out
    assert lines[0] == str(pwd.getpwnam(JOB_USER).pw_uid)  # not root
    where = Path(lines[1])
    assert where.parent == Path(cluster.settings.job_workdir_root)  # a scratch directory of its own
    assert not where.is_relative_to(checkout) and not where.is_relative_to(REPO)
    assert lines[2:4] == [".", ".."] and "Makefile" not in out
    launcher = re.search(rf"ppid=(\d+) worker={worker.popen.pid}\n", out)
    assert launcher, out  # it did aim at its launcher and its worker...
    assert f"/proc/{launcher.group(1)}/environ: Permission denied" in out  # ...and was refused by both
    assert f"/proc/{worker.popen.pid}/environ: Permission denied" in out
    assert f"{checkout}/.env: Permission denied" in out
    for value in (secret, database_url, f"REDIS_ADDR={cluster.settings.redis_addr}"):
        assert value not in out, f"the job read {value!r}:\n{out}"
    assert not where.exists()  # removed after the attempt
    assert "readable by the job user" not in worker.log()


def test_a_worker_warns_when_jobs_could_read_its_env_file(cluster: Cluster, checkout: Path):
    worker = _worker(cluster, "e2e-warn", checkout)
    wait_for_sync(lambda: "is readable by the job user" in worker.log(), timeout=30, what="the warning")
    assert f"chmod 600 {checkout / '.env'}" in worker.log()


@pytest.mark.parametrize(
    "setting, message",
    [
        (
            "",
            "configuration error: the worker runs as root: set JOB_USER to an unprivileged user "
            "(make start creates jobcluster-job), or JOB_USER=root to run jobs as root knowingly",
        ),
        ("no-such-user-x", "configuration error: JOB_USER=no-such-user-x: no such user on this machine"),
    ],
)
def test_a_root_worker_without_a_usable_job_user_refuses_to_start(cluster: Cluster, setting: str, message: str):
    worker = cluster.worker("e2e-refused", JOB_USER=setting)
    assert worker.wait(30) == 2
    assert message in worker.log()


def test_a_crashed_workers_job_directory_is_removed_at_the_next_start(cluster: Cluster, tmp_path: Path):
    _, address = cluster.server()
    doomed = cluster.worker("e2e-crash")
    where, pgid = tmp_path / "where", tmp_path / "pgid"
    submit(address, command=f"echo $$ > {pgid}; pwd > {where}; sleep 30", max_retries=0)
    wait_for_sync(lambda: where.exists() and where.read_text().strip(), timeout=20, what="job started")
    scratch = Path(where.read_text().strip())
    doomed.signal(signal.SIGKILL)
    doomed.wait(10)
    try:
        assert scratch.is_dir()  # the crash left it
        successor = cluster.worker("e2e-successor")
        wait_for_sync(lambda: not scratch.exists(), timeout=20, what="leftover directory removed")
        # the successor says so once it has removed every leftover (the directory goes first)
        wait_for_sync(
            lambda: "job directory left by a worker that died" in successor.log(),
            timeout=10,
            what="the successor's line about it",
        )
    finally:
        _kill_group(int(pgid.read_text()))  # the orphan `sleep 30` (issue 9: no orphans)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    wait_for_sync(lambda: not group_members(pgid), timeout=10, what="orphan group gone")


# --- a worker whose jobs run as its own user ----------------------------------------------------


def _as_job_user(mnt: Path, worker_id: str, code: str) -> list[str]:
    """argv running this Python, its site-packages and this checkout as the job user, via bind mounts
    in a private mount namespace: they may live under a directory it cannot enter (root's 0700 home)."""
    for tool in ("unshare", "setpriv", "mount"):
        if not shutil.which(tool):
            pytest.skip(f"needs {tool} (util-linux)")
    user = pwd.getpwnam(JOB_USER)
    base = Path(sys.base_prefix).resolve()
    binds = {"py": base, "site": Path(sysconfig.get_paths()["purelib"]), "repo": REPO}
    for name in binds:
        (mnt / name).mkdir(parents=True)
    mounts = "; ".join(
        f"mount --bind {shlex.quote(str(src))} {shlex.quote(str(mnt / name))}" for name, src in binds.items()
    )
    script = (
        f"set -e; {mounts}; export LD_LIBRARY_PATH={shlex.quote(str(mnt / 'py' / 'lib'))}; "
        f'exec setpriv --reuid={user.pw_uid} --regid={user.pw_gid} --init-groups -- "$@"'
    )
    boot = (
        f"import site, sys; site.addsitedir({str(mnt / 'site')!r}); sys.path.insert(0, {str(mnt / 'repo')!r}); " + code
    )
    python = mnt / "py" / Path(sys.executable).resolve().relative_to(base)
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        "sh",
        str(python),
        "-c",
        boot,
        "--id",
        worker_id,
    ]


def _same_user_run(cluster: Cluster, tmp_path: Path, secret: str, code: str) -> tuple[Proc, str]:
    _, address = cluster.server()
    database_url = _with_password(cluster.settings.database_url, secret)
    worker = _worker(
        cluster,
        "e2e-same-user",
        tmp_path,
        _as_job_user(tmp_path / "mnt", "e2e-same-user", code),
        DATABASE_URL=database_url,
        AUTH_TOKEN=secret,
        JOB_WORKDIR_ROOT=str(tmp_path / "jobs"),
        HOME=str(tmp_path),
    )  # its own HOME: asyncpg looks in ~/.postgresql
    job = _finished(address, submit(address, command=SAME_USER, max_retries=0))
    assert job.status == "SUCCEEDED", (job.output, worker.log()[-3000:])
    out = job.output
    print(f"the same-user job's output:\n{out}")
    assert f"uid={pwd.getpwnam(JOB_USER).pw_uid} worker={worker.popen.pid}" in out, out  # same user as the worker
    assert "JOB_ID=" in out  # the job's own shell is dumpable again (reset by execve)
    return worker, out


def test_a_same_user_job_cannot_read_its_non_dumpable_worker(cluster: Cluster, tmp_path: Path, secret: str):
    worker, out = _same_user_run(cluster, tmp_path, secret, "import worker.__main__ as m; m.run()")
    assert secret not in out, out
    assert f"/proc/{worker.popen.pid}/environ: Permission denied" in out
    assert out.count("environ: Permission denied") == 2  # the launcher is never dumpable either


def test_control_the_same_read_succeeds_when_the_worker_stays_dumpable(cluster: Cluster, tmp_path: Path, secret: str):
    """Without prctl(PR_SET_DUMPABLE, 0) the read works: what protects the worker above is that call."""
    _, out = _same_user_run(
        cluster, tmp_path, secret, "import worker.__main__ as m; m.make_non_dumpable = lambda *a, **k: False; m.run()"
    )
    assert f"AUTH_TOKEN={secret}" in out and f":{secret}@" in out
