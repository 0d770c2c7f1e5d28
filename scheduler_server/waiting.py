"""Why a QUEUED job does not start: its ``waiting_reason``, from the live workers (Redis) and PostgreSQL.

A job waits for good when no live worker consumes its queue, when none has every tag its
constraints name, or while its concurrency key has as many jobs running as its limit allows.
Each worker's heartbeat hash (``worker:<id>``) names its queues and tags (``queues``, ``tags``,
comma-joined); a worker from before routing has neither and serves the default queue without tags.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from jobcluster.aio import wait_within
from jobcluster.errors import REDIS_ERRORS
from jobcluster.model import DEFAULT_QUEUE, Status
from jobcluster.queue import Queue
from jobcluster.rows import JobRow
from jobcluster.store import Store

log = logging.getLogger("server")

#: How long a status reply waits for Redis to name the live workers before it answers without a reason.
REDIS_WAIT = 1.0


def _split(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def worker_queues(info: Mapping[str, str]) -> tuple[str, ...]:
    """The queues a worker consumes, in its order (its info hash; none named: the default queue)."""
    return _split(info.get("queues", "")) or (DEFAULT_QUEUE,)


def worker_tags(info: Mapping[str, str]) -> tuple[str, ...]:
    """The tags a worker has (its info hash)."""
    return _split(info.get("tags", ""))


def is_alive(beat_ms: int, now_ms: int, dead_after_ms: int) -> bool:
    """A heartbeat at ``beat_ms`` still counts at ``now_ms`` (both by Redis' clock)."""
    return bool(beat_ms) and now_ms - beat_ms <= dead_after_ms


@dataclass(frozen=True)
class LiveWorker:
    """What a live worker takes: its queues and its tags."""

    id: str
    queues: tuple[str, ...]
    tags: frozenset[str]


def live_workers(infos: Mapping[str, Mapping[str, str]], now_ms: int, dead_after_ms: int) -> list[LiveWorker]:
    """The workers whose heartbeat (``heartbeat_ms`` of their info hash) is recent at ``now_ms``."""
    out = []
    for worker_id, info in infos.items():
        try:
            beat = int(info.get("heartbeat_ms", 0) or 0)
        except ValueError:
            beat = 0
        if is_alive(beat, now_ms, dead_after_ms):
            out.append(LiveWorker(worker_id, worker_queues(info), frozenset(worker_tags(info))))
    return out


def reason(job: JobRow, workers: Sequence[LiveWorker], running: int, limit: int) -> str:
    """Why this QUEUED job cannot start now; '' when nothing stands in its way.

    ``running``: jobs of its concurrency key running now; ``limit``: how many may (0: no limit)."""
    if not workers:
        return "no live worker"
    serving = [w for w in workers if job.queue in w.queues]
    if not serving:
        return f"no live worker serves queue {job.queue}"
    needed = set(job.constraints)
    if not any(needed <= w.tags for w in serving):
        tags = ", ".join(job.constraints)
        if not any(needed <= w.tags for w in workers):
            return f"no live worker has tags {tags}"
        return f"no live worker serving queue {job.queue} has tags {tags}"
    if job.concurrency_key and limit and running >= limit:
        return f"waiting for concurrency key {job.concurrency_key} ({running} of {limit} running)"
    return ""


async def waiting_reasons(
    jobs: Sequence[JobRow], queue: Queue, store: Store, *, dead_after_ms: int, limit_of: Callable[[JobRow], int]
) -> dict[str, str]:
    """Job id -> waiting reason, for the QUEUED ones among ``jobs`` that have one.

    One read of the workers from Redis and one count per page from PostgreSQL. Redis not answering
    within :data:`REDIS_WAIT` gives no reasons (the job's status is still answered)."""
    queued = [j for j in jobs if j.status is Status.QUEUED]
    if not queued:
        return {}
    seen: list[list[LiveWorker]] = []

    async def read_workers() -> None:
        now_ms, _ = await queue.liveness.workers_now()
        seen.append(live_workers(await queue.liveness.worker_infos(), now_ms, dead_after_ms))

    try:
        if not await wait_within(read_workers(), REDIS_WAIT):
            return {}
    except REDIS_ERRORS as exc:
        log.debug("waiting reasons left out: Redis unavailable (%s)", exc)
        return {}
    keys = sorted({j.concurrency_key for j in queued if j.concurrency_key})
    running = await store.job_queries.running_by_key(keys) if keys else {}
    out = {}
    for job in queued:
        text = reason(job, seen[0], running.get(job.concurrency_key, 0), limit_of(job))
        if text:
            out[job.id] = text
    return out
