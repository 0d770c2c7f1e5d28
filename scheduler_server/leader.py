"""What the elected server does: its duties (:mod:`scheduler_server.duties`), run while it leads.

Every duty is safe to run twice, by two servers that both (briefly) believe they lead: PostgreSQL writes
run in a transaction fenced by the term's token (``store.fencing.fenced``), cron jobs are unique per
(schedule, tick), and Redis moves check where an id already is. Each duty runs only while
:meth:`~scheduler_server.duties.Term.leading` is true, which turns false before the lease can expire.
"""

from __future__ import annotations

import asyncio
import time

from jobcluster.election import Election
from jobcluster.errors import UNAVAILABLE
from jobcluster.lifecycle import Lifecycle
from jobcluster.queue import Queue
from jobcluster.queue.reconcile import DataLost
from jobcluster.settings import Settings
from jobcluster.store import Fenced, Store
from scheduler_server.cleanup import Cleanup
from scheduler_server.duties import TICK, Duty, Runner, Term, log
from scheduler_server.healer import DeadLetterSweep, WaitingCheck, rebuild_waiting, reconcile_dead_letters
from scheduler_server.retention import Expire
from scheduler_server.stats import ForgetStats, KeepStats


class Leader:
    """Runs the leader's duties whenever ``election`` says this server leads."""

    def __init__(self, settings: Settings, store: Store, queue: Queue, election: Election, address: str = "") -> None:
        self.settings = settings
        self.store = store
        self.election = election
        self.life = Lifecycle(settings, store, queue, address=address, log=log)
        self.reconcile = Reconcile(settings, self.life)
        self.expire = Expire(settings.job_retention, store)
        # In this order, each round (README's diagram lists them so: tests/unit/test_docs.py).
        self.duties = Runner(
            [
                Promote(self.life),
                Cleanup(settings, self.life),
                self.reconcile,
                Cron(self.life),
                self.expire,
                KeepStats(store, queue),
                ForgetStats(store),
            ]
        )
        self._outage_logged = False

    async def run(self) -> None:
        while True:
            await self.election.wait_leading()
            term = Term(self.election.token, self.election)
            try:
                recorded = await self.store.fencing.take(term.token, self.election.identity)
            except UNAVAILABLE as exc:
                log.error("leader: PostgreSQL unavailable (%s); retrying", exc)
                await asyncio.sleep(TICK)
                continue
            if not recorded:
                log.warning("leader term %d is older than the one PostgreSQL recorded; not acting", term.token)
                await asyncio.sleep(TICK)
                continue
            self.duties.restart()
            log.info("leader term %d: running cron, cleanup, reconciliation", term.token)
            await self._term(term)

    async def _term(self, term: Term) -> None:
        while term.leading():
            started = time.monotonic()
            try:
                await self.duties.run_due(term)
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
        log.info("leader term %d over", term.token)


class Promote(Duty):
    """Delayed ids whose time has come go to their lanes (workers do this too; it is atomic)."""

    name = "promote"

    def __init__(self, life: Lifecycle) -> None:
        self.life = life

    async def run_once(self, term: Term) -> None:
        await self.life.queue.jobs.promote_due()


class Cron(Duty):
    """Fire due schedules: one job per (schedule, tick), unique in PostgreSQL, judged by PostgreSQL's clock
    (the one the ticks are stored in), so a step of this host's clock neither stalls nor skips."""

    name = "cron"

    def __init__(self, life: Lifecycle) -> None:
        self.life = life

    async def run_once(self, term: Term) -> None:
        now = await self.life.store.liveness.now()
        for sch in await self.life.store.schedules.due(now):
            if not term.leading():
                return
            await self.life.ticks.fire(term.token, sch, now)


class Reconcile(Duty):
    """Rebuild what Redis lost from PostgreSQL: waiting jobs Redis holds nowhere are pushed again,
    dead letters ``dlq_tasks`` lacks go back into it. Every RECONCILE_AFTER / 2.

    Looks at jobs unchanged for RECONCILE_AFTER (so a submit between its INSERT and its push is
    never touched); once Redis lost its data (the ``reconciled`` mark is gone), at every job, so
    that all is back within RECONCILE_AFTER / 2 of the loss: an id pushed twice (a submit in
    flight) is harmless, since a claim is judged by PostgreSQL. Running jobs' processing-list
    entries are not rebuilt: their workers settle by PostgreSQL first, and a gone worker's RUNNING
    jobs are found in PostgreSQL (``cleanup``).
    """

    name = "reconcile"

    def __init__(self, settings: Settings, life: Lifecycle) -> None:
        self.settings = settings
        self.life = life
        self.interval = max(TICK, settings.reconcile_after / 2)
        self.waiting_check = WaitingCheck()
        self.dead_letter_sweep = DeadLetterSweep()

    def restart(self) -> None:
        self.waiting_check.restart()
        self.dead_letter_sweep.restart()

    async def run_once(self, term: Term) -> float | None:
        store, queue = self.life.store, self.life.queue
        kept = await queue.reconcile.kept_data()
        unchanged_for = self.settings.reconcile_after if kept else 0.0
        try:
            if kept:
                await self.waiting_check.run(store, queue, unchanged_for)
            else:
                await rebuild_waiting(store, queue)
                self.restart()
            await reconcile_dead_letters(store, queue, unchanged_for, kept=kept)
            if kept:  # after a loss the pass above checked every dead letter
                await self.dead_letter_sweep.run(store, queue, unchanged_for)
        except DataLost:
            # Found kept, lost since: its pushes (for ids lost one by one, at the head) would put dead letters
            # out of the order they died; the next pass, due now, rebuilds everything as after any loss.
            log.info("reconciliation: Redis lost its data during this pass; it is rebuilt at once")
            return 0.0
        return None
