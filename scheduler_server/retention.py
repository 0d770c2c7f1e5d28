"""JOB_RETENTION, a leader duty: finished jobs older than the setting are deleted with their attempts.

A little each leader round, so that neither the other duties nor submissions wait on it:
batches of BATCH rows, each its own short transaction fenced by the leader's term, a pause
between them, and at most ROUND_BUDGET seconds of it per round. When a batch comes back
short, everything expired is gone, and the next look is IDLE_EVERY later. What is deleted
and what is kept (dead letters, each schedule's last job) is in ``jobcluster/sql/retention.sql``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from jobcluster.store import Store
from scheduler_server.duties import Duty, Term

log = logging.getLogger("leader")

#: Rows a statement deletes at most (its locks and its WAL stay small).
BATCH = 1000
#: Pause between two batches (seconds): submits and claims get the disk in between.
PAUSE = 0.05
#: Most seconds of deleting per leader round.
ROUND_BUDGET = 0.1
#: How long after finding nothing (more) to delete it looks again (seconds).
IDLE_EVERY = 60.0


class Expiry:
    """Deletes expired jobs for the leader, a bounded amount each time :meth:`step` is called; when a step
    deleted everything expired (``finished``), its duty (:class:`Expire`) waits ``idle_every``."""

    def __init__(
        self,
        retention: float,
        store: Store,
        *,
        batch: int = BATCH,
        pause: float = PAUSE,
        budget: float = ROUND_BUDGET,
        idle_every: float = IDLE_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retention = retention  # seconds; 0: off
        self.store = store
        self.batch = batch
        self.pause = pause
        self.budget = budget
        self.idle_every = idle_every
        self._clock = clock
        #: The last step deleted everything expired (its runner looks again only after idle_every).
        self.finished = False
        #: Jobs deleted by this server since it started.
        self.deleted = 0

    async def step(self, token: int, leading: Callable[[], bool]) -> int:
        """Delete expired jobs for up to the round's budget while ``leading()``; how many went."""
        if self.retention <= 0:
            return 0
        ends = self._clock() + self.budget
        gone = 0
        self.finished = False
        while leading():
            async with self.store.fencing.fenced(token) as conn:
                n = await self.store.retention.delete_expired(conn, self.retention, self.batch)
            gone += n
            if n < self.batch:
                self.finished = True
                break
            if self._clock() >= ends:
                break  # more next round
            await asyncio.sleep(self.pause)
        if gone:
            self.deleted += gone
            log.info("retention: %d finished job(s) older than JOB_RETENTION deleted", gone)
        return gone


class Expire(Duty):
    """Finished jobs older than JOB_RETENTION go, a few small batches a round; IDLE_EVERY after nothing is left."""

    name = "expire"

    def __init__(self, retention: float, store: Store, **options: Any) -> None:
        self.expiry = Expiry(retention, store, **options)

    async def run_once(self, term: Term) -> float | None:
        await self.expiry.step(term.token, term.leading)
        return self.expiry.idle_every if self.expiry.finished else None
