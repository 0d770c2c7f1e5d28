"""The Redis queue protocol: every move of a job id between Redis keys.

Key names live in :mod:`jobcluster.keys`. Each step that touches more than one
key is one Lua script (atomic in Redis); the scripts name their keys in KEYS[].

Life of an id::

    submit ──LPUSH──▶ pending_jobs ──BLMOVE (worker)──▶ processing_jobs:<worker>
    submit (run_at later) ──ZADD──▶ delayed_jobs ──promote_due (any process)──▶ pending_jobs
    processing ── ack ──▶ (gone)            job SUCCEEDED or refused
               ── retry_later ──▶ delayed_jobs   backoff
               ── requeue_front ──▶ pending_jobs (right end: taken next)
               ── dead_letter ──▶ dlq_tasks
    processing of a gone worker ── recover_processing ──▶ pending_jobs / dlq_tasks

PostgreSQL is written before Redis at every step, so an id found in Redis
whose job is not claimable is simply dropped (or re-delayed) by the worker.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobcluster import keys

#: Errors that mean "Redis is not there right now".
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)

#: Bound on one queue operation (seconds). We do not use redis-py's
#: ``socket_timeout`` for this: on Python 3.11 it goes through
#: ``asyncio.wait_for``, which can swallow the cancellation of the calling task
#: (CPython gh-86296), and then a worker cannot be stopped. ``asyncio.timeout``
#: has no such flaw.
OP_TIMEOUT = 10.0

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _bounded(fn: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
    """Give up on a queue operation after OP_TIMEOUT (plus any blocking time) as a Redis timeout."""
    @functools.wraps(fn)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        queue = args[0]
        limit = queue.op_timeout + (kwargs.get("timeout") or queue.block_seconds)  # type: ignore[attr-defined]
        try:
            async with asyncio.timeout(limit):
                return await fn(*args, **kwargs)
        except TimeoutError as exc:
            raise RedisTimeoutError(f"Redis did not answer {fn.__name__} within {limit:g}s") from exc
    return wrapper

# KEYS[1] processing list, KEYS[2] delayed set; ARGV[1] id, ARGV[2] due ms
_RETRY_LATER = """
redis.call('LREM', KEYS[1], -1, ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

# KEYS[1] processing list, KEYS[2] pending list; ARGV[1] id
_REQUEUE_FRONT = """
redis.call('LREM', KEYS[1], -1, ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""

# KEYS[1] processing list (may be ''-named dummy), KEYS[2] dlq; ARGV[1] id
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

# KEYS[1] pending, KEYS[2] delayed, KEYS[3..] every processing list; ARGV pairs (id, due ms; 0 = now).
# Puts back each id that Redis holds nowhere (reconciliation). Returns how many.
_RESTORE = """
local pushed = 0
for i = 1, #ARGV, 2 do
  local id, due = ARGV[i], tonumber(ARGV[i + 1])
  local held = redis.call('LPOS', KEYS[1], id) or redis.call('ZSCORE', KEYS[2], id)
  local k = 3
  while not held and k <= #KEYS do
    held = redis.call('LPOS', KEYS[k], id)
    k = k + 1
  end
  if not held then
    if due > 0 then redis.call('ZADD', KEYS[2], due, id) else redis.call('LPUSH', KEYS[1], id) end
    pushed = pushed + 1
  end
end
return pushed
"""

# KEYS[1] dlq, KEYS[2] pending; ARGV ids. Each id found in the DLQ leaves it for the queue.
_RETRY_DEAD = """
local moved = 0
for i = 1, #ARGV do
  if redis.call('LREM', KEYS[1], 0, ARGV[i]) > 0 then
    redis.call('LPUSH', KEYS[2], ARGV[i])
    moved = moved + 1
  end
end
return moved
"""

# KEYS[1] workers zset, KEYS[2] worker info hash; ARGV[1] worker id, ARGV[2] ms.
# Forget a worker only if its last heartbeat is older than ARGV[2].
_FORGET_WORKER = """
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if beat and tonumber(beat) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS[1] processing list, KEYS[2] pending list, KEYS[3] dlq; ARGV ids to dead-letter.
# Everything else in the processing list goes back to the front of the queue, in order.
_RECOVER_PROCESSING = """
local dead = {}
for i = 1, #ARGV do dead[ARGV[i]] = true end
local moved = 0
while true do
  local id = redis.call('RPOP', KEYS[1])
  if not id then break end
  if dead[id] then
    if not redis.call('LPOS', KEYS[3], id) then redis.call('LPUSH', KEYS[3], id) end
  else
    redis.call('RPUSH', KEYS[2], id)
    moved = moved + 1
  end
end
return moved
"""


def connect(addr: str, **kwargs: Any) -> aioredis.Redis:
    """A client for REDIS_ADDR (``host:port`` or a ``redis://`` URL), with bounded timeouts."""
    url = addr if "://" in addr else f"redis://{addr}"
    # No socket_timeout: see OP_TIMEOUT. Queue bounds every operation itself.
    options: dict[str, Any] = {"socket_connect_timeout": 3.0, "socket_timeout": None, "socket_keepalive": True,
                               "decode_responses": True}
    options.update(kwargs)
    return aioredis.Redis.from_url(url, **options)


class Queue:
    """The queue protocol over one Redis client."""

    #: How long a worker's BLMOVE blocks before it looks around (seconds).
    block_seconds = 1.0

    def __init__(self, redis: aioredis.Redis, op_timeout: float = OP_TIMEOUT) -> None:
        self.redis = redis
        self.op_timeout = op_timeout
        self._retry_later = redis.register_script(_RETRY_LATER)
        self._requeue_front = redis.register_script(_REQUEUE_FRONT)
        self._dead_letter = redis.register_script(_DEAD_LETTER)
        self._promote_due = redis.register_script(_PROMOTE_DUE)
        self._ensure_queued = redis.register_script(_ENSURE_QUEUED)
        self._recover = redis.register_script(_RECOVER_PROCESSING)
        self._restore = redis.register_script(_RESTORE)
        self._forget = redis.register_script(_FORGET_WORKER)
        self._retry_dead = redis.register_script(_RETRY_DEAD)

    # --- producers ----------------------------------------------------------

    @_bounded
    async def enqueue(self, job_id: str, due_ms: int = 0) -> None:
        """Make a new job available now, or at ``due_ms`` (unix ms)."""
        if due_ms and due_ms > time.time() * 1000:
            await self.redis.zadd(keys.DELAYED, {job_id: due_ms})
        else:
            await self.redis.lpush(keys.PENDING, job_id)

    @_bounded
    async def enqueue_many(self, jobs: Iterable[tuple[str, int]]) -> None:
        """Several new jobs ``(id, due ms or 0)`` in one round trip, in order."""
        now = time.time() * 1000
        jobs = list(jobs)
        ready = [job_id for job_id, due in jobs if not due or due <= now]
        later = {job_id: due for job_id, due in jobs if due and due > now}
        async with self.redis.pipeline(transaction=False) as pipe:
            if ready:
                pipe.lpush(keys.PENDING, *ready)
            if later:
                pipe.zadd(keys.DELAYED, later)
            await pipe.execute()

    @_bounded
    async def ensure_queued(self, job_id: str) -> bool:
        """Push a ready job unless Redis already holds it waiting; True when pushed."""
        return bool(await self._ensure_queued(keys=[keys.PENDING, keys.DELAYED], args=[job_id]))

    @_bounded
    async def promote_due(self, batch: int = 500) -> int:
        """Move delayed ids whose time has come to ``pending_jobs``; returns how many."""
        total = 0
        while True:
            moved = int(await self._promote_due(keys=[keys.DELAYED, keys.PENDING], args=[batch]))
            total += moved
            if moved < batch:
                return total

    # --- worker -------------------------------------------------------------

    @_bounded
    async def dequeue(self, worker_id: str, timeout: float | None = None) -> str | None:
        """Take the oldest ready id into this worker's processing list (blocks up to ``timeout``)."""
        wait = self.block_seconds if timeout is None else timeout
        return await self.redis.blmove(keys.PENDING, keys.processing(worker_id), wait, "RIGHT", "LEFT")

    @_bounded
    async def ack(self, worker_id: str, job_id: str) -> None:
        """The worker is done with this id."""
        await self.redis.lrem(keys.processing(worker_id), -1, job_id)

    @_bounded
    async def retry_later(self, worker_id: str, job_id: str, due_ms: int) -> None:
        """Back off: the id waits in ``delayed_jobs`` until ``due_ms``."""
        await self._retry_later(keys=[keys.processing(worker_id), keys.DELAYED], args=[job_id, due_ms])

    @_bounded
    async def delay(self, job_id: str, due_ms: int) -> None:
        """Put an id (not in any processing list) in ``delayed_jobs``."""
        await self.redis.zadd(keys.DELAYED, {job_id: due_ms})

    @_bounded
    async def requeue_front(self, worker_id: str, job_id: str) -> None:
        """Give the id back to be taken next (an attempt interrupted by shutdown)."""
        await self._requeue_front(keys=[keys.processing(worker_id), keys.PENDING], args=[job_id])

    @_bounded
    async def dead_letter(self, worker_id: str, job_id: str) -> None:
        """LPUSH the id to ``dlq_tasks`` (once) and drop it from the processing list."""
        await self._dead_letter(keys=[keys.processing(worker_id), keys.DLQ], args=[job_id])

    @_bounded
    async def recover_processing(self, worker_id: str, dead_ids: Iterable[str] = ()) -> int:
        """Empty a worker's processing list: ``dead_ids`` to the DLQ, the rest to the queue's front."""
        return int(await self._recover(keys=[keys.processing(worker_id), keys.PENDING, keys.DLQ],
                                       args=list(dead_ids)))

    @_bounded
    async def processing_ids(self, worker_id: str) -> list[str]:
        return list(await self.redis.lrange(keys.processing(worker_id), 0, -1))

    # --- heartbeats -----------------------------------------------------------

    @_bounded
    async def heartbeat(self, worker_id: str, info: Mapping[str, str | int | float], ttl: float) -> None:
        """Record that a worker is alive now; its info hash expires after ``ttl`` without one."""
        await self._beat(keys.WORKERS, keys.worker_info(worker_id), worker_id, info, ttl)

    @_bounded
    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped cleanly."""
        await self._leave(keys.WORKERS, keys.worker_info(worker_id), worker_id)

    @_bounded
    async def forget_worker(self, worker_id: str, older_than_ms: int) -> bool:
        """Drop a dead worker's heartbeat unless it beat again since ``older_than_ms``."""
        return bool(await self._forget(keys=[keys.WORKERS, keys.worker_info(worker_id)],
                                       args=[worker_id, older_than_ms]))

    @_bounded
    async def worker_infos(self) -> dict[str, dict[str, str]]:
        """Worker id -> its info hash (empty when expired)."""
        return {w: info for w, (_, info) in (await self._members(keys.WORKERS, keys.worker_info)).items()}

    @_bounded
    async def server_heartbeat(self, address: str, info: Mapping[str, str | int | float], ttl: float) -> None:
        """Record that a server is alive now."""
        await self._beat(keys.SERVERS, keys.server_info(address), address, info, ttl)

    @_bounded
    async def remove_server(self, address: str) -> None:
        await self._leave(keys.SERVERS, keys.server_info(address), address)

    async def _beat(self, zset: str, info_key: str, member: str, info: Mapping[str, str | int | float],
                    ttl: float) -> None:
        """A heartbeat: ``member``'s time in ``zset`` and its info hash, which expires after ``ttl``."""
        now = int(time.time() * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(zset, {member: now})
            pipe.hset(info_key, mapping={**info, "heartbeat_ms": now})
            pipe.pexpire(info_key, int(ttl * 1000))
            await pipe.execute()

    async def _members(self, zset: str, info_key: Callable[[str], str]) -> dict[str, tuple[int, dict[str, str]]]:
        """Member -> (last heartbeat unix ms, info hash) for every member of a heartbeat zset."""
        beats = {m: int(t) for m, t in await self.redis.zrange(zset, 0, -1, withscores=True)}
        async with self.redis.pipeline(transaction=False) as pipe:
            for member in beats:
                pipe.hgetall(info_key(member))
            infos = await pipe.execute()
        return {m: (beats[m], info) for m, info in zip(beats, infos)}

    async def _leave(self, zset: str, info_key: str, member: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(zset, member)
            pipe.delete(info_key)
            await pipe.execute()

    @_bounded
    async def servers(self) -> dict[str, tuple[int, dict[str, str]]]:
        """Server address -> (last heartbeat unix ms, info hash)."""
        return await self._members(keys.SERVERS, keys.server_info)

    @_bounded
    async def workers(self) -> dict[str, int]:
        """Worker id -> last heartbeat (unix ms)."""
        return {w: int(s) for w, s in await self.redis.zrange(keys.WORKERS, 0, -1, withscores=True)}

    # --- job control ----------------------------------------------------------------

    @_bounded
    async def withdraw(self, job_id: str) -> None:
        """A cancelled job's id leaves pending_jobs and delayed_jobs (a worker would drop it anyway)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(keys.PENDING, 0, job_id)
            pipe.zrem(keys.DELAYED, job_id)
            await pipe.execute()

    @_bounded
    async def dead_letters(self) -> list[str]:
        """Ids in ``dlq_tasks``, newest first."""
        return list(await self.redis.lrange(keys.DLQ, 0, -1))

    @_bounded
    async def retry_dead(self, job_ids: list[str]) -> int:
        """Move these ids from ``dlq_tasks`` to ``pending_jobs`` (after PostgreSQL made them QUEUED)."""
        return int(await self._retry_dead(keys=[keys.DLQ, keys.PENDING], args=job_ids)) if job_ids else 0

    @_bounded
    async def purge_dead(self, job_ids: list[str] | None = None) -> int:
        """Drop ids from ``dlq_tasks`` (all when None); the jobs stay FAILED in PostgreSQL."""
        if job_ids is None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.llen(keys.DLQ)
                pipe.delete(keys.DLQ)
                n, _ = await pipe.execute()
            return int(n)
        async with self.redis.pipeline(transaction=True) as pipe:
            for job_id in job_ids:
                pipe.lrem(keys.DLQ, 0, job_id)
            return sum(int(n) for n in await pipe.execute())

    @_bounded
    async def publish_output(self, outputs: Mapping[str, tuple[int, str]], ttl: float = 60.0) -> None:
        """Running jobs' output so far: job id -> (total bytes written, tail as text)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, (total, tail) in outputs.items():
                pipe.hset(keys.live_output(job_id), mapping={"total": total, "tail": tail})
                pipe.pexpire(keys.live_output(job_id), int(ttl * 1000))
            await pipe.execute()

    @_bounded
    async def live_output(self, job_id: str) -> tuple[int, str] | None:
        """(total bytes written, tail text) of a running job, or None."""
        raw = await self.redis.hgetall(keys.live_output(job_id))
        if not raw:
            return None
        return int(raw.get("total", 0)), raw.get("tail", "")

    # --- leader: cleanup and reconciliation -------------------------------------

    @_bounded
    async def processing_owners(self) -> list[str]:
        """Worker ids that have a (non-empty) processing list."""
        return [key[len(keys.PROCESSING_PREFIX):]
                async for key in self.redis.scan_iter(match=keys.PROCESSING_PREFIX + "*", count=500)]

    @_bounded
    async def held_ids(self) -> set[str]:
        """Every id Redis holds anywhere: pending, delayed, processing lists."""
        held: set[str] = set(await self.redis.lrange(keys.PENDING, 0, -1))
        held.update(await self.redis.zrange(keys.DELAYED, 0, -1))
        async for key in self.redis.scan_iter(match=keys.PROCESSING_PREFIX + "*", count=500):
            held.update(await self.redis.lrange(key, 0, -1))
        return held

    @_bounded
    async def restore(self, jobs: Iterable[tuple[str, int]]) -> int:
        """Put back ids Redis holds nowhere (checked atomically per id); ``(id, due ms or 0)``."""
        args: list[str | int] = []
        for job_id, due_ms in jobs:
            args += [job_id, due_ms if due_ms > time.time() * 1000 else 0]
        if not args:
            return 0
        processing = [keys.PROCESSING_PREFIX + w for w in await self.processing_owners()]
        return int(await self._restore(keys=[keys.PENDING, keys.DELAYED, *processing], args=args))

    # --- inspection -----------------------------------------------------------

    @_bounded
    async def depths(self) -> dict[str, int]:
        """How many ids each place holds: pending, processing (all workers), delayed, dlq."""
        processing = 0
        async for key in self.redis.scan_iter(match=keys.PROCESSING_PREFIX + "*", count=200):
            processing += await self.redis.llen(key)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(keys.PENDING)
            pipe.zcard(keys.DELAYED)
            pipe.llen(keys.DLQ)
            pending, delayed, dlq = await pipe.execute()
        return {"pending": pending, "processing": processing, "delayed": delayed, "dlq": dlq}
