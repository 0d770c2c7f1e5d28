"""Jobs to submit: read a jobs file (``{"jobs": [...]}``, the original format, or a bare list of job
objects) or the ``-cmd`` flags, and turn each entry into its message."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import uuid
from dataclasses import dataclass
from typing import Any

from jobcluster import cron
from jobcluster.durations import parse_duration
from jobcluster.model import InvalidJob, Routing, check_idempotency_key, validate_routing
from jobcluster.pb import scheduler_pb2 as pb

#: Where a job runs: its queue, priority (0-9), constraints (tags a worker must have) and concurrency key.
ROUTING_FIELDS = ("queue", "priority", "constraints", "concurrency_key", "max_concurrency")
FIELDS = (
    "name",
    "command",
    "description",
    "max_retries",
    "timeout",
    "run_at",
    "idempotency_key",
    "cron",
    "timezone",
    "catchup",
    "overlap",
    "enabled",
    *ROUTING_FIELDS,
)
#: Fields that make an entry a cron schedule (created or updated by name) instead of a job.
SCHEDULE_FIELDS = ("cron", "timezone", "catchup", "overlap")


class JobsFileError(ValueError):
    """The file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class JobEntry(Routing):
    """One job as the file (or the -cmd flags) describes it; its routing checked (jobcluster.model)."""

    command: str
    name: str = ""
    description: str = ""
    max_retries: int | None = None
    timeout_seconds: float | None = None
    run_at_ms: int = 0
    idempotency_key: str = ""
    cron: str = ""  # set: this entry is a schedule
    timezone: str = ""
    catchup: str = ""
    overlap: str = ""
    enabled: bool | None = None  # a cron entry: None keeps a schedule's state (a new one is enabled)
    where: str = ""  # "jobs.json: job 3 ('nightly')", for messages


def routing(raw: dict[str, Any]) -> dict[str, Any]:
    """The routing fields of an entry (or of the -cmd flags), checked as the server checks them;
    ValueError saying what is wrong."""
    for key in ("queue", "concurrency_key"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise ValueError(f'"{key}" must be a string, got {type(raw[key]).__name__}')
    for key in ("priority", "max_concurrency"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f'"{key}" must be a whole number, got {value!r}')
    constraints = raw.get("constraints") or []
    if not isinstance(constraints, list) or not all(isinstance(c, str) for c in constraints):
        raise ValueError(f'"constraints" must be a list of tags such as ["gpu", "region=eu"], got {constraints!r}')
    try:
        checked = validate_routing(
            queue=raw.get("queue") or "",
            priority=raw.get("priority") or 0,
            constraints=constraints,
            concurrency_key=raw.get("concurrency_key") or "",
            max_concurrency=raw.get("max_concurrency") or 0,
        )
    except InvalidJob as exc:
        raise ValueError(str(exc)) from None
    return checked.routing()


def parse_run_at(value: Any) -> int:
    """Unix seconds (number) or an ISO 8601 time (naive means UTC) -> unix ms."""
    if isinstance(value, bool):
        raise ValueError("run_at must be an ISO 8601 time or unix seconds, not true/false")
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"run_at must be a non-negative unix time, got {value}")
        return int(value * 1000)
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"run_at {value!r} is not an ISO 8601 time (e.g. 2026-11-23T18:00:00Z)") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        return int(when.timestamp() * 1000)
    raise ValueError(f"run_at must be an ISO 8601 time or unix seconds, got {type(value).__name__}")


def _entry(raw: Any, where: str) -> JobEntry:
    if not isinstance(raw, dict):
        raise JobsFileError(f'{where}: must be an object with a "command", got {type(raw).__name__}')
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise JobsFileError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    command = raw.get("command")
    if not isinstance(command, str) or not command.strip():
        raise JobsFileError(f'{where}: "command" must be a non-empty string')
    if "\x00" in command:
        raise JobsFileError(f'{where}: "command" contains a NUL byte')
    for key in ("name", "description", "idempotency_key", *SCHEDULE_FIELDS):
        if key in raw and not isinstance(raw[key], str):
            raise JobsFileError(f'{where}: "{key}" must be a string, got {type(raw[key]).__name__}')
    try:  # as the server checks it, so a reserved key stops the file before any schedule is saved
        check_idempotency_key(raw.get("idempotency_key", ""))
    except InvalidJob as exc:
        raise JobsFileError(f"{where}: {exc}") from None
    retries = raw.get("max_retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
        raise JobsFileError(f'{where}: "max_retries" must be a whole number >= 0, got {retries!r}')
    timeout = None
    if raw.get("timeout") is not None:
        value = raw["timeout"]
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise JobsFileError(f'{where}: "timeout" must be seconds or a duration like "30s"')
        try:
            timeout = parse_duration(value)
        except ValueError as exc:
            raise JobsFileError(f'{where}: "timeout": {exc}') from None
    run_at = 0
    if raw.get("run_at") is not None:
        try:
            run_at = parse_run_at(raw["run_at"])
        except ValueError as exc:
            raise JobsFileError(f"{where}: {exc}") from None
    try:
        routed = routing(raw)
    except ValueError as exc:
        raise JobsFileError(f"{where}: {exc}") from None
    if "enabled" in raw and not isinstance(raw["enabled"], bool):
        raise JobsFileError(f'{where}: "enabled" must be true or false, got {raw["enabled"]!r}')
    if any(k in raw for k in (*SCHEDULE_FIELDS, "enabled")):
        if not raw.get("cron", "").strip():
            given = ", ".join(k for k in (*SCHEDULE_FIELDS, "enabled") if k in raw)
            raise JobsFileError(f'{where}: "cron" is needed with {given}')
        if not raw.get("name", "").strip():
            raise JobsFileError(f'{where}: a cron entry needs a "name" (the schedule is created or updated by name)')
        for key in ("run_at", "idempotency_key"):
            if key in raw:
                raise JobsFileError(f'{where}: "{key}" does not apply to a cron entry')
        try:  # checked here, so one bad entry stops the file before any schedule is saved
            cron.validate(
                raw["cron"],
                raw.get("timezone", "").strip() or "UTC",
                raw.get("catchup", "").strip().lower() or "skip",
                raw.get("overlap", "").strip().lower() or "allow",
            )
        except cron.InvalidSchedule as exc:
            raise JobsFileError(f"{where}: {exc}") from None
    return JobEntry(
        command=command,
        name=raw.get("name", ""),
        description=raw.get("description", ""),
        max_retries=retries,
        timeout_seconds=timeout,
        run_at_ms=run_at,
        idempotency_key=raw.get("idempotency_key", ""),
        cron=raw.get("cron", "").strip(),
        timezone=raw.get("timezone", ""),
        catchup=raw.get("catchup", ""),
        overlap=raw.get("overlap", ""),
        enabled=raw.get("enabled"),
        where=where,
        **routed,
    )


def parse_jobs(text: str, source: str = "jobs file") -> list[JobEntry]:
    """Every entry of a jobs file, or :class:`JobsFileError` for the first bad one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JobsFileError(f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if isinstance(data, dict):
        if "jobs" not in data:
            raise JobsFileError(f'{source}: expected {{"jobs": [...]}} or a list of jobs')
        data = data["jobs"]
    if not isinstance(data, list):
        raise JobsFileError(f'{source}: "jobs" must be a list')
    if not data:
        raise JobsFileError(f"{source}: no jobs in the file")
    entries = []
    for i, raw in enumerate(data, start=1):
        label = f"job {i}"
        if isinstance(raw, dict) and isinstance(raw.get("name"), str) and raw["name"]:
            label += f" ({raw['name']!r})"
        entries.append(_entry(raw, f"{source}: {label}"))
    return entries


def load_jobs(path: str) -> list[JobEntry]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise JobsFileError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise JobsFileError(f"{path}: not UTF-8 text") from None
    return parse_jobs(text, path)


def entry_from_flags(args: argparse.Namespace) -> JobEntry:
    """The one job of ``-cmd`` and its flags; :class:`JobsFileError` naming a bad flag."""
    try:
        timeout = parse_duration(args.timeout) if args.timeout is not None else None
        run_at = parse_run_at(_number_or_text(args.run_at)) if args.run_at else 0
        routed = routing(
            {
                "queue": args.queue,
                "priority": args.priority,
                "concurrency_key": args.concurrency_key,
                "max_concurrency": args.max_concurrency,
                "constraints": [t for arg in args.constraint for t in arg.split(",") if t.strip()],
            }
        )
        check_idempotency_key(args.idempotency_key)
    except ValueError as exc:
        raise JobsFileError(str(exc).replace('"', "")) from None
    if args.max_retries is not None and args.max_retries < 0:
        raise JobsFileError("--max-retries must not be negative")
    return JobEntry(
        command=args.cmd,
        name=args.name,
        max_retries=args.max_retries,
        timeout_seconds=timeout,
        run_at_ms=run_at,
        idempotency_key=args.idempotency_key,
        **routed,
    )


def _number_or_text(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def to_message(entry: JobEntry) -> pb.Job:
    """The Job message of an entry. Every submit carries an idempotency key, so trying the next server
    never makes a second job."""
    job = pb.Job(
        command=entry.command,
        name=entry.name,
        description=entry.description,
        run_at_ms=entry.run_at_ms,
        idempotency_key=entry.idempotency_key or str(uuid.uuid4()),
        **entry.routing(),
    )
    if entry.max_retries is not None:
        job.max_retries = entry.max_retries
    if entry.timeout_seconds is not None:
        job.timeout_seconds = entry.timeout_seconds
    return job
