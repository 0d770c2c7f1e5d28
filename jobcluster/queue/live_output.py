"""Running jobs' output so far, in Redis (``live_output:<job-id>``), for WatchJob."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, cast

from jobcluster import keys
from jobcluster.queue.base import Part, bounded

#: How long a published tail lives without a refresh (seconds).
LIVE_OUTPUT_TTL = 60.0


class Live(NamedTuple):
    """A running attempt's output so far."""

    total: int  # bytes it has written
    tail: str  # the last of them, as text
    attempt: int  # whose: a job rerun after its worker died must not show the dead attempt's output (0: unknown)

    def of(self, attempt: int) -> Live | None:
        """This output if it is attempt ``attempt``'s (or of an unknown attempt), else None."""
        return self if self.attempt in (0, attempt) else None


def _live(raw: dict[str, str]) -> Live:
    return Live(int(raw.get("total", 0)), raw.get("tail", ""), int(raw.get("attempt", 0) or 0))


class LiveOutput(Part):
    """Workers publish the tails; servers read them."""

    @bounded
    async def publish(self, outputs: Mapping[str, Live], ttl: float = LIVE_OUTPUT_TTL) -> None:
        """Running jobs' output so far, by job id."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, (total, tail, attempt) in outputs.items():
                pipe.hset(keys.live_output(job_id), mapping={"total": total, "tail": tail, "attempt": attempt})
                pipe.pexpire(keys.live_output(job_id), int(ttl * 1000))
            await pipe.execute()

    @bounded
    async def read(self, job_id: str) -> Live | None:
        """A running job's output so far, or None."""
        raw = cast(dict[str, str], await self.redis.hgetall(keys.live_output(job_id)))
        return _live(raw) if raw else None

    @bounded
    async def read_many(self, job_ids: list[str]) -> dict[str, Live]:
        """:meth:`read` for several running jobs in one round trip; jobs with nothing published are left out."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(keys.live_output(job_id))
            raws = cast(list[dict[str, str]], await pipe.execute())
        return {job_id: _live(raw) for job_id, raw in zip(job_ids, raws) if raw}
