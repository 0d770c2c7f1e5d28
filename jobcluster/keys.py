"""Every Redis key jobcluster uses, in one place.

Redis holds job ids only; PostgreSQL is the record and Redis can be rebuilt
from it.

==============================  =====  ==================================================
key                             type   what it holds
==============================  =====  ==================================================
``pending_jobs``                list   ids ready to run. LPUSH in, workers take from the
                                       right (FIFO) with BLMOVE.
``pending_jobs:<queue>:<prio>``  list   a lane: ids ready to run of one queue, priority
``pending_jobs:<q>:<p>:<c,c>``         (0-9) and constraint set (sorted tags), as
                                       :func:`lane` names it; the default queue at priority
                                       0 without constraints is ``pending_jobs`` itself.
``lanes``                       set    every lane other than ``pending_jobs`` ever pushed
                                       to; workers read it to find the lanes they serve.
``lane_bell:<queue>``           list   wake-up tokens: each push to a lane of the queue
                                       adds one (at most 64 kept); idle workers that serve
                                       several lanes BLPOP it. Tokens carry no id.
``processing_jobs:<worker-id>`` list   ids a worker has taken and not yet acked.
``delayed_jobs``                zset   ids waiting for a time (``run_at`` in the future,
                                       a retry backing off, a full concurrency key);
                                       score = due unix ms.
``delayed_lanes``               hash   id -> lane, for delayed ids bound for a lane other
                                       than ``pending_jobs`` (absent: ``pending_jobs``).
``dlq_tasks``                   list   ids of dead-lettered (FAILED) jobs, newest first.
``dlq_moves``                   string counts the scripts that took ids out of ``dlq_tasks`` or
                                       moved them within it (retry, purge, the sweep's inserts):
                                       reconciliation's read of the whole list is good only while
                                       it stands still.
``dlq_retrying``                string set (30 s, renewed) while a retry of dead letters moves
                                       the jobs it made QUEUED to their lanes: reconciliation
                                       pushes no waiting job meanwhile (it would push them twice).
``workers``                     zset   worker id -> last heartbeat (unix ms).
``worker:<worker-id>``          hash   that worker's host, pid, slots, running count,
                                       started; expires when heartbeats stop.
``live_output:<job-id>``        hash   a running job's output so far: ``total`` bytes
                                       written, ``tail`` (the last bytes); for WatchJob.
                                       Expires a minute after the job's last write.
``servers``                     zset   server address -> last heartbeat (unix ms).
``server:<host:port>``          hash   that server's pid, host, start time; expires
                                       when its heartbeats stop.
``reconciled``                  string set by the leader's reconciliation (unix ms); when
                                       it is gone, Redis lost its data: every waiting job and
                                       dead letter in PostgreSQL is checked at once.
``key_waiting:<key>``           list   a hint: ids of jobs refused because their concurrency
                                       key was full (they wait in ``delayed_jobs``); a job of
                                       the key that ends makes the oldest still delayed one
                                       due at once. At most 10,000; gone 10 min after the last.
==============================  =====  ==================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

PENDING = "pending_jobs"
PROCESSING_PREFIX = "processing_jobs:"
DELAYED = "delayed_jobs"
DLQ = "dlq_tasks"
DLQ_MOVES = "dlq_moves"
DLQ_RETRYING = "dlq_retrying"
WORKERS = "workers"
WORKER_INFO_PREFIX = "worker:"
#: Workers the leader declared dead (id -> when, ms), each with ``gone_worker:<id>``: its last info, kept an hour.
GONE_WORKERS = "gone_workers"
GONE_INFO_PREFIX = "gone_worker:"
SERVERS = "servers"
LIVE_OUTPUT_PREFIX = "live_output:"
SERVER_INFO_PREFIX = "server:"
RECONCILED = "reconciled"
LANE_PREFIX = PENDING + ":"
LANES = "lanes"
BELL_PREFIX = "lane_bell:"
DELAYED_LANES = "delayed_lanes"
KEY_WAITING_PREFIX = "key_waiting:"
#: The queue of a job that names none (its lane at priority 0 without constraints is ``pending_jobs``).
DEFAULT_QUEUE = "default"


def lane(queue: str, priority: int, constraints: Iterable[str] = ()) -> str:
    """The Redis list a ready job waits in: one per (queue, priority, constraint set).

    ``pending_jobs`` for the default queue at priority 0 without constraints (the seed's list, which
    seed clients and ``redis-cli LRANGE pending_jobs 0 -1`` keep using); otherwise
    ``pending_jobs:<queue>:<priority>``, plus ``:<tag,tag>`` (sorted) when there are constraints.
    Queue names hold no ``:`` and tags no ``:`` or ``,`` (jobcluster.model), so :func:`parse_lane` can
    read a lane's parts back from its name.
    """
    tags = sorted(set(constraints))
    queue = queue or DEFAULT_QUEUE
    if queue == DEFAULT_QUEUE and priority == 0 and not tags:
        return PENDING
    name = f"{LANE_PREFIX}{queue}:{priority}"
    return f"{name}:{','.join(tags)}" if tags else name


class Routed(Protocol):
    """Anything with a job's routing (jobcluster.model.Routing and the rows built on it)."""

    @property
    def queue(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def constraints(self) -> tuple[str, ...]: ...


def lane_of(job: Routed) -> str:
    """The lane of a job, a schedule's jobs, or a spec (:func:`lane` of its routing)."""
    return lane(job.queue, job.priority, job.constraints)


def parse_lane(key: str) -> tuple[str, int, tuple[str, ...]]:
    """(queue, priority, constraints) of a lane named by :func:`lane`; ValueError for another key."""
    if key == PENDING:
        return DEFAULT_QUEUE, 0, ()
    if not key.startswith(LANE_PREFIX):
        raise ValueError(f"not a lane: {key!r}")
    parts = key[len(LANE_PREFIX) :].split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].isdigit():
        raise ValueError(f"not a lane: {key!r}")
    tags = tuple(parts[2].split(",")) if len(parts) == 3 and parts[2] else ()
    return parts[0], int(parts[1]), tags


def key_waiting(concurrency_key: str) -> str:
    """The list of jobs waiting for a slot of one concurrency key."""
    return KEY_WAITING_PREFIX + concurrency_key


def bell(queue: str) -> str:
    """The wake-up list of one queue (pushes to any of its lanes ring it)."""
    return BELL_PREFIX + (queue or DEFAULT_QUEUE)


def lane_bell(lane_key: str) -> str:
    """The wake-up list that pushes to this lane ring."""
    return bell(parse_lane(lane_key)[0])


def processing(worker_id: str) -> str:
    """The processing list of one worker."""
    return PROCESSING_PREFIX + worker_id


def gone_info(worker_id: str) -> str:
    """What is kept of a worker the leader declared dead."""
    return GONE_INFO_PREFIX + worker_id


def worker_info(worker_id: str) -> str:
    """The info hash of one worker."""
    return WORKER_INFO_PREFIX + worker_id


def server_info(address: str) -> str:
    """The info hash of one server."""
    return SERVER_INFO_PREFIX + address


def live_output(job_id: str) -> str:
    """The live output hash of one running job."""
    return LIVE_OUTPUT_PREFIX + job_id
