"""Lanes: one Redis list per (queue, priority, constraint set), and how a worker takes from the ones it serves.

A job waits in the lane :func:`jobcluster.keys.lane` names (``pending_jobs`` for the default queue at
priority 0 without constraints). Every lane other than ``pending_jobs`` is recorded in the ``lanes``
set when first pushed to. A worker serves the lanes whose queue is in WORKER_QUEUES and whose
constraints are all in WORKER_TAGS, in this order (:func:`eligible`): queues in WORKER_QUEUES order;
within a queue priority 9 down to 0; within a priority, lanes with more constraints first (work only
such a worker can do goes before work any worker can do). FIFO within a lane.

Taking is one script (:data:`_TAKE`): LMOVE from the first non-empty lane into the worker's
processing list, atomic like BLMOVE. It also compares the size of ``lanes`` with the size the worker
read, so a lane created since is seen on the next take. When idle:

- a worker whose only lane is ``pending_jobs`` blocks in BLMOVE on it, as the seed did (no extra round
  trip: submit to start stays the same);
- otherwise it BLPOPs the wake-up lists (``lane_bell:<queue>``) of its queues, which every push
  rings, then takes again. The block is bounded (BLOCK_SECONDS, 1 s), so an id pushed without a
  ring (a ``redis-cli LPUSH``), or a lane created while a worker blocks in BLMOVE, waits at most
  about that long more.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import cast

import redis.asyncio as aioredis

from jobcluster import keys
from jobcluster.model import Serving
from jobcluster.queue.base import OP_TIMEOUT, Part, bounded

#: Most wake-up tokens a bell keeps: enough to wake every idle slot of a few workers at once.
BELL_CAP = 64

#: Lua put before every script that pushes ids to a lane: ``ring(bell, n)`` adds a wake-up token per
#: id pushed (at most BELL_CAP kept) to the lane's bell, which the script names in KEYS[].
RING = """
local function ring(bell, count)
  local tokens = {}
  for i = 1, math.min(count, %d) do tokens[i] = '1' end
  redis.call('LPUSH', bell, unpack(tokens))
  redis.call('LTRIM', bell, 0, %d)
end
""" % (BELL_CAP, BELL_CAP - 1)

# KEYS[1] processing list, KEYS[2] lanes registry, KEYS[3..] the lanes, in order; ARGV[1] the size of the
# registry when the caller read it. Returns {id, lane}, {} when every lane is empty, or {false, 'stale'}
# when lanes were added since (the caller reads them and takes again).
_TAKE = """
if redis.call('SCARD', KEYS[2]) ~= tonumber(ARGV[1]) then return {false, 'stale'} end
for i = 3, #KEYS do
  local id = redis.call('LMOVE', KEYS[i], KEYS[1], 'RIGHT', 'LEFT')
  if id then return {id, KEYS[i]} end
end
return {}
"""


def eligible(lanes: Iterable[str], queues: Sequence[str], tags: Collection[str]) -> list[str]:
    """The lanes a worker with these WORKER_QUEUES and WORKER_TAGS serves, in the order it takes from them
    (``pending_jobs`` is among them when it serves the default queue)."""
    rank = {q: n for n, q in enumerate(dict.fromkeys(queues))}
    have = set(tags)
    chosen: list[tuple[int, int, int, str]] = []
    for lane in {*lanes, keys.PENDING}:
        try:
            queue, priority, constraints = keys.parse_lane(lane)
        except ValueError:
            continue  # not written by jobcluster.keys.lane: never served
        if queue in rank and have.issuperset(constraints):
            chosen.append((rank[queue], -priority, -len(constraints), lane))
    return [lane for *_, lane in sorted(chosen)]


class Lanes(Part):
    """The lane registry, and taking an id from the lanes a worker serves."""

    def __init__(self, redis: aioredis.Redis, op_timeout: float = OP_TIMEOUT) -> None:
        super().__init__(redis, op_timeout)
        self._take = self.redis.register_script(_TAKE)

    @bounded
    async def registered(self) -> set[str]:
        """Every lane ever pushed to, ``pending_jobs`` included."""
        return {keys.PENDING, *cast(set[str], await self.redis.smembers(keys.LANES))}

    @bounded
    async def refresh(self, serving: Serving) -> None:
        """Read the registry again and recompute the lanes ``serving`` takes from."""
        registry = cast(set[str], await self.redis.smembers(keys.LANES))
        serving.lanes = eligible(registry, serving.queues, serving.tags)
        serving.known = len(registry)

    @bounded
    async def take(self, worker_id: str, serving: Serving, timeout: float | None = None) -> str | None:
        """Take the next id from the first non-empty lane ``serving`` has into this worker's processing
        list, waiting up to ``timeout`` (BLOCK_SECONDS) when all are empty; None when none came."""
        wait = self.block_seconds if timeout is None else timeout
        job_id = await self._take_now(worker_id, serving)
        if job_id is not None:
            return job_id
        if serving.only_default:
            # redis-py types the timeout as int; it takes a float
            return cast(
                str | None,
                await self.redis.blmove(
                    keys.PENDING,
                    keys.processing(worker_id),
                    wait,  # type: ignore[arg-type]
                    "RIGHT",
                    "LEFT",
                ),
            )
        if not serving.lanes:
            await self.redis.blpop(serving.bells, wait)  # nothing served yet: new lanes ring
            await self.refresh(serving)
            return await self._take_now(worker_id, serving)
        rang = await self.redis.blpop(serving.bells, wait)
        if rang is None:
            await self.refresh(serving)  # the safety net: a lane created meanwhile is seen within BLOCK_SECONDS
        return await self._take_now(worker_id, serving)

    async def _take_now(self, worker_id: str, serving: Serving) -> str | None:
        """One take without blocking; reads the registry again first when it changed."""
        for _ in range(3):
            if serving.known < 0:
                await self.refresh(serving)
            if not serving.lanes:
                return None
            got = await self._take(keys=[keys.processing(worker_id), keys.LANES, *serving.lanes], args=[serving.known])
            if not got:
                return None
            if got[0]:
                return cast(str, got[0])
            serving.known = -1  # stale: lanes were added
        return None

    @bounded
    async def depths(self) -> dict[str, int]:
        """Lane -> how many ids wait in it (every registered lane, ``pending_jobs`` included)."""
        lanes = sorted(await self.registered())
        async with self.redis.pipeline(transaction=False) as pipe:
            for lane in lanes:
                pipe.llen(lane)
            lengths = await pipe.execute()
        return dict(zip(lanes, (int(n) for n in lengths)))
