"""The user that jobs of a root worker run as, for ``make start``, ``make run-worker``, scripts and tests.

A worker running as root refuses to start without JOB_USER (worker/sandbox.py).
When the dev tools start workers as root and nobody chose a user, they create
the system user ``jobcluster-job`` (no home, no login shell) and give the
workers ``JOB_USER=jobcluster-job``.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path

#: The user created for jobs (worker/sandbox.py names the same one in its messages).
JOB_USER = "jobcluster-job"
USERADD = [
    "useradd",
    "--system",
    "--user-group",
    "--no-create-home",
    "--home-dir",
    "/nonexistent",
    "--shell",
    "/usr/sbin/nologin",
]


class JobUserError(RuntimeError):
    """The job user could not be created; the message says what to do instead."""


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def ensure_job_user(name: str = JOB_USER) -> bool:
    """Create the system user ``name`` unless it exists; True when this call created it."""
    error = ""
    for _ in range(5):
        if user_exists(name):
            return False
        try:
            done = subprocess.run([*USERADD, name], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            error = str(exc)
            break
        if done.returncode == 0:
            return True
        error = done.stderr.strip()
        time.sleep(0.2)  # another process was adding a user at the same moment (/etc/passwd locked)
    if user_exists(name):
        return False
    raise JobUserError(
        f"could not create the user {name} that jobs run as ({error}): create it with "
        f"`{' '.join(USERADD)} {name}`, or set JOB_USER to an unprivileged user"
    )


def job_user_env(current: str) -> dict[str, str]:
    """What to add to the environment of workers started as this process's user.

    ``current`` is the JOB_USER they would see anyway (from ``.env`` or the
    environment). As root with none: ``JOB_USER=jobcluster-job``, the user being
    created when missing. Otherwise nothing: the workers' own choice stands.
    """
    if os.geteuid() != 0 or current:
        return {}
    ensure_job_user(JOB_USER)
    return {"JOB_USER": JOB_USER}


def close_env_file(path: Path) -> bool:
    """Take away other users' access to a ``.env`` (jobs run as another user must not read it); True if changed."""
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o007:
            os.chmod(path, mode & ~0o007)
            return True
    except FileNotFoundError:
        pass
    return False
