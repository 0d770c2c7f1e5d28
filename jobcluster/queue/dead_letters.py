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

from collections.abc import Collection, Sequence
from typing import cast

import redis.asyncio as aioredis

from jobcluster import keys
from jobcluster.queue.base import OP_TIMEOUT, Part, bounded

#: Ids per Redis command or script: a script over this many ids runs in about a millisecond.
CHUNK = 1000

# KEYS[1] dlq, KEYS[2] pending; ARGV[1] n, ARGV[2..] fates: '+id' (leaves for the queue) or '-id' (leaves).
# Pops the n oldest ids. Those with a fate leave (a '+' id is pushed to the queue once); the others go
# back at the new end in their order. A '+' id not among them is pushed anyway: PostgreSQL has
# already queued its job. Returns how many ids left the list.
_TAKE_OLDEST = """
local fate = {}
for i = 2, #ARGV do fate[string.sub(ARGV[i], 2)] = string.sub(ARGV[i], 1, 1) end
local taken = redis.call('RPOP', KEYS[1], tonumber(ARGV[1])) or {}
local keep, push, left = {}, {}, 0
for _, id in ipairs(taken) do
  local f = fate[id]
  if f == nil then
    keep[#keep + 1] = id
  else
    left = left + 1
    if f == '+' then push[#push + 1] = id; fate[id] = '-' end
  end
end
for i = 2, #ARGV do
  local id = string.sub(ARGV[i], 2)
  if fate[id] == '+' then push[#push + 1] = id; fate[id] = '-' end
end
if #keep > 0 then redis.call('LPUSH', KEYS[1], unpack(keep)) end
if #push > 0 then redis.call('LPUSH', KEYS[2], unpack(push)) end
return left
"""


class DeadLetters(Part):
    """Admin of ``dlq_tasks``."""

    def __init__(self, redis: aioredis.Redis, op_timeout: float = OP_TIMEOUT) -> None:
        super().__init__(redis, op_timeout)
        self._take_oldest = self.redis.register_script(_TAKE_OLDEST)

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
    async def take_oldest(self, n: int, to_queue: Collection[str] = (), away: Collection[str] = ()) -> int:
        """One step of a pass: of the ``n`` oldest ids (at most :data:`CHUNK`), those in ``to_queue`` move
        to ``pending_jobs`` (after PostgreSQL made their jobs QUEUED), those in ``away`` leave; the rest
        go back at the new end. Returns how many ids left the list."""
        fates = [f"+{i}" for i in to_queue] + [f"-{i}" for i in away]
        return int(await self._take_oldest(keys=[keys.DLQ, keys.PENDING], args=[min(n, CHUNK), *fates]))

    @bounded
    async def purge_all(self) -> int:
        """Drop every id (the jobs stay FAILED in PostgreSQL); returns how many. UNLINK frees the list
        in the background, so a long one does not block Redis."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.llen(keys.DLQ)
            pipe.unlink(keys.DLQ)
            n, _ = await pipe.execute()
        return int(n)
