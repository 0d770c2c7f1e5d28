"""Who is alive, in Redis: heartbeats of workers and servers, and taking back a gone worker's ids.

A heartbeat is a member's time in a zset (``workers`` or ``servers``) plus an
info hash that expires when the beats stop. The time is Redis' own (``TIME``,
read inside the script that writes the beat), and whoever judges a beat reads
Redis' ``TIME`` in the same transaction (:meth:`Liveness.workers_now`): no host's
wall clock is ever compared with another's. PostgreSQL's side of a gone
worker is :mod:`jobcluster.store.liveness`; :mod:`jobcluster.recovery` runs both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import cast

import redis.asyncio as aioredis

from jobcluster import keys
from jobcluster.queue.base import OP_TIMEOUT, Part, bounded, processing_lists
from jobcluster.queue.lanes import RING

Info = Mapping[str, str | int | float]

# KEYS[1] workers zset, KEYS[2] worker info hash, KEYS[3] gone workers zset, KEYS[4] its gone info hash;
# ARGV[1] worker id, ARGV[2] ms, ARGV[3] why, ARGV[4] how long to keep it (ms), ARGV[5] most gone workers kept.
# Forget a worker only if its last heartbeat is older than ARGV[2]; what is known of it (its info, its last
# heartbeat, when and why) stays listed as gone for ARGV[4] ms.
_FORGET_WORKER = """
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if beat and tonumber(beat) >= tonumber(ARGV[2]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local info = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[4])
if #info > 0 then redis.call('HSET', KEYS[4], unpack(info)) end
redis.call('HSET', KEYS[4], 'gone_ms', now, 'gone_reason', ARGV[3], 'last_beat_ms', beat or 0)
redis.call('PEXPIRE', KEYS[4], ARGV[4])
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]))
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -1 - tonumber(ARGV[5]))
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""
#: How long a worker the leader declared dead stays listed (GetClusterInfo), and how many at most.
GONE_KEEP_MS = 3_600_000
GONE_MAX = 100

# KEYS[1] heartbeat zset, KEYS[2] info hash; ARGV[1] member, ARGV[2] ttl ms, ARGV[3..] info field, value...
# Stamps the beat with Redis' clock; returns that time (unix ms).
_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
if #ARGV > 2 then redis.call('HSET', KEYS[2], unpack(ARGV, 3)) end
redis.call('HSET', KEYS[2], 'heartbeat_ms', now)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return now
"""

# KEYS[1] processing list, KEYS[2] dlq, KEYS[3] lanes registry, KEYS[4..3+n] lanes (KEYS[4] pending_jobs),
# KEYS[4+n..3+2n] their bells; ARGV[1] n, ARGV[2] how many dead ids follow, then those ids, then pairs
# (id, index of its lane among the n). Dead ids go to the DLQ; everything else in the processing list goes
# back to the front of its job's lane (pending_jobs when its lane is not known: the worker that takes it
# sends it on to its lane), in order.
_RECOVER_PROCESSING = (
    RING
    + """
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local dead, lane = {}, {}
for i = 3, 2 + m do dead[ARGV[i]] = true end
for i = 3 + m, #ARGV, 2 do lane[ARGV[i]] = tonumber(ARGV[i + 1]) end
local moved, rung = 0, {}
while true do
  local id = redis.call('LPOP', KEYS[1])  -- newest taken first: the oldest ends up taken next again
  if not id then break end
  if dead[id] then
    if not redis.call('LPOS', KEYS[2], id) then redis.call('LPUSH', KEYS[2], id) end
  else
    local k = lane[id] or 1
    redis.call('RPUSH', KEYS[3 + k], id)
    if k > 1 then redis.call('SADD', KEYS[3], KEYS[3 + k]) end
    rung[k] = (rung[k] or 0) + 1
    moved = moved + 1
  end
end
for k, count in pairs(rung) do
  ring(KEYS[3 + n + k], count)
end
return moved
"""
)


class Liveness(Part):
    """Heartbeats, and the processing lists of workers that are gone."""

    def __init__(self, redis: aioredis.Redis, op_timeout: float = OP_TIMEOUT) -> None:
        super().__init__(redis, op_timeout)
        self._forget = self.redis.register_script(_FORGET_WORKER)
        self._recover = self.redis.register_script(_RECOVER_PROCESSING)
        self._beat_script = self.redis.register_script(_BEAT)

    # --- workers --------------------------------------------------------------

    async def heartbeat(self, worker_id: str, info: Info, ttl: float, within: float | None = None) -> int:
        """Record that a worker is alive now (by Redis' clock, returned as unix ms); its info hash
        expires after ``ttl`` without one. ``within``: give up after this many seconds instead of the
        usual operation bound (a heartbeat that is late is worth nothing: the next one is due soon)."""
        async with asyncio.timeout(self.op_timeout if within is None else within):
            return await self._beat(keys.WORKERS, keys.worker_info(worker_id), worker_id, info, ttl)

    @bounded
    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped cleanly."""
        await self._leave(keys.WORKERS, keys.worker_info(worker_id), worker_id)

    @bounded
    async def forget_worker(self, worker_id: str, older_than_ms: int, why: str = "") -> bool:
        """Drop a dead worker's heartbeat unless it beat again since ``older_than_ms``; it stays listed as
        gone (:meth:`gone_workers`) for GONE_KEEP_MS."""
        return bool(
            await self._forget(
                keys=[keys.WORKERS, keys.worker_info(worker_id), keys.GONE_WORKERS, keys.gone_info(worker_id)],
                args=[worker_id, older_than_ms, why, GONE_KEEP_MS, GONE_MAX],
            )
        )

    @bounded
    async def gone_workers(self) -> dict[str, dict[str, str]]:
        """Workers the leader declared dead in the last GONE_KEEP_MS: id -> what was known of them (their
        info, ``last_beat_ms``, ``gone_ms``, ``gone_reason``), newest first."""
        ids = cast(list[str], await self.redis.zrevrange(keys.GONE_WORKERS, 0, -1))
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.hgetall(keys.gone_info(worker_id))
            infos = cast(list[dict[str, str]], await pipe.execute())
        return {w: info for w, info in zip(ids, infos) if info}

    @bounded
    async def workers(self) -> dict[str, int]:
        """Worker id -> last heartbeat (unix ms, Redis' clock)."""
        return {w: int(s) for w, s in await self._scored(keys.WORKERS)}

    @bounded
    async def workers_now(self) -> tuple[int, dict[str, int]]:
        """Redis' clock now (unix ms) and worker id -> last heartbeat, read in one transaction."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.time()
            pipe.zrange(keys.WORKERS, 0, -1, withscores=True)
            (secs, micros), beats = await pipe.execute()
        return int(secs) * 1000 + int(micros) // 1000, {w: int(s) for w, s in beats}

    @bounded
    async def worker_infos(self) -> dict[str, dict[str, str]]:
        """Worker id -> its info hash; when that expired (a dead worker not yet cleaned up), at least its last
        heartbeat (``heartbeat_ms``, from the heartbeat set)."""
        members = await self._members(keys.WORKERS, keys.worker_info)
        return {w: {"heartbeat_ms": str(beat), **info} for w, (beat, info) in members.items()}

    @bounded
    async def processing_owners(self) -> list[str]:
        """Worker ids that have a (non-empty) processing list."""
        return [key[len(keys.PROCESSING_PREFIX) :] for key in await processing_lists(self.redis)]

    @bounded
    async def processing_ids(self, worker_id: str) -> list[str]:
        """The ids in one worker's processing list."""
        return cast(list[str], await self.redis.lrange(keys.processing(worker_id), 0, -1))

    @bounded
    async def processing_and_lanes(self, worker_id: str) -> tuple[list[str], bool]:
        """The ids in one worker's processing list, and whether any lane other than ``pending_jobs``
        exists (if not, every id goes back there: no need to ask PostgreSQL for lanes). One round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(keys.processing(worker_id), 0, -1)
            pipe.exists(keys.LANES)
            ids, lanes = await pipe.execute()
        return cast(list[str], ids), bool(lanes)

    @bounded
    async def recover_processing(
        self, worker_id: str, dead_ids: Iterable[str] = (), lanes: Mapping[str, str] | None = None
    ) -> int:
        """Empty a worker's processing list: ``dead_ids`` to the DLQ, the rest to the front of their lanes
        (``lanes``: id -> lane; ``pending_jobs`` for an id not in it). Returns how many went back."""
        dead = list(dead_ids)
        table = [keys.PENDING, *sorted(set((lanes or {}).values()) - {keys.PENDING})]
        index = {lane: n for n, lane in enumerate(table, start=1)}
        pairs = [x for job_id, lane in (lanes or {}).items() for x in (job_id, index[lane])]
        return int(
            await self._recover(
                keys=[keys.processing(worker_id), keys.DLQ, keys.LANES, *table, *(keys.lane_bell(k) for k in table)],
                args=[len(table), len(dead), *dead, *pairs],
            )
        )

    # --- servers --------------------------------------------------------------

    @bounded
    async def server_heartbeat(self, address: str, info: Info, ttl: float) -> None:
        """Record that a server is alive now (by Redis' clock)."""
        await self._beat(keys.SERVERS, keys.server_info(address), address, info, ttl)

    @bounded
    async def remove_server(self, address: str) -> None:
        """Forget a server that stopped cleanly."""
        await self._leave(keys.SERVERS, keys.server_info(address), address)

    @bounded
    async def servers(self) -> dict[str, tuple[int, dict[str, str]]]:
        """Server address -> (last heartbeat unix ms, info hash)."""
        return await self._members(keys.SERVERS, keys.server_info)

    # --- one mechanism for both -------------------------------------------------

    async def _beat(self, zset: str, info_key: str, member: str, info: Info, ttl: float) -> int:
        fields = [str(x) for pair in info.items() for x in pair]
        return int(await self._beat_script(keys=[zset, info_key], args=[member, int(ttl * 1000), *fields]))

    async def _members(self, zset: str, info_key: Callable[[str], str]) -> dict[str, tuple[int, dict[str, str]]]:
        """Member -> (last heartbeat unix ms, info hash) for every member of a heartbeat zset."""
        beats = {m: int(t) for m, t in await self._scored(zset)}
        async with self.redis.pipeline(transaction=False) as pipe:
            for member in beats:
                pipe.hgetall(info_key(member))
            infos = await pipe.execute()
        return {m: (beats[m], info) for m, info in zip(beats, infos)}

    async def _scored(self, zset: str) -> list[tuple[str, float]]:
        """Every member of a zset with its score."""
        return cast(list[tuple[str, float]], await self.redis.zrange(zset, 0, -1, withscores=True))

    async def _leave(self, zset: str, info_key: str, member: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(zset, member)
            pipe.delete(info_key)
            await pipe.execute()
