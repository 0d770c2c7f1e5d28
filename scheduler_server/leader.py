"""What the elected server does: cron, cleanup after dead workers, reconciliation, promotion, retention.

Every step is safe to run twice, by two servers that both (briefly) believe
they lead: PostgreSQL writes run in a transaction fenced by the term's token
(``store.fencing.fenced``), cron jobs are unique per (schedule, tick), and Redis moves
check where an id already is. Each step runs only while
``Election.leading()`` is true, which turns false before the lease can expire.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import Mapping, Set

from jobcluster import cron, keys, metrics
from jobcluster.election import Election
from jobcluster.errors import UNAVAILABLE
from jobcluster.queue import Queue
from jobcluster.queue.reconcile import DataLost
from jobcluster.recovery import recover_worker
from jobcluster.rows import ScheduleRow
from jobcluster.settings import Settings
from jobcluster.store import Fenced, Store
from scheduler_server.healer import DeadLetterSweep, WaitingCheck, rebuild_waiting, reconcile_dead_letters
from scheduler_server.retention import Expiry
from scheduler_server.stats import StatsKeeper

log = logging.getLogger("leader")

#: How often the leader runs its steps (seconds).
TICK = 0.5


def choose_dead_workers(
    *,
    now_ms: int,
    beats: Mapping[str, int],
    holders: Set[str],
    dead_after: float,
    mono: float,
    missing_since: Mapping[str, float],
    healthy_for: float = math.inf,
) -> tuple[dict[str, str], dict[str, float]]:
    """Which workers are gone, and why: the leader's cleanup decision, without I/O.

    ``now_ms`` and ``beats`` (worker id -> last heartbeat, unix ms) are both Redis'
    clock, read in one transaction; ``holders``: workers that hold jobs (a
    processing list in Redis, or RUNNING jobs in PostgreSQL); ``missing_since``:
    holder -> monotonic time it was first seen without any heartbeat entry;
    ``healthy_for``: how long this leader has seen Redis answer without a stall.
    A worker is gone when its heartbeat is older than ``dead_after`` seconds, or
    when it holds jobs and has had no heartbeat entry at all (Redis restarted, or
    it crashed while leaving) for ``dead_after`` since first seen so; but nobody is
    gone before Redis was seen healthy for ``dead_after``: after a stall every
    worker gets that long to beat again. Returns (gone worker -> reason, the new
    ``missing_since``).
    """
    dead: dict[str, str] = {}
    for worker_id, last in beats.items():
        if now_ms - last > dead_after * 1000:
            dead[worker_id] = f"no heartbeat for {(now_ms - last) / 1000:.1f}s"
    missing = {w: missing_since.get(w, mono) for w in holders - beats.keys()}
    for worker_id, first in missing.items():
        if mono - first > dead_after:
            dead[worker_id] = "no heartbeat"
    if healthy_for < dead_after:
        return {}, missing
    return dead, missing


def healthy_since(since: float | None, last_read: float, started: float, answered: float, gap: float) -> float:
    """When this leader's unbroken view of Redis began (monotonic): ``since`` unless the read just made
    (``started`` -> ``answered``) was slow or came more than ``gap`` after the previous one (``last_read``),
    for then Redis may have stalled unseen and heartbeats could not be written; ``None``: not yet seen."""
    if since is None or answered - started > gap or answered - last_read > gap:
        return answered
    return since


def stall_gap(dead_after: float, heartbeat_interval: float) -> float:
    """The longest pause between two reads of Redis that still counts as seeing it healthy: short enough
    that a worker whose beats were held up that long is still within WORKER_DEAD_AFTER."""
    return max(2 * TICK, dead_after - heartbeat_interval - TICK)


class Leader:
    """Runs the leader steps whenever ``election`` says this server leads."""

    def __init__(self, settings: Settings, store: Store, queue: Queue, election: Election, address: str = "") -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.election = election
        self.address = address
        self._missing_since: dict[str, float] = {}
        self._healthy_since: float | None = None  # see healthy_since()
        self._last_read = 0.0
        self._next_reconcile = 0.0
        self.waiting_check = WaitingCheck()
        self.dead_letter_sweep = DeadLetterSweep()
        self._outage_logged = False
        self.expiry = Expiry(settings.job_retention, store)
        self.stats = StatsKeeper(store, queue)

    async def run(self) -> None:
        while True:
            await self.election.wait_leading()
            token = self.election.token
            try:
                recorded = await self.store.fencing.take(token, self.election.identity)
            except UNAVAILABLE as exc:
                log.error("leader: PostgreSQL unavailable (%s); retrying", exc)
                await asyncio.sleep(TICK)
                continue
            if not recorded:
                log.warning("leader term %d is older than the one PostgreSQL recorded; not acting", token)
                await asyncio.sleep(TICK)
                continue
            self._missing_since.clear()
            self._healthy_since = None
            self._next_reconcile = 0.0
            self.waiting_check.restart()
            self.dead_letter_sweep.restart()
            log.info("leader term %d: running cron, cleanup, reconciliation", token)
            await self._term(token)

    async def _term(self, token: int) -> None:
        while self.election.leading() and self.election.token == token:
            started = time.monotonic()
            try:
                await self.step(token)
                if self._outage_logged:
                    log.info("leader: PostgreSQL and Redis reachable again")
                    self._outage_logged = False
            except Fenced as exc:
                log.warning("leader: stopping this term: %s", exc)
                return
            except UNAVAILABLE as exc:
                if not self._outage_logged:
                    log.error("leader: step failed, will retry: %s", exc)
                    self._outage_logged = True
            await asyncio.sleep(max(0.0, TICK - (time.monotonic() - started)))
        log.info("leader term %d over", token)

    async def step(self, token: int) -> None:
        """One round of every leader duty (each checks it still leads first)."""
        for duty in (self.promote, self.cleanup, self.reconcile, self.cron, self.expire, self.keep_stats):
            if not (self.election.leading() and self.election.token == token):
                return
            await duty(token)

    # --- the duties ---------------------------------------------------------------

    async def promote(self, token: int) -> None:
        """Delayed ids whose time has come go to their lanes (workers do this too; it is atomic)."""
        await self.queue.jobs.promote_due()

    async def cron(self, token: int) -> None:
        """Fire due schedules: one job per (schedule, tick), unique in PostgreSQL, judged by PostgreSQL's
        clock (the one the ticks are stored in), so a step of this host's clock neither stalls nor skips."""
        now = await self.store.liveness.now()
        for sch in await self.store.schedules.due(now):
            if not (self.election.leading() and self.election.token == token):
                return
            await self.fire(token, sch, now)

    async def fire(self, token: int, sch: ScheduleRow, now: dt.datetime) -> list[str]:
        """Handle one due schedule in a fenced transaction; then queue the new jobs."""
        p = cron.plan(sch.cron, sch.timezone, sch.next_run_at, now, self.settings.cron_misfire_grace, sch.catchup)
        created: list[str] = []
        skip = "missed ticks skipped (catchup=skip)" if p.missed_skipped else ""
        last_tick = None
        overlapped = 0
        schedules = self.store.schedules
        async with self.store.fencing.fenced(token) as conn:
            overlap = await schedules.lock(conn, sch.id)
            if overlap is None:
                log.info("schedule %s was deleted meanwhile; nothing fired", sch.name)
                return []
            for tick in p.fire:
                running = await schedules.unfinished(conn, sch.id) if overlap == "forbid" else None
                if running is not None:
                    skip = (
                        f"tick {tick.isoformat()} skipped: job {running.job_id} of this schedule is still "
                        f"{running.status.value} (overlap=forbid)"
                    )
                    log.info("schedule %s: %s", sch.name, skip)
                    overlapped += 1
                    continue
                # Unique by the tick's own record (schedule, tick), never by a key a caller could hold.
                job_id = await schedules.insert_job(conn, sch, tick, self.address)
                last_tick = tick
                if job_id is not None:
                    created.append(job_id)
                else:
                    log.info("schedule %s: tick %s already has its job", sch.name, tick.isoformat())
            advanced = await schedules.advance(
                conn, sch.id, sch.next_run_at, p.next_run, last_tick, created[-1] if created else None, skip
            )
        if not advanced:
            log.info("schedule %s was changed meanwhile; its ticks are handled next round", sch.name)
        else:
            metrics.CRON_TICKS.labels("skipped").inc(overlapped)
            if p.missed_skipped:
                metrics.CRON_TICKS.labels("missed").inc()
        metrics.CRON_TICKS.labels("fired").inc(len(created))
        for job_id in created:
            await self.queue.jobs.enqueue(job_id, lane=keys.lane_of(sch))
            log.info("schedule %s fired: job %s", sch.name, job_id)
        return created

    async def keep_stats(self, token: int) -> None:
        """The charts' data: queue depths and finished jobs per minute (scheduler_server/stats.py)."""
        await self.stats.step()

    async def expire(self, token: int) -> None:
        """Finished jobs older than JOB_RETENTION go, a few small batches a round (scheduler_server/retention.py)."""
        await self.expiry.step(token, lambda: self.election.leading() and self.election.token == token)

    async def cleanup(self, token: int) -> None:
        """Jobs of workers whose heartbeat stopped go back to the queue (the attempt counts).

        Heartbeats are judged by Redis' clock (they are stamped by it), and only once this leader has
        seen Redis answer without a stall for WORKER_DEAD_AFTER: a Redis outage or stall, a leader's own
        pause, or a new term gives every worker that long to beat again."""
        started = time.monotonic()
        try:
            now, beats = await self.queue.liveness.workers_now()
        except UNAVAILABLE:
            self._healthy_since = None
            raise
        answered = time.monotonic()
        s = self.settings
        self._healthy_since = healthy_since(
            self._healthy_since,
            self._last_read,
            started,
            answered,
            stall_gap(s.worker_dead_after, s.heartbeat_interval),
        )
        self._last_read = answered
        holders = set(await self.queue.liveness.processing_owners()) | set(await self.store.liveness.running_workers())
        dead, self._missing_since = choose_dead_workers(
            now_ms=now,
            beats=beats,
            holders=holders,
            dead_after=s.worker_dead_after,
            mono=time.monotonic(),
            missing_since=self._missing_since,
            healthy_for=answered - self._healthy_since,
        )
        for worker_id, why in dead.items():
            if not self.election.leading():
                return
            back, dlq = await recover_worker(
                self.store,
                self.queue,
                worker_id,
                f"worker lost: {why}",
                transaction=lambda: self.store.fencing.fenced(token),
            )
            await self.queue.liveness.forget_worker(
                worker_id,
                older_than_ms=now - int(self.settings.worker_dead_after * 1000),
                why=f"{why}; {back} job(s) back to the queue, {dlq} to the DLQ",
            )
            self._missing_since.pop(worker_id, None)
            if back or dlq:
                log.warning(
                    "worker %s is gone (%s): %d job(s) back to the queue, %d to the DLQ", worker_id, why, back, dlq
                )
            else:
                log.info("worker %s is gone (%s); it held no jobs", worker_id, why)

    async def reconcile(self, token: int) -> None:
        """Rebuild what Redis lost from PostgreSQL: waiting jobs Redis holds nowhere are pushed again,
        dead letters ``dlq_tasks`` lacks go back into it. Every RECONCILE_AFTER / 2.

        Looks at jobs unchanged for RECONCILE_AFTER (so a submit between its INSERT and its push is
        never touched); once Redis lost its data (the ``reconciled`` mark is gone), at every job, so
        that all is back within RECONCILE_AFTER / 2 of the loss: an id pushed twice (a submit in
        flight) is harmless, since a claim is judged by PostgreSQL. Running jobs' processing-list
        entries are not rebuilt: their workers settle by PostgreSQL first, and a gone worker's RUNNING
        jobs are found in PostgreSQL (``cleanup``).
        """
        mono = time.monotonic()
        if mono < self._next_reconcile:
            return
        self._next_reconcile = mono + max(TICK, self.settings.reconcile_after / 2)
        kept = await self.queue.reconcile.kept_data()
        unchanged_for = self.settings.reconcile_after if kept else 0.0
        try:
            if kept:
                await self.waiting_check.run(self.store, self.queue, unchanged_for)
            else:
                await rebuild_waiting(self.store, self.queue)
                self.waiting_check.restart()
                self.dead_letter_sweep.restart()
            await reconcile_dead_letters(self.store, self.queue, unchanged_for, kept=kept)
            if kept:  # after a loss the pass above checked every dead letter
                await self.dead_letter_sweep.run(self.store, self.queue, unchanged_for)
        except DataLost:
            # Found kept, lost since: its pushes (for ids lost one by one, at the head) would put dead letters
            # out of the order they died; the next pass, due now, rebuilds everything as after any loss.
            log.info("reconciliation: Redis lost its data during this pass; it is rebuilt at once")
            self._next_reconcile = mono
