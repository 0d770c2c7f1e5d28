"""The leader's cleanup duty: the jobs of workers whose heartbeat stopped go back to the queue (the
attempt counts), through the lifecycle (:meth:`jobcluster.lifecycle.Lifecycle.recover`)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Set

from jobcluster.errors import UNAVAILABLE
from jobcluster.lifecycle import Lifecycle
from jobcluster.settings import Settings
from scheduler_server.duties import TICK, Duty, Term, log


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


class Cleanup(Duty):
    """Jobs of workers whose heartbeat stopped go back to the queue (the attempt counts).

    Heartbeats are judged by Redis' clock (they are stamped by it), and only once this leader has
    seen Redis answer without a stall for WORKER_DEAD_AFTER: a Redis outage or stall, a leader's own
    pause, or a new term gives every worker that long to beat again."""

    name = "cleanup"

    def __init__(self, settings: Settings, life: Lifecycle) -> None:
        self.settings = settings
        self.life = life
        self._missing_since: dict[str, float] = {}
        self._healthy_since: float | None = None  # see healthy_since()
        self._last_read = 0.0

    def restart(self) -> None:
        self._missing_since.clear()
        self._healthy_since = None

    async def run_once(self, term: Term) -> None:
        queue, store = self.life.queue, self.life.store
        started = time.monotonic()
        try:
            now, beats = await queue.liveness.workers_now()
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
        holders = set(await queue.liveness.processing_owners()) | set(await store.liveness.running_workers())
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
            if not term.leading():
                return
            back, dlq = await self.life.recover(
                worker_id, f"worker lost: {why}", transaction=lambda: store.fencing.fenced(term.token)
            )
            await queue.liveness.forget_worker(
                worker_id,
                older_than_ms=now - int(s.worker_dead_after * 1000),
                why=f"{why}; {back} job(s) back to the queue, {dlq} to the DLQ",
            )
            self._missing_since.pop(worker_id, None)
            if back or dlq:
                log.warning(
                    "worker %s is gone (%s): %d job(s) back to the queue, %d to the DLQ", worker_id, why, back, dlq
                )
            else:
                log.info("worker %s is gone (%s); it held no jobs", worker_id, why)
