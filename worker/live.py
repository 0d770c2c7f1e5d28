"""Running jobs' output published for WatchJob and GetJobStatus, and cancels looked for, every LIVE_INTERVAL."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from jobcluster.errors import UNAVAILABLE
from jobcluster.queue.live_output import Live, LiveOutput
from jobcluster.store.jobs import clean_text
from worker.running import Running

log = logging.getLogger("worker")

#: How often running jobs' output is published (for WatchJob) and cancellations are looked for.
LIVE_INTERVAL = 0.25
#: A running job's output is published again at least this often (its Redis hash lives 60 s).
LIVE_REFRESH = 20.0
#: Most output published per running job (the tail).
LIVE_TAIL_BYTES = 64 * 1024


async def live_loop(
    running: Running, live_output: LiveOutput, cancelled_among: Callable[[Sequence[str]], Awaitable[set[str]]]
) -> None:
    """Publish running jobs' output (WatchJob reads it) and stop jobs cancelled meanwhile (every other round)."""

    tick = 0
    # job id -> (bytes written, monotonic time, attempt) when last published; a job is published again
    # when it wrote more, or every LIVE_REFRESH so its hash (60 s TTL) outlives silent stretches.
    published: dict[str, tuple[int, float, int]] = {}
    while True:
        await asyncio.sleep(LIVE_INTERVAL)
        tick += 1
        newest = running.newest_by_job()
        published = {job_id: n for job_id, n in published.items() if job_id in newest}
        if not newest:
            continue
        now = time.monotonic()
        # A new attempt publishes at once, empty as it may be: its job's hash may still hold the output
        # of an attempt that died with its worker.
        changed = {
            job_id: Live(a.tail.total, clean_text(bytes(a.tail.buf[-LIVE_TAIL_BYTES:])), a.claimed.attempt)
            for job_id, a in newest.items()
            if published.get(job_id, (-1, 0.0, 0))[0] != a.tail.total
            or published[job_id][2] != a.claimed.attempt
            or now - published[job_id][1] > LIVE_REFRESH
        }
        try:
            if changed:
                await live_output.publish(changed)
                published.update({job_id: (live.total, now, live.attempt) for job_id, live in changed.items()})
            if tick % 2 == 0:
                for a in running.of_jobs(await cancelled_among(list(newest))):
                    if not a.stop.is_set():
                        log.info("job %s was cancelled: stopping it", a.claimed.job_id)
                        a.stop.set()
        except UNAVAILABLE as exc:
            log.debug("live output / cancel check skipped: %s", exc)
