"""Where and as whom a job runs: the job user, and a fresh scratch directory for each attempt.

A worker running as root runs jobs as JOB_USER (``make start`` creates
``jobcluster-job``) and refuses to start without one; a worker that is not root
runs jobs as its own user. Each attempt gets a directory of its own under
JOB_WORKDIR_ROOT, owned by the job user with mode 0700: its working directory,
HOME and TMPDIR. It is removed when the attempt ends, however it ends (unless
JOB_KEEP_WORKDIR). While an attempt runs, its worker holds a flock on the
directory, so a worker starting later tells a live attempt's directory from one
a crashed worker left behind, and removes only the latter.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import pwd
import re
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jobcluster.settings import ConfigError, Settings
from worker.launch import RunAs

log = logging.getLogger("worker")

#: The user ``make start`` creates for jobs when it runs as root.
DEFAULT_JOB_USER = "jobcluster-job"
#: Marks JOB_WORKDIR_ROOT as made by jobcluster: a non-empty directory without it is refused, never emptied.
MARKER = ".jobcluster-workdirs"
#: Every attempt's directory is named ``job-<job id>-<attempt>-<random>``; only such entries are ever removed.
PREFIX = "job-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def default_root() -> str:
    """JOB_WORKDIR_ROOT when it is not set: ``$TMPDIR`` (else /tmp), ``jobcluster-jobs-<uid of the worker>``."""
    return os.path.join(tempfile.gettempdir(), f"jobcluster-jobs-{os.geteuid()}")


def _name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def resolve_job_user(job_user: str, euid: int | None = None) -> tuple[str, RunAs | None]:
    """The name jobs run as, and the credentials to switch to (None: keep the worker's own)."""
    euid = os.geteuid() if euid is None else euid
    me = _name_of(euid)
    if euid != 0:
        if job_user not in ("", me, str(euid)):
            raise ConfigError(
                f"JOB_USER={job_user}, but the worker runs as {me} (uid {euid}), not root, so it cannot start "
                f"jobs as another user: leave JOB_USER empty to run jobs as {me} (they can then read whatever "
                f"{me} can), or run the worker as root"
            )
        return me, None
    if not job_user:
        raise ConfigError(
            f"the worker runs as root: set JOB_USER to an unprivileged user (make start creates "
            f"{DEFAULT_JOB_USER}), or JOB_USER=root to run jobs as root knowingly"
        )
    try:
        pw = pwd.getpwnam(job_user)
    except KeyError:
        raise ConfigError(
            f"JOB_USER={job_user}: no such user on this machine; create it (useradd --system "
            f"--no-create-home --shell /usr/sbin/nologin {job_user}), or leave JOB_USER unset "
            f"under make start, which creates {DEFAULT_JOB_USER}"
        ) from None
    if pw.pw_uid == 0:
        log.warning(
            "JOB_USER=%s: jobs run as root and can read everything the worker can, its settings included", job_user
        )
        return job_user, None
    groups = tuple(dict.fromkeys(os.getgrouplist(pw.pw_name, pw.pw_gid)))
    return pw.pw_name, RunAs(pw.pw_name, pw.pw_uid, pw.pw_gid, groups)


@dataclass(frozen=True)
class Scratch:
    """One attempt's directory, and the open descriptor whose flock marks it as in use."""

    path: str
    lock_fd: int


class Sandbox:
    """Creates and removes attempts' directories; knows the job user's name and credentials."""

    def __init__(self, user: str, run_as: RunAs | None, root: Path, keep: bool = False) -> None:
        self.user = user
        self.run_as = run_as
        self.root = root
        self.keep = keep
        _prepare_root(root, run_as)

    @classmethod
    def from_settings(cls, settings: Settings) -> Sandbox:
        """JOB_USER, JOB_WORKDIR_ROOT and JOB_KEEP_WORKDIR checked; ConfigError says what to change."""
        user, run_as = resolve_job_user(settings.job_user)
        # abspath, not realpath: a symbolic link as the root itself must be seen, and refused.
        root = Path(os.path.abspath(settings.job_workdir_root or default_root()))
        env_file = Path(".env").absolute()
        if run_as is not None and _readable_by(env_file, run_as):
            log.warning(
                "%s is readable by the job user %s, so jobs can read the settings in it: chmod 600 %s",
                env_file,
                run_as.name,
                env_file,
            )
        return cls(user, run_as, root, settings.job_keep_workdir)

    def describe(self) -> str:
        kept = ", kept afterwards (JOB_KEEP_WORKDIR)" if self.keep else ""
        return f"jobs run as {self.user} in a fresh directory under {self.root}{kept}"

    def remove_leftovers(self) -> int:
        """Remove the attempts' directories that no live worker holds (a crashed worker's); return how many."""
        if self.keep:
            return 0
        removed = 0
        try:
            with os.scandir(self.root) as entries:
                for entry in entries:
                    if entry.name.startswith(PREFIX) and entry.is_dir(follow_symlinks=False):
                        removed += self._remove_unheld(entry.path)
        except OSError as exc:  # a temp cleaner removed the root: nothing left to remove
            log.warning("could not look for leftover job directories in %s: %s", self.root, exc)
        if removed:
            log.warning(
                "removed %d job director%s left by a worker that died, in %s",
                removed,
                "y" if removed == 1 else "ies",
                self.root,
            )
        return removed

    def _remove_unheld(self, path: str) -> bool:
        try:
            if os.geteuid() != 0:  # a job of the worker's own user may have made its directory 000
                os.chmod(path, 0o700)
            fd = os.open(path, _DIR_FLAGS)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False  # a live attempt's
        try:
            _remove_tree(path)
        finally:
            os.close(fd)
        return True

    def create(self, job_id: str, attempt: int) -> Scratch:
        """A fresh directory for one attempt: the job user's, mode 0700, flocked until :meth:`remove`."""
        prefix = f"{PREFIX}{re.sub(r'[^A-Za-z0-9_.-]', '_', job_id)[:64]}-{attempt}-"
        for _ in range(3):
            try:
                path = tempfile.mkdtemp(prefix=prefix, dir=self.root)
            except FileNotFoundError:  # a temp cleaner removed the root: make it again, with its checks
                _prepare_root(self.root, self.run_as)
                continue
            scratch = _lock(path)
            if scratch is None:
                continue  # a worker starting just now took it for a leftover
            if self.run_as is not None:
                os.fchown(scratch.lock_fd, self.run_as.uid, self.run_as.gid)
            return scratch
        raise OSError(errno.EAGAIN, f"could not create a directory in {self.root}")

    async def remove(self, scratch: Scratch) -> None:
        """Remove the attempt's directory (unless JOB_KEEP_WORKDIR), off the event loop unless it is empty."""
        try:
            if not self.keep:
                try:
                    os.rmdir(scratch.path)  # what most jobs leave: nothing
                except OSError:
                    await asyncio.shield(asyncio.to_thread(_remove_tree, scratch.path))
        finally:
            os.close(scratch.lock_fd)

    def env(self, base: Mapping[str, str], scratch: Scratch) -> dict[str, str]:
        """``base`` with HOME and TMPDIR set to the attempt's directory and USER, LOGNAME to the job user."""
        return {**base, "HOME": scratch.path, "TMPDIR": scratch.path, "USER": self.user, "LOGNAME": self.user}


def _lock(path: str) -> Scratch | None:
    """Open and flock the directory just made; None if a starting worker removed it meanwhile."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        now, held = os.lstat(path), os.fstat(fd)
        if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return Scratch(path, fd)
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


def _prepare_root(root: Path, run_as: RunAs | None) -> None:
    """Create JOB_WORKDIR_ROOT, or check that an existing one is ours; the job user may pass, not list."""
    name = f"JOB_WORKDIR_ROOT={root}"
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(root, 0o700)
        (root / MARKER).touch()
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(
            f"{name}: cannot create it ({exc.strerror}); set JOB_WORKDIR_ROOT to a directory the worker may create"
        ) from None
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{name} is not a directory (a symbolic link or a file): set JOB_WORKDIR_ROOT to a directory")
    if st.st_uid != os.geteuid():
        raise ConfigError(
            f"{name} belongs to uid {st.st_uid}, not to the worker's user (uid {os.geteuid()}), "
            f"so another user could tamper with jobs' directories: remove it, or set "
            f"JOB_WORKDIR_ROOT to another directory"
        )
    _check_parents(root, run_as)
    if not (root / MARKER).exists():
        with os.scandir(root) as entries:
            if any(True for _ in entries):
                raise ConfigError(
                    f"{name} holds files jobcluster did not make (no {MARKER} in it), which "
                    f"would be removed as leftovers: set JOB_WORKDIR_ROOT to a new or empty "
                    f"directory"
                )
        (root / MARKER).touch()
    # The job user must pass through to its own directory; no one but the worker may list or change it.
    os.chmod(root, 0o711 if run_as is not None else 0o700)


def _check_parents(root: Path, run_as: RunAs | None) -> None:
    """Refuse a root below a directory that another user could change, or that the job user cannot pass."""
    for parent in reversed(root.parents):
        st = os.stat(parent)
        others_write = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX
        if st.st_uid not in (0, os.geteuid()) or others_write:
            raise ConfigError(
                f"JOB_WORKDIR_ROOT={root}: {parent} can be changed by another user (owner uid "
                f"{st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}), who could swap jobs' directories: "
                f"set JOB_WORKDIR_ROOT below directories only root or the worker's user can change, "
                f"such as /var/tmp/jobcluster-jobs"
            )
        if run_as is not None and not _searchable_by(st, run_as):
            raise ConfigError(
                f"JOB_WORKDIR_ROOT={root}: the job user {run_as.name} cannot reach it ({parent} "
                f"is not searchable by it): set JOB_WORKDIR_ROOT to a directory such as "
                f"/var/tmp/jobcluster-jobs"
            )


def _permits(st: os.stat_result, who: RunAs, owner: int, group: int, other: int) -> bool:
    if st.st_uid == who.uid:
        return bool(st.st_mode & owner)
    if st.st_gid in who.groups:
        return bool(st.st_mode & group)
    return bool(st.st_mode & other)


def _searchable_by(st: os.stat_result, who: RunAs) -> bool:
    return _permits(st, who, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)


def _readable_by(path: Path, who: RunAs) -> bool:
    """Whether ``who`` can open ``path`` for reading (by the permission bits on it and its parents)."""
    try:
        if not all(_searchable_by(os.stat(p), who) for p in path.parents):
            return False
        return _permits(os.stat(path), who, stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)
    except OSError:
        return False


def _remove_tree(path: str) -> None:
    """Remove a job's directory without following its symbolic links; what cannot go is logged."""
    errors: list[str] = []

    def note(func: object, failed: str, exc_info: tuple[type[BaseException], BaseException, object]) -> None:
        errors.append(f"{failed}: {exc_info[1]}")

    shutil.rmtree(path, onerror=note)
    if errors and os.geteuid() != 0 and os.path.lexists(path):
        # A job of the worker's own user made part of its tree read-only (Go's module cache does).
        _make_writable(path)
        errors.clear()
        shutil.rmtree(path, onerror=note)
    if errors:
        log.warning("could not remove all of %s (%s); a worker's next start tries again", path, errors[0])


def _make_writable(top: str) -> None:
    stack = [top]
    while stack:
        path = stack.pop()
        try:
            os.chmod(path, 0o700)
            with os.scandir(path) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
