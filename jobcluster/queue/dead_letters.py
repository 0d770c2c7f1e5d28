"""The dead-letter list ``dlq_tasks`` in Redis: read it, retry ids from it, purge it.

Workers put ids in with :meth:`jobcluster.queue.jobs.Jobs.dead_letter`.
PostgreSQL's side (the FAILED jobs) is :mod:`jobcluster.store.dead_letters`.
"""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis

from jobcluster import keys
from jobcluster.queue.base import OP_TIMEOUT, Part, bounded

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


class DeadLetters(Part):
    """Admin of ``dlq_tasks``."""

    def __init__(self, redis: aioredis.Redis, op_timeout: float = OP_TIMEOUT) -> None:
        super().__init__(redis, op_timeout)
        self._retry_dead = self.redis.register_script(_RETRY_DEAD)

    @bounded
    async def ids(self) -> list[str]:
        """Ids in ``dlq_tasks``, newest first."""
        return cast(list[str], await self.redis.lrange(keys.DLQ, 0, -1))

    @bounded
    async def retry(self, job_ids: list[str]) -> int:
        """Move these ids from ``dlq_tasks`` to ``pending_jobs`` (after PostgreSQL made them QUEUED)."""
        return int(await self._retry_dead(keys=[keys.DLQ, keys.PENDING], args=job_ids)) if job_ids else 0

    @bounded
    async def purge(self, job_ids: list[str] | None = None) -> int:
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
