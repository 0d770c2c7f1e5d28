"""Process hardening shared by the programs: keep same-user processes out of this one's memory.

A process whose "dumpable" flag is off has its ``/proc/<pid>/environ``,
``/proc/<pid>/mem``, ``maps``, ``fd/`` and so on owned by root, and cannot be
ptraced, by any process without CAP_SYS_PTRACE, including one of the same
user. The flag survives fork but is reset by execve, so children (such as a
worker's jobs) are ordinary, dumpable processes again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3

log = logging.getLogger("jobcluster.hardening")


def _prctl(option: int, arg: int = 0) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    result: int = libc.prctl(option, arg, 0, 0, 0)
    if result < 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")
    return result


def make_non_dumpable(why: str = "its environment holds settings and secrets") -> bool:
    """Turn off this process's dumpable flag (``prctl(PR_SET_DUMPABLE, 0)``); warn and return False if it fails."""
    try:
        _prctl(PR_SET_DUMPABLE, 0)
        return _prctl(PR_GET_DUMPABLE) == 0
    except (OSError, AttributeError) as exc:
        log.warning(
            "could not make this process non-dumpable (%s): processes of the same user can read "
            "/proc/%d/environ, and %s",
            exc,
            os.getpid(),
            why,
        )
        return False
