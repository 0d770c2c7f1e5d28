"""The queue protocol proper: how a job id moves between ``pending_jobs``, the processing lists,
``delayed_jobs`` and ``dlq_tasks``.

Each step that touches more than one key is one Lua script (atomic in Redis);
the scripts name their keys in KEYS[]. Life of an id::

    submit ──LPUSH──▶ pending_jobs ──BLMOVE (worker)──▶ processing_jobs:<worker>
    submit (run_at later) ──ZADD──▶ delayed_jobs ──promote_due (any process)──▶ pending_jobs
    processing ── ack ──▶ (gone)            job SUCCEEDED or refused
               ── retry_later ──▶ delayed_jobs   backoff
               ── requeue_front ──▶ pending_jobs (right end: taken next)
               ── dead_letter ──▶ dlq_tasks

PostgreSQL is written before Redis at every step, so an id found in Redis
whose job is not claimable is simply dropped (or re-delayed) by the worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import cast

import redis.asyncio as aioredis

from jobcluster import keys
from jobcluster.queue.base import OP_TIMEOUT, Part, bounded, processing_lists

# KEYS[1] processing list, KEYS[2] delayed set; ARGV[1] id, ARGV[2] wait ms.
# The score is Redis' clock plus the wait that PostgreSQL's clock gave: promote_due reads the same
# Redis clock, so the id comes out when the job is due, whatever the two hosts' clocks say.
_RETRY_LATER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('LREM', KEYS[1], -1, ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# KEYS[1] processing list, KEYS[2] pending list; ARGV[1] id
_REQUEUE_FRONT = """
redis.call('LREM', KEYS[1], -1, ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""

# KEYS[1] processing list, KEYS[2] dlq; ARGV[1] id
_DEAD_LETTER = """
redis.call('LREM', KEYS[1], -1, ARGV[1])
if not redis.call('LPOS', KEYS[2], ARGV[1]) then
  redis.call('LPUSH', KEYS[2], ARGV[1])
end
return 1
"""

# KEYS[1] delayed set, KEYS[2] pending list; ARGV[1] batch size.
# Moves every id due by Redis' own clock; atomic, so any number of processes
# may run it at once without moving an id twice.
_PROMOTE_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #ids == 0 then return 0 end
redis.call('ZREM', KEYS[1], unpack(ids))
redis.call('LPUSH', KEYS[2], unpack(ids))
return #ids
"""

# KEYS[1] pending list, KEYS[2] delayed set; ARGV[1] id.
# Push an id that Redis holds in neither place (a healed submit).
_ENSURE_QUEUED = """
if redis.call('LPOS', KEYS[1], ARGV[1]) or redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
redis.call('LPUSH', KEYS[1], ARGV[1])
return 1
"""


class Jobs(Part):
    """Producers put ids in; workers take, ack, back off, requeue or dead-letter them."""

    def __init__(self, redis: aioredis.Redis, op_timeout: float = OP_TIMEOUT) -> None:
        super().__init__(redis, op_timeout)
        self._retry_later = self.redis.register_script(_RETRY_LATER)
        self._requeue_front = self.redis.register_script(_REQUEUE_FRONT)
        self._dead_letter = self.redis.register_script(_DEAD_LETTER)
        self._promote_due = self.redis.register_script(_PROMOTE_DUE)
        self._ensure_queued = self.redis.register_script(_ENSURE_QUEUED)

    # --- producers ----------------------------------------------------------

    @bounded
    async def enqueue(self, job_id: str, due_ms: int = 0) -> None:
        """Make a new job available now, or at ``due_ms`` (unix ms)."""
        if due_ms and due_ms > time.time() * 1000:
            await self.redis.zadd(keys.DELAYED, {job_id: due_ms})
        else:
            await self.redis.lpush(keys.PENDING, job_id)

    @bounded
    async def enqueue_many(self, jobs: Iterable[tuple[str, int]]) -> None:
        """Several new jobs ``(id, due ms or 0)`` in one round trip, in order."""
        now = time.time() * 1000
        batch = list(jobs)
        ready = [job_id for job_id, due in batch if not due or due <= now]
        later = {job_id: due for job_id, due in batch if due and due > now}
        async with self.redis.pipeline(transaction=False) as pipe:
            if ready:
                pipe.lpush(keys.PENDING, *ready)
            if later:
                pipe.zadd(keys.DELAYED, later)
            await pipe.execute()

    @bounded
    async def ensure_queued(self, job_id: str) -> bool:
        """Push a ready job unless Redis already holds it waiting; True when pushed."""
        return bool(await self._ensure_queued(keys=[keys.PENDING, keys.DELAYED], args=[job_id]))

    @bounded
    async def promote_due(self, batch: int = 500) -> int:
        """Move delayed ids whose time has come to ``pending_jobs``; returns how many."""
        total = 0
        while True:
            moved = int(await self._promote_due(keys=[keys.DELAYED, keys.PENDING], args=[batch]))
            total += moved
            if moved < batch:
                return total

    @bounded
    async def withdraw(self, job_id: str) -> None:
        """A cancelled job's id leaves ``delayed_jobs`` (O(log n)). In ``pending_jobs`` it stays: taking
        it out would scan the whole list, and the worker that takes it finds the job CANCELLED in
        PostgreSQL and drops it (worker/decide.py, ``refuse``)."""
        await self.redis.zrem(keys.DELAYED, job_id)

    # --- worker -------------------------------------------------------------

    @bounded
    async def dequeue(self, worker_id: str, timeout: float | None = None) -> str | None:
        """Take the oldest ready id into this worker's processing list (blocks up to ``timeout``)."""
        wait = self.block_seconds if timeout is None else timeout
        job_id = await self.redis.blmove(keys.PENDING, keys.processing(worker_id), wait,  # type: ignore[arg-type]
                                         "RIGHT", "LEFT")  # redis-py types the timeout as int; it takes a float
        return cast(str | None, job_id)

    @bounded
    async def ack(self, worker_id: str, job_id: str) -> None:
        """The worker is done with this id."""
        await self.redis.lrem(keys.processing(worker_id), -1, job_id)

    @bounded
    async def retry_later(self, worker_id: str, job_id: str, wait_ms: int) -> None:
        """Back off: the id waits in ``delayed_jobs`` for ``wait_ms`` (counted on Redis' clock)."""
        await self._retry_later(keys=[keys.processing(worker_id), keys.DELAYED], args=[job_id, max(0, wait_ms)])

    @bounded
    async def delay(self, job_id: str, due_ms: int) -> None:
        """Put an id (not in any processing list) in ``delayed_jobs``."""
        await self.redis.zadd(keys.DELAYED, {job_id: due_ms})

    @bounded
    async def requeue_front(self, worker_id: str, job_id: str) -> None:
        """Give the id back to be taken next (an attempt interrupted by shutdown)."""
        await self._requeue_front(keys=[keys.processing(worker_id), keys.PENDING], args=[job_id])

    @bounded
    async def dead_letter(self, worker_id: str, job_id: str) -> None:
        """LPUSH the id to ``dlq_tasks`` (once) and drop it from the processing list."""
        await self._dead_letter(keys=[keys.processing(worker_id), keys.DLQ], args=[job_id])

    # --- inspection -----------------------------------------------------------

    @bounded
    async def depths(self) -> dict[str, int]:
        """How many ids each place holds: pending, processing (all workers), delayed, dlq."""
        processing = 0
        for key in await processing_lists(self.redis, count=200):
            processing += await self.redis.llen(key)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(keys.PENDING)
            pipe.zcard(keys.DELAYED)
            pipe.llen(keys.DLQ)
            pending, delayed, dlq = await pipe.execute()
        return {"pending": pending, "processing": processing, "delayed": delayed, "dlq": dlq}
