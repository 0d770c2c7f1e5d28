"""The per-server watch hub: one poller for every WatchJob stream of this server.

While at least one stream is open, one task polls every WATCH_INTERVAL:
PostgreSQL once for all watched jobs (only the jobs that changed come back
whole), and Redis once (one pipeline) for the live output of the running ones.
Each stream has a mailbox of one: the latest snapshot of its job, overwritten
by newer ones, so a slow reader never holds up the others; it simply skips
states it was too slow to see (the final one is never skipped, as it is the
last). 1,000 streams cost about what one costs in queries.

Bounds (invariant 9): at most WATCH_MAX_STREAMS streams per server (one more
is refused with RESOURCE_EXHAUSTED), and each stream lives at most
WATCH_MAX_LIFE; then it ends normally (status OK) without a final event, and
clients watch again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from jobcluster.aio import wait_within
from jobcluster.model import TERMINAL, Status
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.queue.live_output import LiveOutput
from jobcluster.rows import JobRow
from jobcluster.store import Store
from scheduler_server import convert
from scheduler_server.errors import Exhausted, NotFound, status_of

log = logging.getLogger("server")

#: How often the hub polls while anyone watches (seconds).
WATCH_INTERVAL = 0.2
#: A job id nobody watched yet is looked up this soon after it is asked for (and no sooner
#: after the previous poll), so a burst of new streams shares one query.
FIRST_LOOK_DELAY = 0.02
#: Trailing metadata of a stream that reached WATCH_MAX_LIFE (its value says so in words).
WATCH_END_TRAILER = "jobcluster-watch-end"


@dataclass(frozen=True)
class Snapshot:
    """A watched job as the hub last saw it, and the event that shows it (built once for all streams)."""

    job: JobRow
    live_bytes: int             # bytes the running attempt has written (0: none published)
    event: pb.JobEvent

    @property
    def final(self) -> bool:
        return self.job.status in TERMINAL

    @classmethod
    def of(cls, job: JobRow, live: tuple[int, str] | None) -> Snapshot:
        final = job.status in TERMINAL
        event = pb.JobEvent(job=convert.job_status(job), final=final)
        if live:
            event.live_output, event.live_output_bytes = live[1], live[0]
        return cls(job, live[0] if live else 0, event)


class Watch:
    """One stream's mailbox: the latest snapshot of its job, or the error that ends it."""

    def __init__(self, job_id: str, deadline: float, end_reason: str = "the stream's life is over") -> None:
        self.job_id = job_id
        self.deadline = deadline    # loop time at which the stream's life is over
        self.end_reason = end_reason  # why it ended before its job did (the trailer's words)
        self._latest: Snapshot | None = None
        self._error: BaseException | None = None
        self._ended = False
        self._ready = asyncio.Event()

    def offer(self, snapshot: Snapshot) -> None:
        """Replace what the stream has not read yet (never blocks)."""
        self._latest = snapshot
        self._ready.set()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._ready.set()

    def end(self, reason: str) -> None:
        """End the stream now, as at the end of its life."""
        self.end_reason = reason
        self._ended = True
        self._ready.set()

    async def next(self) -> Snapshot | None:
        """The newest snapshot not read yet (waiting for one); None when the stream's life is over."""
        if not await wait_within(self._ready.wait(), self.deadline - asyncio.get_running_loop().time()):
            return None
        self._ready.clear()
        if self._error is not None:
            raise self._error
        return None if self._ended else self._latest


class WatchHub:
    """Every WatchJob stream of one server, fed by one poller."""

    def __init__(self, store: Callable[[], Store], live_output: LiveOutput, *, max_streams: int,
                 max_life: float, interval: float = WATCH_INTERVAL) -> None:
        self._store = store
        self._live_output = live_output
        self.max_streams = max_streams
        self.max_life = max_life
        self.interval = interval
        self._watches: dict[str, set[Watch]] = {}
        self._seen: dict[str, tuple[Snapshot, int]] = {}   # job id -> (snapshot, row version)
        self._streams = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Polls made since start (each one query for every watched job).
        self.polls = 0

    @property
    def streams(self) -> int:
        """How many streams are open."""
        return self._streams

    @property
    def polling(self) -> bool:
        """Whether the poller runs (only while someone watches)."""
        return self._task is not None

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[Watch]:
        """A mailbox for one stream of ``job_id``; Exhausted (RESOURCE_EXHAUSTED) when the server has its fill."""
        if self._streams >= self.max_streams:
            raise Exhausted(f"this server already serves {self._streams} WatchJob streams, its limit "
                            f"(WATCH_MAX_STREAMS={self.max_streams}); watch from another server, try again "
                            "later, or raise WATCH_MAX_STREAMS")
        loop = asyncio.get_running_loop()
        watch = Watch(job_id, loop.time() + self.max_life, f"the stream reached WATCH_MAX_LIFE ({self.max_life:g}s) "
                      "before the job ended; watch it again")
        self._watches.setdefault(job_id, set()).add(watch)
        self._streams += 1
        seen = self._seen.get(job_id)
        if seen is not None:
            watch.offer(seen[0])
        else:
            self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="watch-hub")
        try:
            yield watch
        finally:
            self._streams -= 1
            same_job = self._watches.get(job_id, set())
            same_job.discard(watch)
            if not same_job:
                self._watches.pop(job_id, None)
                self._seen.pop(job_id, None)
            if not self._watches:
                self._wake.set()  # the poller ends at once

    def close(self) -> None:
        """End every stream now (the server is stopping): each ends OK without a final event, so its
        client watches again, on another server."""
        for watches in self._watches.values():
            for w in watches:
                w.end("the server is stopping; watch again (another server will answer)")

    async def _run(self) -> None:
        """Poll while anyone watches; a job id not seen yet brings the next poll forward."""
        try:
            while self._watches:
                self._wake.clear()
                await self._poll()
                await asyncio.sleep(FIRST_LOOK_DELAY)
                await wait_within(self._wake.wait(), self.interval - FIRST_LOOK_DELAY)
        finally:
            self._task = None

    async def _poll(self) -> None:
        """One look at every watched job; each stream whose job changed gets the new snapshot."""
        ids = list(self._watches)
        self.polls += 1
        seen = {job_id: self._seen[job_id] for job_id in ids if job_id in self._seen}
        try:
            changed = await self._store().job_queries.changed(
                ids, {job_id: (s.job.status, version) for job_id, (s, version) in seen.items()})
            jobs = {job_id: s.job for job_id, (s, _) in seen.items()} | {i: job for i, (job, _) in changed.items()}
            running = [i for i, job in jobs.items() if job.status is Status.RUNNING]
            live = await self._live_output.read_many(running) if running else {}
        except Exception as exc:  # every stream ends with it, as when each stream polled on its own
            if status_of(exc) is None:
                log.exception("watch hub: poll failed")
            for watches in self._watches.values():
                for w in watches:
                    w.fail(exc)
            return
        for job_id in ids:
            self._publish(job_id, jobs.get(job_id), changed.get(job_id), live.get(job_id))

    def _publish(self, job_id: str, job: JobRow | None, changed: tuple[JobRow, int] | None,
                 live: tuple[int, str] | None) -> None:
        watches = self._watches.get(job_id)
        if not watches:
            return  # every stream of it left during the poll
        if job is None:
            for w in watches:
                w.fail(NotFound(f"no job with id {job_id!r}"))
            return
        before = self._seen.get(job_id)
        live_changed = before is None or (live[0] if live else 0) != before[0].live_bytes
        if changed is None and not live_changed:
            return
        snapshot = Snapshot.of(job, live)
        self._seen[job_id] = (snapshot, changed[1] if changed else before[1] if before else 0)
        for w in watches:
            w.offer(snapshot)
