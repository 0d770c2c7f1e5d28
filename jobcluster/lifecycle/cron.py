"""Firing a cron schedule's due ticks: one job per (schedule, tick), unique in PostgreSQL.

The schedule is locked, its ticks planned (overlap and catch-up policies), their jobs inserted and the
schedule advanced, in one transaction fenced by the leader's term; then the new jobs' ids are pushed. A
push that fails after the commit is owed (:mod:`.policy`): the leader's reconciliation pushes them.
"""

from __future__ import annotations

import datetime as dt
import logging

from jobcluster import cron, keys, metrics
from jobcluster.queue import Queue
from jobcluster.rows import ScheduleRow
from jobcluster.store import Store


class Ticks:
    """Fires schedules' due ticks."""

    def __init__(self, store: Store, queue: Queue, address: str, misfire_grace: float, log: logging.Logger) -> None:
        self.store = store
        self.queue = queue
        self.address = address
        self.misfire_grace = misfire_grace
        self.log = log

    async def fire(self, token: int, sch: ScheduleRow, now: dt.datetime) -> list[str]:
        """Handle one due schedule in a transaction fenced by leader term ``token`` (Fenced when a newer
        term began); then queue the new jobs. Returns their ids."""

        p = cron.plan(sch.cron, sch.timezone, sch.next_run_at, now, self.misfire_grace, sch.catchup)
        created: list[str] = []
        skip = "missed ticks skipped (catchup=skip)" if p.missed_skipped else ""
        last_tick = None
        overlapped = 0
        schedules = self.store.schedules
        async with self.store.fencing.fenced(token) as conn:
            overlap = await schedules.lock(conn, sch.id)
            if overlap is None:
                self.log.info("schedule %s was deleted meanwhile; nothing fired", sch.name)
                return []
            for tick in p.fire:
                running = await schedules.unfinished(conn, sch.id) if overlap == "forbid" else None
                if running is not None:
                    skip = (
                        f"tick {tick.isoformat()} skipped: job {running.job_id} of this schedule is still "
                        f"{running.status.value} (overlap=forbid)"
                    )
                    self.log.info("schedule %s: %s", sch.name, skip)
                    overlapped += 1
                    continue
                # Unique by the tick's own record (schedule, tick), never by a key a caller could hold.
                job_id = await schedules.insert_job(conn, sch, tick, self.address)
                last_tick = tick
                if job_id is not None:
                    created.append(job_id)
                else:
                    self.log.info("schedule %s: tick %s already has its job", sch.name, tick.isoformat())
            advanced = await schedules.advance(
                conn, sch.id, sch.next_run_at, p.next_run, last_tick, created[-1] if created else None, skip
            )
        if not advanced:
            self.log.info("schedule %s was changed meanwhile; its ticks are handled next round", sch.name)
        else:
            metrics.CRON_TICKS.labels("skipped").inc(overlapped)
            if p.missed_skipped:
                metrics.CRON_TICKS.labels("missed").inc()
        metrics.CRON_TICKS.labels("fired").inc(len(created))
        for job_id in created:
            await self.queue.jobs.enqueue(job_id, lane=keys.lane_of(sch))
            self.log.info("schedule %s fired: job %s", sch.name, job_id)
        return created
