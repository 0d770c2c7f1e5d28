"""Running jobs' output so far, in Redis (``live_output:<job-id>``), for WatchJob."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from jobcluster import keys
from jobcluster.queue.base import Part, bounded

#: How long a published tail lives without a refresh (seconds).
LIVE_OUTPUT_TTL = 60.0


class LiveOutput(Part):
    """Workers publish the tails; servers read them."""

    @bounded
    async def publish(self, outputs: Mapping[str, tuple[int, str]], ttl: float = LIVE_OUTPUT_TTL) -> None:
        """Running jobs' output so far: job id -> (total bytes written, tail as text)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, (total, tail) in outputs.items():
                pipe.hset(keys.live_output(job_id), mapping={"total": total, "tail": tail})
                pipe.pexpire(keys.live_output(job_id), int(ttl * 1000))
            await pipe.execute()

    @bounded
    async def read(self, job_id: str) -> tuple[int, str] | None:
        """(total bytes written, tail text) of a running job, or None."""
        raw = cast(dict[str, str], await self.redis.hgetall(keys.live_output(job_id)))
        if not raw:
            return None
        return int(raw.get("total", 0)), raw.get("tail", "")

    @bounded
    async def read_many(self, job_ids: list[str]) -> dict[str, tuple[int, str]]:
        """:meth:`read` for several running jobs in one round trip; jobs with nothing published are left out."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(keys.live_output(job_id))
            raws = cast(list[dict[str, str]], await pipe.execute())
        return {job_id: (int(raw.get("total", 0)), raw.get("tail", "")) for job_id, raw in zip(job_ids, raws) if raw}
