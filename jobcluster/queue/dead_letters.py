"""The dead-letter list ``dlq_tasks`` in Redis: read it, take ids out of it, purge it.

Workers put ids in with :meth:`jobcluster.queue.jobs.Jobs.dead_letter` (LPUSH:
newest first). PostgreSQL's side (the FAILED jobs) is
:mod:`jobcluster.store.dead_letters`.

Everything here is linear in the length of the list and bounded per command:
reads go :data:`CHUNK` ids at a time, and retry or purge of chosen ids is one
pass from the oldest end, :data:`CHUNK` ids per script (:meth:`take_oldest`),
so a list of 100,000 ids never blocks Redis for long. The pass is a rotation:
the ids that stay go back at the new end, and once every id has passed they
are in their old order again (an id dead-lettered while a pass runs may end up
among older ones).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import cast

import redis.asyncio as aioredis

from jobcluster import keys
from jobcluster.queue.base import OP_TIMEOUT, Part, bounded
from jobcluster.queue.lanes import RING

#: Ids per Redis command or script: a script over this many ids runs in about a millisecond.
CHUNK = 1000
#: How long a retry's mark (``dlq_retrying``) lasts unless renewed (ms): a retry renews it every batch, and
#: one that died stops holding reconciliation back after this.
RETRY_MARK_MS = 30_000

_UNMARK = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1"

# KEYS[1] dlq, KEYS[2] lanes registry, KEYS[3..2+m] lanes (KEYS[3] pending_jobs), KEYS[3+m..2+2m] their
# bells, KEYS[3+2m] dlq_moves; ARGV[1] n, ARGV[2] m, ARGV[3..] fates: '+<k>:id' (leaves for lane k) or '-id' (leaves).
# Pops the n oldest ids. Those with a fate leave (a '+' id is pushed to its lane once); the others go
# back at the new end in their order. A '+' id not among them is pushed anyway: PostgreSQL has
# already queued its job. Returns how many ids left the list.
_TAKE_OLDEST = (
    RING
    + """
local m = tonumber(ARGV[2])
local fate, lane = {}, {}
for i = 3, #ARGV do
  local f = ARGV[i]
  if string.sub(f, 1, 1) == '+' then
    local k, id = string.match(f, '^%+(%d+):(.*)$')
    fate[id] = '+'
    lane[id] = tonumber(k)
  else
    fate[string.sub(f, 2)] = '-'
  end
end
local taken = redis.call('RPOP', KEYS[1], tonumber(ARGV[1])) or {}
redis.call('INCR', KEYS[3 + 2 * m])
local keep, push, left = {}, {}, 0
local function queue(id)
  local k = lane[id]
  push[k] = push[k] or {}
  table.insert(push[k], id)
  fate[id] = '-'
end
for _, id in ipairs(taken) do
  local f = fate[id]
  if f == nil then
    keep[#keep + 1] = id
  else
    left = left + 1
    if f == '+' then queue(id) end
  end
end
for id, f in pairs(fate) do
  if f == '+' then queue(id) end
end
if #keep > 0 then redis.call('LPUSH', KEYS[1], unpack(keep)) end
for k, ids in pairs(push) do
  redis.call('LPUSH', KEYS[2 + k], unpack(ids))
  if k > 1 then redis.call('SADD', KEYS[2], KEYS[2 + k]) end
  ring(KEYS[2 + m + k], #ids)
end
return left
"""
)


class DeadLetters(Part):
    """Admin of ``dlq_tasks``."""

    def __init__(self, redis: aioredis.Redis, op_timeout: float = OP_TIMEOUT) -> None:
        super().__init__(redis, op_timeout)
        self._take_oldest = self.redis.register_script(_TAKE_OLDEST)
        self._unmark = self.redis.register_script(_UNMARK)

    @bounded
    async def ids(self) -> list[str]:
        """Ids in ``dlq_tasks``, newest first (read :data:`CHUNK` at a time from the old end, which
        new ids do not shift)."""
        pages: list[list[str]] = []
        while True:
            skip = len(pages) * CHUNK
            page = cast(list[str], await self.redis.lrange(keys.DLQ, -skip - CHUNK, -skip - 1))
            pages.append(page)
            if len(page) < CHUNK:
                return [job_id for p in reversed(pages) for job_id in p]

    @bounded
    async def newest(self, offset: int, n: int) -> list[str]:
        """Up to ``n`` ids from position ``offset`` (0: the newest), newest first."""
        return cast(list[str], await self.redis.lrange(keys.DLQ, offset, offset + n - 1))

    @bounded
    async def present(self, job_ids: Sequence[str]) -> list[str]:
        """Those of these ids that ``dlq_tasks`` holds, in the order given (one LPOS each)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.lpos(keys.DLQ, job_id)
            found = await pipe.execute()
        return [job_id for job_id, at in zip(job_ids, found) if at is not None]

    @bounded
    async def count(self) -> int:
        """How many ids ``dlq_tasks`` holds."""
        return int(await self.redis.llen(keys.DLQ))

    @bounded
    async def oldest(self, n: int) -> list[str]:
        """The ``n`` oldest ids, oldest first (read :data:`CHUNK` at a time)."""
        found: list[str] = []
        while len(found) < n:
            size = min(CHUNK, n - len(found))
            page = cast(list[str], await self.redis.lrange(keys.DLQ, -len(found) - size, -len(found) - 1))
            found += reversed(page)
            if len(page) < size:
                break
        return found

    @bounded
    async def mark_retrying(self, token: str, ttl_ms: int = RETRY_MARK_MS) -> None:
        """Say a retry (``token``) is moving its jobs to their lanes, for ``ttl_ms``: reconciliation waits."""
        await self.redis.set(keys.DLQ_RETRYING, token, px=ttl_ms)

    @bounded
    async def unmark_retrying(self, token: str) -> None:
        """The retry ``token`` is over (a newer retry's mark stays)."""
        await self._unmark(keys=[keys.DLQ_RETRYING], args=[token])

    @bounded
    async def take_oldest(
        self, n: int, to_queue: Mapping[str, str] | Collection[str] = (), away: Collection[str] = ()
    ) -> int:
        """One step of a pass: of the ``n`` oldest ids (at most :data:`CHUNK`), those in ``to_queue`` move
        to their lanes (``to_queue``: id -> lane; a plain collection: ``pending_jobs``), after PostgreSQL
        made their jobs QUEUED; those in ``away`` leave; the rest go back at the new end. Returns how many
        ids left the list."""
        lanes = to_queue if isinstance(to_queue, Mapping) else dict.fromkeys(to_queue, keys.PENDING)
        table = [keys.PENDING, *sorted(set(lanes.values()) - {keys.PENDING})]
        index = {lane: k for k, lane in enumerate(table, start=1)}
        fates = [f"+{index[lane]}:{i}" for i, lane in lanes.items()] + [f"-{i}" for i in away]
        return int(
            await self._take_oldest(
                keys=[keys.DLQ, keys.LANES, *table, *(keys.lane_bell(lane) for lane in table), keys.DLQ_MOVES],
                args=[min(n, CHUNK), len(table), *fates],
            )
        )

    @bounded
    async def purge_all(self) -> int:
        """Drop every id (the jobs stay FAILED in PostgreSQL); returns how many. UNLINK frees the list
        in the background, so a long one does not block Redis."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.llen(keys.DLQ)
            pipe.unlink(keys.DLQ)
            pipe.incr(keys.DLQ_MOVES)
            n, _, _ = await pipe.execute()
        return int(n)
