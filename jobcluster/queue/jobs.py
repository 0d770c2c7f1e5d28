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

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from jobcluster import keys
from jobcluster.model import Serving
from jobcluster.queue.base import OP_TIMEOUT, Part, bounded, processing_lists
from jobcluster.queue.lanes import RING, Lanes

# KEYS[1] lane, KEYS[2] lanes registry, KEYS[3] the lane's bell; ARGV[1] 'back' (LPUSH: taken last) or
# 'front' (RPUSH: taken next), ARGV[2..] ids. Registers the lane (not pending_jobs) and rings its bell
# once per id (at most BELL_CAP tokens kept).
_PUSH = (
    RING
    + """
if ARGV[1] == 'front' then redis.call('RPUSH', KEYS[1], unpack(ARGV, 2))
else redis.call('LPUSH', KEYS[1], unpack(ARGV, 2)) end
if KEYS[1] ~= '%(pending)s' then redis.call('SADD', KEYS[2], KEYS[1]) end
ring(KEYS[3], #ARGV - 1)
return #ARGV - 1
"""
    % {"pending": keys.PENDING}
)

# KEYS[1] delayed set, KEYS[2] delayed_lanes, KEYS[3] lanes registry, KEYS[4] (optional) a processing list
# the ids leave, KEYS[5] (optional) a concurrency key's waiting list they join; ARGV[1] 'wait' (ms from now
# by Redis' clock) or 'at' (unix ms), then triples (id, ms, lane). The score is Redis' clock plus the wait that
# PostgreSQL's clock gave: promote_due reads the same Redis clock, so the id comes out when the job is due,
# whatever the two hosts' clocks say.
_DELAY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV, 3 do
  local id, ms, lane = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  if KEYS[4] then redis.call('LREM', KEYS[4], -1, id) end
  if KEYS[5] then
    redis.call('LPUSH', KEYS[5], id)
    redis.call('LTRIM', KEYS[5], 0, 9999)
    redis.call('PEXPIRE', KEYS[5], 600000)
  end
  redis.call('ZADD', KEYS[1], ARGV[1] == 'wait' and now + ms or ms, id)
  if lane == '%(pending)s' then
    redis.call('HDEL', KEYS[2], id)
  else
    redis.call('HSET', KEYS[2], id, lane)
    redis.call('SADD', KEYS[3], lane)
  end
end
return 1
""" % {"pending": keys.PENDING}

# KEYS[1] processing list, KEYS[2] lane, KEYS[3] lanes registry, KEYS[4] the lane's bell; ARGV[1] id,
# ARGV[2] '1': only if the id is still in the processing list. The id goes to the lane's front (taken next).
_MOVE_FRONT = (
    RING
    + """
local removed = redis.call('LREM', KEYS[1], -1, ARGV[1])
if ARGV[2] == '1' and removed == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
if KEYS[2] ~= '%(pending)s' then redis.call('SADD', KEYS[3], KEYS[2]) end
ring(KEYS[4], 1)
return 1
"""
    % {"pending": keys.PENDING}
)

# KEYS[1] processing list, KEYS[2] dlq; ARGV[1] id
_DEAD_LETTER = """
redis.call('LREM', KEYS[1], -1, ARGV[1])
if not redis.call('LPOS', KEYS[2], ARGV[1]) then
  redis.call('LPUSH', KEYS[2], ARGV[1])
end
return 1
"""

# KEYS[1] a concurrency key's waiting list, KEYS[2] delayed set. A job of the key ended: the oldest id of
# the list still delayed becomes due now (by Redis' clock); entries no longer delayed are dropped on the
# way (at most 100 looked at). Returns the id, or false.
_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _ = 1, 100 do
  local id = redis.call('RPOP', KEYS[1])
  if not id then return false end
  if redis.call('ZSCORE', KEYS[2], id) then
    redis.call('ZADD', KEYS[2], now, id)
    return id
  end
end
return false
"""

# KEYS[1] delayed set, KEYS[2] delayed_lanes, KEYS[3..2+n] lanes (KEYS[3] pending_jobs), KEYS[3+n..2+2n]
# their bells; ARGV[1] batch size, ARGV[2] n, ARGV[3] '1': an id bound for a lane not among KEYS goes
# to pending_jobs (a worker that takes it sends it on to its lane), else it stays. Moves ids due by
# Redis' own clock to their lanes; atomic, so any number of processes may run it at once without moving
# an id twice. Returns {moved, left for want of their lane}.
_PROMOTE_DUE = (
    RING
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #ids == 0 then return {0, 0} end
local n = tonumber(ARGV[2])
local index = {}
for i = 1, n do index[KEYS[2 + i]] = i end
local lanes = redis.call('HMGET', KEYS[2], unpack(ids))
local groups, gone, unknown = {}, {}, 0
for i, id in ipairs(ids) do
  local k = index[lanes[i] or '%(pending)s']
  if not k and ARGV[3] == '1' then k = 1 end
  if k then
    groups[k] = groups[k] or {}
    table.insert(groups[k], id)
    gone[#gone + 1] = id
  else
    unknown = unknown + 1
  end
end
if #gone == 0 then return {0, unknown} end
redis.call('ZREM', KEYS[1], unpack(gone))
redis.call('HDEL', KEYS[2], unpack(gone))
for k, g in pairs(groups) do
  redis.call('LPUSH', KEYS[2 + k], unpack(g))
  ring(KEYS[2 + n + k], #g)
end
return {#gone, unknown}
"""
    % {"pending": keys.PENDING}
)

# KEYS[1] lane, KEYS[2] delayed set, KEYS[3] lanes registry, KEYS[4] the lane's bell; ARGV[1] id.
# Push an id that Redis holds in neither place (a healed submit).
_ENSURE_QUEUED = (
    RING
    + """
if redis.call('LPOS', KEYS[1], ARGV[1]) or redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
redis.call('LPUSH', KEYS[1], ARGV[1])
if KEYS[1] ~= '%(pending)s' then redis.call('SADD', KEYS[3], KEYS[1]) end
ring(KEYS[4], 1)
return 1
"""
    % {"pending": keys.PENDING}
)

#: Ids per push script (Lua's unpack takes a few thousand at most).
PUSH_CHUNK = 1000


class Jobs(Part):
    """Producers put ids in; workers take, ack, back off, requeue or dead-letter them.

    ``lane`` arguments name the job's lane (:func:`jobcluster.keys.lane` of its queue, priority and
    constraints); ``pending_jobs`` when left out."""

    def __init__(self, redis: aioredis.Redis, op_timeout: float = OP_TIMEOUT) -> None:
        super().__init__(redis, op_timeout)
        self.lanes = Lanes(redis, op_timeout)
        self._push = self.redis.register_script(_PUSH)
        self._delay = self.redis.register_script(_DELAY)
        self._move_front = self.redis.register_script(_MOVE_FRONT)
        self._dead_letter = self.redis.register_script(_DEAD_LETTER)
        self._promote_due = self.redis.register_script(_PROMOTE_DUE)
        self._ensure_queued = self.redis.register_script(_ENSURE_QUEUED)
        self._release = self.redis.register_script(_RELEASE)
        self._known_lanes: list[str] = [keys.PENDING]  # for promote_due; read again when it meets a new one

    # --- producers ----------------------------------------------------------

    @bounded
    async def enqueue(self, job_id: str, due_ms: int = 0, lane: str = keys.PENDING) -> None:
        """Make a new job available now, or at ``due_ms`` (unix ms)."""
        await self.enqueue_many([(job_id, due_ms, lane)])

    @bounded
    async def enqueue_many(self, jobs: Iterable[tuple[str, int, str]]) -> None:
        """Several new jobs ``(id, due ms or 0, lane)`` in one round trip, in order within each lane."""
        now = time.time() * 1000
        ready: dict[str, list[str]] = {}
        later: list[str | int] = []
        for job_id, due, lane in jobs:
            if due and due > now:
                later += [job_id, due, lane]
            else:
                ready.setdefault(lane, []).append(job_id)
        calls: list[tuple[AsyncScript, list[str], list[str | int]]] = []
        for lane, ids in ready.items():
            for at in range(0, len(ids), PUSH_CHUNK):
                calls.append(
                    (self._push, [lane, keys.LANES, keys.lane_bell(lane)], ["back", *ids[at : at + PUSH_CHUNK]])
                )
        for at in range(0, len(later), 3 * PUSH_CHUNK):
            calls.append(
                (self._delay, [keys.DELAYED, keys.DELAYED_LANES, keys.LANES], ["at", *later[at : at + 3 * PUSH_CHUNK]])
            )
        if len(calls) == 1:  # the usual case: no pipeline, whose scripts cost a SCRIPT EXISTS round trip
            script, keys_, args = calls[0]
            await script(keys=keys_, args=args)
        elif calls:
            async with self.redis.pipeline(transaction=False) as pipe:
                for script, keys_, args in calls:
                    await script(keys=keys_, args=args, client=pipe)
                await pipe.execute()

    @bounded
    async def ensure_queued(self, job_id: str, lane: str = keys.PENDING) -> bool:
        """Push a ready job unless Redis already holds it waiting; True when pushed."""
        return bool(
            await self._ensure_queued(keys=[lane, keys.DELAYED, keys.LANES, keys.lane_bell(lane)], args=[job_id])
        )

    @bounded
    async def promote_due(self, batch: int = 500) -> int:
        """Move delayed ids whose time has come to their lanes; returns how many."""
        total, tries = 0, 0
        while True:
            lanes = self._known_lanes
            moved, unknown = await self._promote_due(
                keys=[keys.DELAYED, keys.DELAYED_LANES, *lanes, *(keys.lane_bell(lane) for lane in lanes)],
                args=[batch, len(lanes), "1" if tries >= 2 else "0"],
            )
            total += int(moved)
            if int(unknown):  # a lane this process has not seen yet: read the registry, try again
                tries += 1
                self._known_lanes = sorted(await self.lanes.registered(), key=lambda k: k != keys.PENDING)
                continue
            if int(moved) < batch:
                return total

    @bounded
    async def withdraw(self, job_id: str) -> None:
        """A cancelled job's id leaves ``delayed_jobs`` (O(log n)). In its lane it stays: taking it out
        would scan the whole list, and the worker that takes it finds the job CANCELLED in PostgreSQL
        and drops it (worker/decide.py, ``refuse``)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.DELAYED, job_id)
            pipe.hdel(keys.DELAYED_LANES, job_id)
            await pipe.execute()

    # --- worker -------------------------------------------------------------

    async def dequeue(self, worker_id: str, serving: Serving | None = None, timeout: float | None = None) -> str | None:
        """Take the next ready id from the lanes ``serving`` names (default: ``pending_jobs`` only) into
        this worker's processing list; blocks up to ``timeout`` (see :mod:`.lanes`)."""
        return await self.lanes.take(worker_id, serving or Serving(), timeout=timeout)

    @bounded
    async def ack(self, worker_id: str, job_id: str) -> None:
        """The worker is done with this id."""
        await self.redis.lrem(keys.processing(worker_id), -1, job_id)

    @bounded
    async def retry_later(self, worker_id: str, job_id: str, wait_ms: int, lane: str = keys.PENDING) -> None:
        """Back off: the id waits in ``delayed_jobs`` for ``wait_ms`` (counted on Redis' clock), then
        goes to ``lane``."""
        await self._delay(
            keys=[keys.DELAYED, keys.DELAYED_LANES, keys.LANES, keys.processing(worker_id)],
            args=["wait", job_id, max(0, wait_ms), lane],
        )

    @bounded
    async def wait_for_key(self, worker_id: str, job_id: str, wait_ms: int, lane: str, concurrency_key: str) -> None:
        """Its concurrency key is full: the id waits in ``delayed_jobs`` for ``wait_ms`` at most, and in
        the key's waiting list, so that a job of the key that ends lets it go at once (:meth:`release_key`)."""
        await self._delay(
            keys=[
                keys.DELAYED,
                keys.DELAYED_LANES,
                keys.LANES,
                keys.processing(worker_id),
                keys.key_waiting(concurrency_key),
            ],
            args=["wait", job_id, max(0, wait_ms), lane],
        )

    @bounded
    async def release_key(self, concurrency_key: str) -> bool:
        """A job of this key ended: the oldest job waiting for it becomes due now and is promoted.
        False when none waits."""
        if not await self._release(keys=[keys.key_waiting(concurrency_key), keys.DELAYED]):
            return False
        await self.promote_due()
        return True

    @bounded
    async def delay(self, job_id: str, due_ms: int, lane: str = keys.PENDING) -> None:
        """Put an id (not in any processing list) in ``delayed_jobs`` until ``due_ms`` (unix ms)."""
        await self._delay(keys=[keys.DELAYED, keys.DELAYED_LANES, keys.LANES], args=["at", job_id, due_ms, lane])

    @bounded
    async def requeue_front(self, worker_id: str, job_id: str, lane: str = keys.PENDING) -> None:
        """Give the id back to the front of its lane, to be taken next (an attempt interrupted by
        shutdown, or an id taken from a lane that is not its job's)."""
        await self._move_front(
            keys=[keys.processing(worker_id), lane, keys.LANES, keys.lane_bell(lane)], args=[job_id, "0"]
        )

    @bounded
    async def take_back(self, worker_id: str, job_id: str, lane: str = keys.PENDING) -> bool:
        """Move ``job_id`` from this worker's processing list to the front of its lane, if it is still
        there (an attempt found fenced whose recovery moved PostgreSQL but not yet Redis)."""
        return bool(
            await self._move_front(
                keys=[keys.processing(worker_id), lane, keys.LANES, keys.lane_bell(lane)], args=[job_id, "1"]
            )
        )

    @bounded
    async def dead_letter(self, worker_id: str, job_id: str) -> None:
        """LPUSH the id to ``dlq_tasks`` (once) and drop it from the processing list."""
        await self._dead_letter(keys=[keys.processing(worker_id), keys.DLQ], args=[job_id])

    # --- inspection -----------------------------------------------------------

    @bounded
    async def depths(self) -> dict[str, int]:
        """How many ids each place holds: pending (every lane), processing (all workers), delayed, dlq."""
        processing = 0
        for key in await processing_lists(self.redis, count=200):
            processing += await self.redis.llen(key)
        pending = sum((await self.lanes.depths()).values())
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.DELAYED)
            pipe.llen(keys.DLQ)
            delayed, dlq = await pipe.execute()
        return {"pending": pending, "processing": processing, "delayed": delayed, "dlq": dlq}
