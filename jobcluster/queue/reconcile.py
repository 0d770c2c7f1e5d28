"""Reconciliation's view of Redis: which ids it holds, and putting back the ones it lost.

PostgreSQL's side (jobs that should be waiting) is :mod:`jobcluster.store.reconcile`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import cast

import redis.asyncio as aioredis

from jobcluster import keys
from jobcluster.queue.base import OP_TIMEOUT, Part, bounded, processing_lists

#: Ids per dead-letter restore script (each LPOS scans dlq_tasks, kept short after a data loss).
DEAD_CHUNK = 500
#: Ids per LRANGE when reading ``dlq_tasks`` whole.
DEAD_READ = 1000

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


# KEYS[1] dlq_tasks; ARGV[1] how long the caller knows the list to be (its length when the caller read it
# whole, plus what the caller pushed since), ARGV[2..] ids it found missing then, oldest first. Only the
# entries pushed to the head since (by workers) are searched, so a rebuild after a loss stays linear.
# Returns how many were pushed.
_RESTORE_DEAD_SINCE = """
local fresh = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
local pushed = 0
for i = 2, #ARGV do
  if fresh <= 0 or not redis.call('LPOS', KEYS[1], ARGV[i], 'MAXLEN', fresh) then
    redis.call('LPUSH', KEYS[1], ARGV[i])
    pushed = pushed + 1
  end
end
return pushed
"""


# KEYS[1] pending, KEYS[2] delayed, KEYS[3..] every processing list; ARGV[1] how long the caller knows
# pending_jobs to be (read whole, plus its own pushes), then pairs (id, due ms; 0 = now) of ids Redis held
# nowhere then. Searches only pending_jobs' entries pushed since (so a rebuild stays linear), delayed_jobs
# and the processing lists; then pushes the rest. Returns {pushed to pending, to delayed}.
_RESTORE_SINCE = """
local fresh = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
local ready, later = {}, {}
for i = 2, #ARGV, 2 do
  local id, due = ARGV[i], tonumber(ARGV[i + 1])
  local held = redis.call('ZSCORE', KEYS[2], id)
  if not held and fresh > 0 then held = redis.call('LPOS', KEYS[1], id, 'MAXLEN', fresh) end
  local k = 3
  while not held and k <= #KEYS do
    held = redis.call('LPOS', KEYS[k], id)
    k = k + 1
  end
  if not held then
    if due > 0 then later[#later + 1] = due; later[#later + 1] = id else ready[#ready + 1] = id end
  end
end
if #ready > 0 then redis.call('LPUSH', KEYS[1], unpack(ready)) end
if #later > 0 then redis.call('ZADD', KEYS[2], unpack(later)) end
return {#ready, #later / 2}
"""


class Reconcile(Part):
    """Every id Redis holds, restoring missing ones, and the mark that says Redis kept its data."""

    def __init__(self, redis: aioredis.Redis, op_timeout: float = OP_TIMEOUT) -> None:
        super().__init__(redis, op_timeout)
        self._restore = self.redis.register_script(_RESTORE)
        self._restore_since = self.redis.register_script(_RESTORE_SINCE)
        self._restore_dead_since = self.redis.register_script(_RESTORE_DEAD_SINCE)

    @bounded
    async def kept_data(self) -> bool:
        """Whether Redis still holds the mark :meth:`mark_kept` set (gone: Redis lost its data)."""
        return bool(await self.redis.exists(keys.RECONCILED))

    @bounded
    async def mark_kept(self) -> None:
        """Set the mark whose loss tells reconciliation that Redis lost its data."""
        await self.redis.set(keys.RECONCILED, str(int(time.time() * 1000)))

    @bounded
    async def missing_dead(self, job_ids: Sequence[str]) -> list[str]:
        """Those of these ids that ``dlq_tasks`` lacks (one LPOS each, pipelined; recent dead letters are
        near the head, so each is cheap; a missing one scans the list)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.lpos(keys.DLQ, job_id)
            found = await pipe.execute()
        return [job_id for job_id, at in zip(job_ids, found) if at is None]

    @bounded
    async def dead_letters_read(self) -> tuple[set[str], int]:
        """Every id in ``dlq_tasks`` and the list's length then, for :meth:`restore_dead_since`."""
        held: set[str] = set()
        length = 0
        while True:
            page = cast(list[str], await self.redis.lrange(keys.DLQ, -length - DEAD_READ, -length - 1))
            held.update(page)
            length += len(page)
            if len(page) < DEAD_READ:
                return held, length

    @bounded
    async def restore_dead_since(self, job_ids: Sequence[str], known: int) -> int:
        """LPUSH to ``dlq_tasks`` these ids, which it lacked when it was ``known`` long, unless one was
        pushed since (checked atomically among the newest entries only). Returns how many were pushed."""
        pushed = 0
        for start in range(0, len(job_ids), DEAD_CHUNK):
            pushed += int(await self._restore_dead_since(
                keys=[keys.DLQ], args=[known + pushed, *job_ids[start:start + DEAD_CHUNK]]))
        return pushed

    @bounded
    async def restore_dead(self, job_ids: Sequence[str]) -> int:
        """LPUSH to ``dlq_tasks`` the ids it lacks (checked atomically), oldest dead letter first."""
        pushed = 0
        for start in range(0, len(job_ids), DEAD_CHUNK):
            # known length 0: every entry counts as new, so the whole list is searched
            pushed += int(await self._restore_dead_since(keys=[keys.DLQ], args=[0, *job_ids[start:start + DEAD_CHUNK]]))
        return pushed

    @bounded
    async def held_ids(self) -> set[str]:
        """Every id Redis holds anywhere: pending, delayed, processing lists."""
        # decode_responses=True: every member comes back as str
        held = set(cast(list[str], await self.redis.lrange(keys.PENDING, 0, -1)))
        held.update(cast(list[str], await self.redis.zrange(keys.DELAYED, 0, -1)))
        for key in await processing_lists(self.redis):
            held.update(cast(list[str], await self.redis.lrange(key, 0, -1)))
        return held

    @bounded
    async def held_and_pending_length(self) -> tuple[set[str], int]:
        """Like :meth:`held_ids`, with the length ``pending_jobs`` had when read (for :meth:`restore_since`)."""
        pending = cast(list[str], await self.redis.lrange(keys.PENDING, 0, -1))
        held = set(pending)
        held.update(cast(list[str], await self.redis.zrange(keys.DELAYED, 0, -1)))
        for key in await processing_lists(self.redis):
            held.update(cast(list[str], await self.redis.lrange(key, 0, -1)))
        return held, len(pending)

    @bounded
    async def restore_since(self, jobs: Sequence[tuple[str, int]], known: int) -> tuple[int, int]:
        """Put back ids Redis held nowhere when ``pending_jobs`` was ``known`` long, unless one came back
        since (checked atomically, among pending_jobs' newest entries only); ``(id, due ms or 0)``, in
        chunks. Returns (pushed in all, the pending length the caller knows now)."""
        pushed = 0
        now = time.time() * 1000
        processing = await processing_lists(self.redis)
        for start in range(0, len(jobs), DEAD_CHUNK):
            args: list[str | int] = [known]
            for job_id, due_ms in jobs[start:start + DEAD_CHUNK]:
                args += [job_id, due_ms if due_ms > now else 0]
            ready, later = await self._restore_since(keys=[keys.PENDING, keys.DELAYED, *processing], args=args)
            known += int(ready)
            pushed += int(ready) + int(later)
        return pushed, known

    @bounded
    async def restore(self, jobs: Iterable[tuple[str, int]]) -> int:
        """Put back ids Redis holds nowhere (checked atomically per id); ``(id, due ms or 0)``."""
        args: list[str | int] = []
        for job_id, due_ms in jobs:
            args += [job_id, due_ms if due_ms > time.time() * 1000 else 0]
        if not args:
            return 0
        processing = await processing_lists(self.redis)
        return int(await self._restore(keys=[keys.PENDING, keys.DELAYED, *processing], args=args))
