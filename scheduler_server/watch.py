"""The per-server watch hub: every WatchJob stream of this server, served by one task.

A watched job is *busy* for HOT_FOR after it was first watched or last changed (and from
HOT_LEAD before a PENDING job comes due): busy jobs are read every POLL_INTERVAL, all in one
query. A job that stays unchanged longer is *quiet*: it is registered in PostgreSQL
(``watched_jobs``), so its next change sends ``NOTIFY job_events`` with its id (a trigger,
migration 0010), which the hub hears on one LISTEN connection; quiet jobs cost nothing while
nothing happens, however many streams watch them. Why not push for every job: NOTIFY
serializes the commits that send it (migration 0010 says how much), so a job that changes
every few seconds is cheaper to read than to be told about.

A slow safety net reads every watched job every SAFETY_INTERVAL (one query), so a
notification lost with a broken connection cannot freeze a stream; a broken LISTEN
connection (PostgreSQL restarted) is opened again and everything read again. Live output of
running jobs comes from Redis (``live_output:<id>``, written by workers): one pipeline for
all of them every POLL_INTERVAL, only while a watched job runs. Each stream's mailbox is in
``scheduler_server/watch_stream.py``.

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

from jobcluster.aio import wait_within
from jobcluster.model import Status
from jobcluster.queue.live_output import Live, LiveOutput
from jobcluster.store import Store
from jobcluster.store.job_queries import Changed
from jobcluster.store.watchers import Listener
from scheduler_server.errors import Exhausted, NotFound, status_of
from scheduler_server.watch_stream import Snapshot, Watch

__all__ = ["WATCH_END_TRAILER", "Snapshot", "Watch", "WatchHub"]

log = logging.getLogger("server")

#: How often busy jobs are read from PostgreSQL, and running jobs' live output from Redis (seconds).
POLL_INTERVAL = 0.2
#: A job is busy (read every POLL_INTERVAL, not notified) this long after it changed (seconds).
HOT_FOR = 30.0
#: A PENDING job is busy from this long before it comes due (seconds).
HOT_LEAD = 1.0
#: How often every watched job is read again even without a notification (seconds).
SAFETY_INTERVAL = 5.0
#: A new job id, a notified one, is read this soon (so a burst shares one query).
FIRST_LOOK_DELAY = 0.02
#: A job that turned quiet is read once more this long after its registration: a change whose
#: statement began before the registration committed may not have notified.
SECOND_LOOK_DELAY = 0.5
#: Trailing metadata of a stream that reached WATCH_MAX_LIFE (its value says so in words).
WATCH_END_TRAILER = "jobcluster-watch-end"


def _cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class WatchHub:
    """Every WatchJob stream of one server: busy jobs read together, quiet ones heard about from PostgreSQL."""

    def __init__(
        self,
        store: Callable[[], Store],
        live_output: LiveOutput,
        *,
        max_streams: int,
        max_life: float,
        server: str = "",
        hot_for: float = HOT_FOR,
        safety_interval: float = SAFETY_INTERVAL,
    ) -> None:
        self._store = store
        self._live_output = live_output
        self.max_streams = max_streams
        self.max_life = max_life
        self.server = server or f"watch-hub-{id(self):x}"  # this server's rows in watched_jobs
        self.hot_for = hot_for
        self.safety_interval = safety_interval
        self._watches: dict[str, set[Watch]] = {}
        self._seen: dict[str, tuple[Snapshot, int]] = {}  # job id -> (snapshot, row version)
        self._hot_until: dict[str, float] = {}  # job id -> loop time it turns quiet
        self._due_window: dict[str, tuple[float, float]] = {}  # PENDING job id -> when it is busy around its due time
        self._registered: set[str] = set()  # quiet: in watched_jobs (this server's rows)
        self._dirty: set[str] = set()  # to read at once (new, or notified)
        self._look_at: dict[str, float] = {}  # job id -> loop time of a look (second look, due)
        self._streams = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Listener | None = None
        self._renew_at = 0.0  # loop time to extend this server's rows (they lapse at max_life + safety_interval)
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

    @property
    def busy(self) -> int:
        """How many watched jobs are read every POLL_INTERVAL (not yet quiet)."""
        return len(self._watches.keys() - self._registered)

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[Watch]:
        """A mailbox for one stream of ``job_id``; Exhausted (RESOURCE_EXHAUSTED) when the server has its fill."""
        if self._streams >= self.max_streams:
            raise Exhausted(
                f"this server already serves {self._streams} WatchJob streams, its limit "
                f"(WATCH_MAX_STREAMS={self.max_streams}); watch from another server, try again "
                "later, or raise WATCH_MAX_STREAMS"
            )
        loop = asyncio.get_running_loop()
        watch = Watch(
            job_id,
            loop.time() + self.max_life,
            f"the stream reached WATCH_MAX_LIFE ({self.max_life:g}s) before the job ended; watch it again",
        )
        self._watches.setdefault(job_id, set()).add(watch)
        self._streams += 1
        seen = self._seen.get(job_id)
        if seen is not None:
            watch.offer(seen[0])
        else:
            self._dirty.add(job_id)
            self._hot_until[job_id] = loop.time() + self.hot_for
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
                for state in (self._seen, self._hot_until, self._look_at, self._due_window):
                    state.pop(job_id, None)
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
        next_poll = 0.0
        try:
            while self._watches:
                self._wake.clear()
                now = loop.time()
                try:
                    await self._sync(everything=now >= next_safety, poll=now >= next_poll)
                except Exception as exc:  # noqa: BLE001 - every stream ends with it; the clients watch again
                    self._fail_all(exc)
                    await self._drop_listener()
                    await wait_within(self._wake.wait(), 1.0)
                    continue
                if now >= next_safety:
                    next_safety = now + self.safety_interval
                if now >= next_poll:
                    next_poll = now + POLL_INTERVAL
                await self._sleep(min(next_safety, next_poll if self._polls_needed() else next_safety))
        finally:
            await self._shut()
            self._task = None
            if self._watches and not _cancelled():  # a stream came while this task was shutting
                self._task = asyncio.create_task(self._run(), name="watch-hub")

    def _polls_needed(self) -> bool:
        """Whether anything is read every POLL_INTERVAL: a busy job, or a running job's live output."""
        return self.busy > 0 or any(s.job.status is Status.RUNNING for s, _ in self._seen.values())

    def _quiet(self, now: float) -> set[str]:
        def busy(job_id: str) -> bool:
            start, end = self._due_window.get(job_id, (0.0, 0.0))
            return self._hot_until.get(job_id, 0.0) > now or start <= now < end

        return {j for j in self._watches if not busy(j)}

    def _turns(self) -> list[float]:
        """When a job next turns busy or quiet (the hub registers or unregisters it then)."""
        times = [at for j, at in self._hot_until.items() if j not in self._registered]
        for start, end in self._due_window.values():
            times += [start, end]
        return times

    async def _sync(self, *, everything: bool, poll: bool) -> None:
        """Listen (again), register jobs turned quiet and unregister busy or gone ones, then read what needs a look."""
        store = self._store()
        loop = asyncio.get_running_loop()
        if self._listener is not None and not self._listener.alive:
            await self._drop_listener()
        if self._listener is None:
            self._registered.clear()  # a restarted PostgreSQL lost watched_jobs (UNLOGGED) and our LISTEN
            await store.watchers.unregister_server(self.server)
            self._listener = await store.watchers.listen(self._heard, self._wake.set)
            everything = True
        now = loop.time()
        quiet = self._quiet(now)
        gone = self._registered - quiet
        if gone:
            await store.watchers.unregister(gone, self.server)
            self._registered -= gone
        new = quiet - self._registered
        if self._registered and now >= self._renew_at:  # streams come and go on a job for longer than one life
            new |= self._registered
        if new:
            await store.watchers.register(new, self.server, self.max_life + self.safety_interval)
            if not self._registered:
                self._renew_at = now + self.max_life / 2
            elif now >= self._renew_at:
                self._renew_at = now + self.max_life / 2
            self._registered |= new
            for job_id in new:
                self._look_at[job_id] = now + SECOND_LOOK_DELAY
        due = {j for j, at in self._look_at.items() if at <= now}
        busy = self._watches.keys() - self._registered
        look = (
            set(self._watches) if everything else (self._dirty | due | (busy if poll else set())) & self._watches.keys()
        )
        self._dirty -= look
        for job_id in due:
            self._look_at.pop(job_id, None)
        fresh = await self._look(sorted(look)) if look else set()
        if poll:
            running = [j for j, (s, _) in self._seen.items() if s.job.status is Status.RUNNING and j not in fresh]
            if running:
                await self._read_live(running)

    async def _sleep(self, next_read: float) -> None:
        """Until a notification, a new or gone stream, the next read, a due look, or a busy job turning quiet."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        until = min([next_read, *self._look_at.values(), *(at for at in self._turns() if at > now)])
        await wait_within(self._wake.wait(), max(0.0, until - now))
        await asyncio.sleep(FIRST_LOOK_DELAY)  # a burst of notifications or new streams shares one query

    async def _look(self, ids: list[str]) -> set[str]:
        """Read these jobs; each stream whose job changed gets the new snapshot, and the job is busy again.
        Returns the jobs that changed (their live output was read with them)."""
        self.polls += 1
        seen = {job_id: self._seen[job_id] for job_id in ids if job_id in self._seen}
        changed = await self._store().job_queries.changed(
            ids, {job_id: (s.job.status, version) for job_id, (s, version) in seen.items()}
        )
        running = [i for i, c in changed.items() if c.job.status is Status.RUNNING]
        live = await self._live_output.read_many(running) if running else {}
        now = asyncio.get_running_loop().time()
        for job_id in ids:
            c = changed.get(job_id)
            if c is None:
                if job_id not in seen:
                    self._fail(job_id, NotFound(f"no job with id {job_id!r}"))
                continue
            if job_id not in self._watches:
                continue  # every stream of it left during the look
            self._hot_until[job_id] = now + self.hot_for
            if c.job.status is Status.PENDING and c.due_in_ms > 0:  # busy while it comes due, not notified
                due = now + c.due_in_ms / 1000
                self._due_window[job_id] = (due - HOT_LEAD, due + self.hot_for)
            else:
                self._due_window.pop(job_id, None)
            self._publish(job_id, c, live.get(job_id))
        return set(changed)

    async def _read_live(self, running: list[str]) -> None:
        """New output of running watched jobs, from Redis."""
        live = await self._live_output.read_many(running)
        for job_id in running:
            snap = self._seen.get(job_id)
            out = live.get(job_id)
            if snap is not None and out is not None:
                out = out.of(snap[0].job.attempts)  # not a dead attempt's (its byte count may match)
            if snap is not None and out is not None and out.total != snap[0].live_bytes:
                self._publish(job_id, Changed(snap[0].job, snap[1], 0), out)

    def _publish(self, job_id: str, c: Changed, live: Live | None) -> None:
        watches = self._watches.get(job_id)
        if not watches:
            return
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
        for state in (self._seen, self._hot_until, self._look_at, self._due_window):
            state.clear()
        self._dirty.clear()
        try:
            if registered:
                await self._store().watchers.unregister(registered, self.server)
        except Exception as exc:  # noqa: BLE001 - best effort: they expire at WATCH_MAX_LIFE
            log.warning("watch hub: could not unregister %d watched job(s): %s", len(registered), exc)
        finally:
            await self._drop_listener()
