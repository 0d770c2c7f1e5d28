"""The job model: statuses, what a submission may contain, and the retry policy."""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from enum import StrEnum
from typing import Any

from jobcluster import clock, keys


class Status(StrEnum):
    """A job's status, as users see it."""

    PENDING = "PENDING"  # accepted, waiting for run_at or a retry backoff
    QUEUED = "QUEUED"  # ready to run, waiting for a worker
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"  # dead-lettered: its id is in dlq_tasks
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


#: The statuses a job never leaves. The one definition: the server, the client and the web UI
#: (which hands it to its JavaScript in a ``data-`` attribute) all use this.
TERMINAL: frozenset[Status] = frozenset(s for s in Status if s.terminal)

MAX_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 2000
MAX_IDEMPOTENCY_KEY_CHARS = 200
MAX_RETRIES_LIMIT = 100
MAX_TIMEOUT_SECONDS = 7 * 86400.0
#: A job may be scheduled at most this far ahead (run_at_ms).
MAX_RUN_AT_AHEAD_MS = 3650 * 86_400_000
#: The last millisecond of year 9999: the latest time any request may name.
MAX_TIME_MS = 253_402_300_799_999


def check_time_ms(field: str, value: int) -> int:
    """A unix-ms time from a request: 0 (none) up to year 9999, else :class:`InvalidJob` naming ``field``."""
    if value < 0 or value > MAX_TIME_MS:
        raise InvalidJob(f"{field} must be a unix time in milliseconds between 0 and {MAX_TIME_MS}, got {value}")
    return value


class InvalidJob(ValueError):
    """A submission that cannot be accepted; the message says what to change."""


#: Idempotency keys that start with one of these are the server's, never a caller's. The jobs the server
#: creates (cron ticks, RunScheduleNow) carried such keys until a tick's job was made unique by its
#: (schedule, tick) alone; they now carry none, and older rows keep theirs. So no key a caller may write
#: can name, or stand in the way of, a job the server creates.
RESERVED_KEY_PREFIXES = ("cron:", "manual:")


def check_idempotency_key(key: str) -> None:
    """Raise :class:`InvalidJob` when a caller's idempotency key is too long, holds a NUL byte, or starts
    with one of :data:`RESERVED_KEY_PREFIXES` (the message names the prefix)."""
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidJob(f"idempotency_key is over the limit of {MAX_IDEMPOTENCY_KEY_CHARS} characters")
    if "\x00" in key:
        raise InvalidJob("idempotency_key contains a NUL byte")
    for prefix in RESERVED_KEY_PREFIXES:
        if key.startswith(prefix):
            raise InvalidJob(
                f"idempotency_key {key[:80]!r} starts with {prefix!r}, a prefix reserved for jobs "
                "the server creates (cron ticks, RunScheduleNow; no key of a caller may start with "
                f"{' or '.join(map(repr, RESERVED_KEY_PREFIXES))}); choose another key"
            )


#: The queue of a job that names none (its Redis list is ``pending_jobs``): defined with the lanes.
DEFAULT_QUEUE = keys.DEFAULT_QUEUE
MAX_PRIORITY = 9
MAX_CONSTRAINTS = 16
MAX_CONCURRENCY_KEY_CHARS = 128
MAX_CONCURRENCY_LIMIT = 10_000
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: A worker tag (WORKER_TAGS) and a job's constraint: no comma (the list separator) and no colon
#: (the lane's separator in Redis key names).
TAG = re.compile(r"[A-Za-z0-9_.=/-]{1,64}")
ROUTING_FIELDS = ("queue", "priority", "constraints", "concurrency_key", "max_concurrency")


@dataclass(frozen=True)
class Routing:
    """Where a job waits and what may run it: the part of a job (or a schedule's jobs) that routes it.

    Keyword-only, so every job-like row and spec carries the same fields under the same names."""

    _: KW_ONLY
    queue: str = DEFAULT_QUEUE
    priority: int = 0  # 0-9, higher first
    constraints: tuple[str, ...] = ()  # tags a worker must have, sorted, without repeats
    concurrency_key: str = ""  # '' : no limit
    max_concurrency: int = 0  # 0: the per-key setting or its default

    def routing(self) -> dict[str, Any]:
        """The routing fields by name (to build another job-like object with the same routing)."""
        return {f: getattr(self, f) for f in ROUTING_FIELDS}


def check_queue(queue: str, field: str = "queue") -> str:
    """A queue name (surrounding blanks dropped; empty is the default queue), else :class:`InvalidJob`."""
    queue = queue.strip()
    if not queue:
        return DEFAULT_QUEUE
    if not QUEUE_NAME.fullmatch(queue):
        raise InvalidJob(
            f"{field} {queue[:80]!r} is not a queue name: 1 to 64 characters of letters, digits, '_', '.', '-'"
        )
    return queue


def check_tags(tags: Iterable[str], field: str = "constraints") -> tuple[str, ...]:
    """Tags (a job's constraints, a worker's WORKER_TAGS): checked, sorted, without repeats."""
    out: set[str] = set()
    for n, raw in enumerate(tags, start=1):
        tag = raw.strip()
        if not TAG.fullmatch(tag):
            what = "is empty" if not tag else f"{tag[:80]!r} is not a tag"
            raise InvalidJob(
                f"{field} item {n} {what}: 1 to 64 characters of letters, digits, "
                "'_', '.', '=', '/', '-' (no comma or colon), such as gpu or region=eu"
            )
        out.add(tag)
        if len(out) > MAX_CONSTRAINTS:
            raise InvalidJob(f"{field} has more than {MAX_CONSTRAINTS} tags; at most {MAX_CONSTRAINTS}")
    return tuple(sorted(out))


def validate_routing(
    *,
    queue: str = "",
    priority: int = 0,
    constraints: Iterable[str] = (),
    concurrency_key: str = "",
    max_concurrency: int = 0,
) -> Routing:
    """Check a job's routing fields; raise :class:`InvalidJob` naming the problem."""
    if not 0 <= priority <= MAX_PRIORITY:
        raise InvalidJob(f"priority must be 0 to {MAX_PRIORITY} (higher runs first), got {priority}")
    if len(concurrency_key) > MAX_CONCURRENCY_KEY_CHARS:
        raise InvalidJob(
            f"concurrency_key is {len(concurrency_key)} characters, over the limit of {MAX_CONCURRENCY_KEY_CHARS}"
        )
    if not concurrency_key.isprintable():
        raise InvalidJob("concurrency_key contains a control character")
    if not 0 <= max_concurrency <= MAX_CONCURRENCY_LIMIT:
        raise InvalidJob(f"max_concurrency must be 0 to {MAX_CONCURRENCY_LIMIT}, got {max_concurrency}")
    if max_concurrency and not concurrency_key:
        raise InvalidJob(
            "max_concurrency needs a concurrency_key: it limits how many jobs sharing that key run at once"
        )
    return Routing(
        queue=check_queue(queue),
        priority=priority,
        constraints=check_tags(constraints),
        concurrency_key=concurrency_key,
        max_concurrency=max_concurrency,
    )


@dataclass(frozen=True)
class JobSpec(Routing):
    """A validated submission, with the server's defaults filled in."""

    command: str
    name: str
    description: str
    max_retries: int
    timeout_seconds: float
    run_at_ms: int  # 0: run now
    idempotency_key: str  # '' : none


def validate_job(
    *,
    command: str,
    name: str = "",
    description: str = "",
    max_retries: int | None = None,
    timeout_seconds: float | None = None,
    run_at_ms: int = 0,
    idempotency_key: str = "",
    queue: str = "",
    priority: int = 0,
    constraints: Iterable[str] = (),
    concurrency_key: str = "",
    max_concurrency: int = 0,
    default_max_retries: int,
    default_timeout: float,
    max_command_bytes: int,
) -> JobSpec:
    """Check a submission and fill defaults; raise :class:`InvalidJob` naming the problem."""
    if not command or not command.strip():
        raise InvalidJob("command is empty")
    size = len(command.encode("utf-8", "surrogatepass"))
    if size > max_command_bytes:
        raise InvalidJob(f"command is {size} bytes, over the limit of {max_command_bytes} bytes")
    for what, value in (("command", command), ("name", name), ("description", description)):
        if "\x00" in value:
            raise InvalidJob(f"{what} contains a NUL byte")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidJob(f"name is {len(name)} characters, over the limit of {MAX_NAME_CHARS}")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidJob(f"description is over the limit of {MAX_DESCRIPTION_CHARS} characters")
    check_idempotency_key(idempotency_key)
    retries = default_max_retries if max_retries is None else max_retries
    if retries < 0:
        raise InvalidJob(f"max_retries must not be negative, got {retries}")
    if retries > MAX_RETRIES_LIMIT:
        raise InvalidJob(f"max_retries must be at most {MAX_RETRIES_LIMIT}, got {retries}")
    timeout = default_timeout if timeout_seconds is None else timeout_seconds
    if timeout != timeout or timeout < 0:  # NaN or negative
        raise InvalidJob(f"timeout_seconds must not be negative, got {timeout}")
    if timeout > MAX_TIMEOUT_SECONDS:
        raise InvalidJob(f"timeout_seconds must be at most {MAX_TIMEOUT_SECONDS:.0f} (7 days), got {timeout}")
    if run_at_ms < 0:
        raise InvalidJob(f"run_at_ms must not be negative, got {run_at_ms}")
    if run_at_ms > now_ms() + MAX_RUN_AT_AHEAD_MS:
        raise InvalidJob(f"run_at_ms {run_at_ms} is more than {MAX_RUN_AT_AHEAD_MS // 86_400_000} days ahead")
    routing = validate_routing(
        queue=queue,
        priority=priority,
        constraints=constraints,
        concurrency_key=concurrency_key,
        max_concurrency=max_concurrency,
    )
    return JobSpec(
        command=command,
        name=name,
        description=description,
        max_retries=retries,
        timeout_seconds=float(timeout),
        run_at_ms=run_at_ms,
        idempotency_key=idempotency_key,
        **routing.routing(),
    )


@dataclass(frozen=True)
class ScheduleSpec(Routing):
    """A validated cron schedule, as it is stored; its routing is that of the jobs it fires."""

    name: str
    cron: str
    timezone: str
    command: str
    description: str
    max_retries: int
    timeout_seconds: float
    catchup: str
    overlap: str


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retrying after failed attempt ``attempt`` (1-based).

    Exponential with "full jitter" over the upper half: a value in
    [d/2, d] where d = min(cap, base * 2**(attempt-1)), so retries spread out
    but never come back sooner than half the nominal delay.
    """
    nominal = min(cap, base * (2.0 ** max(0, attempt - 1)))
    r = rng.random() if rng is not None else random.random()
    return nominal / 2 + r * nominal / 2


def now_ms() -> int:
    """This host's wall-clock unix milliseconds (jobcluster.clock: decides nothing between processes)."""
    return clock.wall_ms()


def retries_exhausted(attempts: int, interruptions: int, max_retries: int) -> bool:
    """True when a job that just failed has no retries left."""
    return attempts - interruptions > max_retries


def utcnow() -> "dt.datetime":
    """This host's now, as an aware UTC datetime (jobcluster.clock)."""
    return clock.wall_now()


@dataclass
class Serving:
    """What one worker serves: its queues (WORKER_QUEUES) and tags (WORKER_TAGS), the per-key limits its
    claims apply (CONCURRENCY_LIMITS, key -> N), and the Redis lanes that makes, as last read (kept up
    to date by :mod:`jobcluster.queue.lanes`). A claim with no Serving (tools, tests) takes any job."""

    queues: tuple[str, ...] = (keys.DEFAULT_QUEUE,)
    tags: frozenset[str] = frozenset()
    limits: Mapping[str, int] = field(default_factory=dict)
    lanes: list[str] = field(default_factory=list)
    known: int = -1  # size of the ``lanes`` registry when read; -1: never read

    @property
    def bells(self) -> list[str]:
        """The wake-up lists of its queues."""
        return [keys.bell(q) for q in self.queues]

    @property
    def only_default(self) -> bool:
        """Whether ``pending_jobs`` is the one lane served (the worker can BLMOVE on it)."""
        return self.lanes == [keys.PENDING]
