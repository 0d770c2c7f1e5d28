"""The per-server watch hub: every WatchJob stream of this server, fed by push.

While at least one stream is open, one task serves them all. The jobs they watch
are registered in PostgreSQL (``watched_jobs``), so a change to one of them sends
``NOTIFY job_events`` with its id (a trigger, migration 0010); the hub LISTENs on one
connection and reads again only the jobs it heard about, in one query for all of
them. Nothing is read while nothing changes, however many streams are open, but
for a slow safety net (every SAFETY_INTERVAL, one query for all: a notification
lost with a broken connection cannot freeze a stream), and a look at a PENDING
job when it comes due (it shows as QUEUED then, without a write). A broken LISTEN
connection (PostgreSQL restarted) is opened again, and everything read again.
Live output of running jobs comes from Redis (``live_output:<id>``, written by
workers): one pipeline for all of them every LIVE_INTERVAL, only while a watched
job runs.

Each stream has a mailbox of one: the latest snapshot of its job, overwritten
by newer ones, so a slow reader never holds up the others; it simply skips
states it was too slow to see (the final one is never skipped, as it is the
last).

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
from jobcluster.store.job_queries import Changed
from jobcluster.store.watchers import Listener
from scheduler_server import convert
from scheduler_server.errors import Exhausted, NotFound, status_of

log = logging.getLogger("server")

#: How often the live output of running watched jobs is read from Redis (seconds).
LIVE_INTERVAL = 0.2
#: How often every watched job is read again even without a notification (seconds).
SAFETY_INTERVAL = 5.0
#: A new job id, a notified one, is read this soon (so a burst shares one query).
FIRST_LOOK_DELAY = 0.02
#: A newly registered job is read once more this long after its first look: a change whose
#: statement began before the registration committed may not have notified.
SECOND_LOOK_DELAY = 0.5
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


def _cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class WatchHub:
    """Every WatchJob stream of one server, fed by one task that hears about changes from PostgreSQL."""

    def __init__(self, store: Callable[[], Store], live_output: LiveOutput, *, max_streams: int,
                 max_life: float, server: str = "", safety_interval: float = SAFETY_INTERVAL) -> None:
        self._store = store
        self._live_output = live_output
        self.max_streams = max_streams
        self.max_life = max_life
        self.server = server or f"watch-hub-{id(self):x}"  # this server's rows in watched_jobs
        self.safety_interval = safety_interval
        self._watches: dict[str, set[Watch]] = {}
        self._seen: dict[str, tuple[Snapshot, int]] = {}   # job id -> (snapshot, row version)
        self._registered: set[str] = set()                 # in watched_jobs (this server's rows)
        self._dirty: set[str] = set()                      # to read again now
        self._due: dict[str, float] = {}                   # job id -> loop time to read it again
        self._streams = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Listener | None = None
        #: Reads of PostgreSQL since start (each one query for every job that needed a look).
        self.polls = 0
        #: Notifications heard since start.
        self.heard = 0

    @property
    def streams(self) -> int:
        """How many streams are open."""
        return self._streams

    @property
    def polling(self) -> bool:
        """Whether the hub's task runs (only while someone watches)."""
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
                self._due.pop(job_id, None)
                self._wake.set()  # unregister it (and the task ends when nobody watches)

    def close(self) -> None:
        """End every stream now (the server is stopping): each ends OK without a final event, so its
        client watches again, on another server."""
        for watches in self._watches.values():
            for w in watches:
                w.end("the server is stopping; watch again (another server will answer)")

    def _heard(self, job_id: str) -> None:
        self.heard += 1
        if job_id in self._watches:
            self._dirty.add(job_id)
            self._wake.set()

    async def _run(self) -> None:
        """Serve the streams while anyone watches; then unregister and stop listening."""
        loop = asyncio.get_running_loop()
        next_safety = loop.time() + self.safety_interval
        try:
            while self._watches:
                self._wake.clear()
                try:
                    await self._sync(loop.time() >= next_safety)
                except Exception as exc:  # every stream ends with it; the clients watch again
                    self._fail_all(exc)
                    await self._drop_listener()
                    await wait_within(self._wake.wait(), 1.0)
                    continue
                if loop.time() >= next_safety:
                    next_safety = loop.time() + self.safety_interval
                await self._sleep(next_safety)
        finally:
            await self._shut()
            self._task = None
            if self._watches and not _cancelled():  # a stream came while this task was shutting
                self._task = asyncio.create_task(self._run(), name="watch-hub")

    async def _sync(self, everything: bool) -> None:
        """Listen (again), register new jobs and drop gone ones, then read what needs a look."""
        store = self._store()
        if self._listener is not None and not self._listener.alive:
            await self._drop_listener()
        if self._listener is None:
            self._registered.clear()  # a restarted PostgreSQL lost watched_jobs (UNLOGGED) and our LISTEN
            await store.watchers.unregister_server(self.server)
            self._listener = await store.watchers.listen(self._heard)
            everything = True
        gone = self._registered - self._watches.keys()
        if gone:
            await store.watchers.unregister(gone, self.server)
            self._registered -= gone
        new = self._watches.keys() - self._registered
        loop = asyncio.get_running_loop()
        if new:
            await store.watchers.register(new, self.server, self.max_life + SAFETY_INTERVAL)
            self._registered |= new
            later = loop.time() + SECOND_LOOK_DELAY
            for job_id in new:
                self._due[job_id] = min(self._due.get(job_id, later), later)
        now = loop.time()
        due = {j for j, at in self._due.items() if at <= now}
        look = set(self._watches) if everything else (self._dirty | new | due) & self._watches.keys()
        self._dirty -= look
        for job_id in due:
            self._due.pop(job_id, None)
        if look:
            await self._look(sorted(look))
        running = [j for j, (s, _) in self._seen.items() if s.job.status is Status.RUNNING and j in self._watches]
        if running:
            await self._read_live(running)

    async def _sleep(self, next_safety: float) -> None:
        """Until a notification, a new or gone stream, a due look, the live output's turn or the safety net."""
        loop = asyncio.get_running_loop()
        until = min([next_safety, *self._due.values()])
        if any(s.job.status is Status.RUNNING for s, _ in self._seen.values()):
            until = min(until, loop.time() + LIVE_INTERVAL)
        await wait_within(self._wake.wait(), max(0.0, until - loop.time()))
        await asyncio.sleep(FIRST_LOOK_DELAY)  # a burst of notifications or new streams shares one query

    async def _look(self, ids: list[str]) -> None:
        """Read these jobs; each stream whose job changed gets the new snapshot."""
        self.polls += 1
        seen = {job_id: self._seen[job_id] for job_id in ids if job_id in self._seen}
        changed = await self._store().job_queries.changed(
            ids, {job_id: (s.job.status, version) for job_id, (s, version) in seen.items()})
        running = [i for i, c in changed.items() if c.job.status is Status.RUNNING]
        live = await self._live_output.read_many(running) if running else {}
        loop = asyncio.get_running_loop()
        for job_id in ids:
            c = changed.get(job_id)
            if c is not None and c.job.status is Status.PENDING and c.due_in_ms > 0:
                self._due[job_id] = loop.time() + c.due_in_ms / 1000 + 0.01
            if c is None and job_id not in seen:
                self._fail(job_id, NotFound(f"no job with id {job_id!r}"))
            elif c is not None:
                self._publish(job_id, c, live.get(job_id))

    async def _read_live(self, running: list[str]) -> None:
        """New output of running watched jobs, from Redis."""
        live = await self._live_output.read_many(running)
        for job_id in running:
            snap = self._seen.get(job_id)
            out = live.get(job_id)
            if snap is not None and out is not None and out[0] != snap[0].live_bytes:
                self._publish(job_id, Changed(snap[0].job, snap[1], 0), out)

    def _publish(self, job_id: str, c: Changed, live: tuple[int, str] | None) -> None:
        watches = self._watches.get(job_id)
        if not watches:
            return  # every stream of it left during the look
        snapshot = Snapshot.of(c.job, live)
        self._seen[job_id] = (snapshot, c.version)
        for w in watches:
            w.offer(snapshot)

    def _fail(self, job_id: str, exc: BaseException) -> None:
        for w in self._watches.get(job_id, ()):
            w.fail(exc)

    def _fail_all(self, exc: BaseException) -> None:
        if status_of(exc) is None:
            log.exception("watch hub: reading the watched jobs failed")
        for job_id in list(self._watches):
            self._fail(job_id, exc)

    async def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close()

    async def _shut(self) -> None:
        """Nobody watches: stop listening and remove this server's rows (best effort: they expire)."""
        registered, self._registered = self._registered, set()
        self._seen.clear()
        self._due.clear()
        self._dirty.clear()
        try:
            if registered:
                await self._store().watchers.unregister(registered, self.server)
        except Exception as exc:  # they expire at WATCH_MAX_LIFE
            log.warning("watch hub: could not unregister %d watched job(s): %s", len(registered), exc)
        finally:
            await self._drop_listener()
