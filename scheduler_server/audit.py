"""The audit log: one line (logger ``audit``) per change a caller made, naming who, from where, and to what.

    submitted by=ci peer=ipv4:127.0.0.1:40522 rpc=SubmitJob job=0b6f...
    cancelled by=alice peer=... rpc=CancelJob job=0b6f... status=CANCELLED

``by`` is the name of the caller's token (``anonymous`` when the servers take
no token). Only calls that succeeded are audited; refused ones are in the
``auth`` log. With ``LOG_FORMAT=json`` the line also carries the fields
``action``, ``token_name``, ``peer``, ``rpc`` and ``ids``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("audit")

#: (action, what it was done to, the ids) from an RPC's request and reply.
Described = tuple[str, str, list[str]]


def _clean(text: str) -> str:
    """A caller's string made safe for one log line (no forged lines, no control characters)."""
    return text.encode("unicode_escape").decode("ascii")


def _jobs(ids: list[str]) -> str:
    return "jobs=" + (",".join(ids) or "none")


def _submitted(req: Any, rep: Any) -> Described:
    return "submitted", f"job={rep.job_id}" + (" duplicate" if rep.duplicate else ""), [rep.job_id]


def _submitted_batch(req: Any, rep: Any) -> Described:
    ids = [r.job_id for r in rep.jobs]
    return "submitted", f"count={len(ids)} {_jobs(ids)}", ids


def _cancelled(req: Any, rep: Any) -> Described:
    return "cancelled", f"job={rep.id} status={rep.status}", [rep.id]


def _retried(req: Any, rep: Any) -> Described:
    return "retried", f"count={rep.count} {_jobs(list(rep.ids))}", list(rep.ids)


def _purged(req: Any, rep: Any) -> Described:
    ids = list(rep.ids)
    return "purged", f"count={rep.count} " + ("jobs=all" if req.all else _jobs(ids)), ids


def _schedule(action: str) -> Callable[[Any, Any], Described]:
    def describe(req: Any, rep: Any) -> Described:
        done = action
        if action == "created" and rep.created_at_ms != rep.updated_at_ms:
            done = "updated"  # CreateSchedule with an existing name updates it
        return f"schedule {done}", f"schedule={rep.id} name={_clean(rep.name)!r}", [rep.id]

    return describe


def _schedule_run(req: Any, rep: Any) -> Described:
    forced = " force" if req.force else ""
    return "schedule run", f"schedule={_clean(req.id or req.name)!r} job={rep.job_id}{forced}", [rep.job_id]


#: Every RPC that changes something, and how to describe what it did.
ACTIONS: dict[str, Callable[[Any, Any], Described]] = {
    "SubmitJob": _submitted,
    "SubmitJobs": _submitted_batch,
    "CancelJob": _cancelled,
    "RetryDeadLetters": _retried,
    "PurgeDeadLetters": _purged,
    "CreateSchedule": _schedule("created"),
    "DeleteSchedule": _schedule("deleted"),
    "PauseSchedule": _schedule("paused"),
    "ResumeSchedule": _schedule("resumed"),
    "RunScheduleNow": _schedule_run,
}


def record(rpc: str, who: str, peer: str, request: Any, reply: Any) -> None:
    """Log the audit line of one successful call of ``rpc``."""
    action, what, ids = ACTIONS[rpc](request, reply)
    log.info(
        "%s by=%s peer=%s rpc=%s %s",
        action,
        who,
        peer,
        rpc,
        what,
        extra={"action": action, "token_name": who, "peer": peer, "rpc": rpc, "ids": ids},
    )
