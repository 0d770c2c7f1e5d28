"""A worker's heartbeat in Redis (stamped by Redis' clock): what the leader judges liveness by."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from jobcluster.errors import UNAVAILABLE
from jobcluster.lifecycle.attempts import Retry
from jobcluster.queue import Queue
from jobcluster.settings import Settings

log = logging.getLogger("worker")


class WorkerIdInUse(RuntimeError):
    """Another live worker heartbeats under the same WORKER_ID."""


class Heartbeat:
    """Beats for one worker; ``info()`` says what each beat carries (slots busy, jobs done...)."""

    def __init__(
        self, settings: Settings, queue: Queue, worker_id: str, info: Callable[[], Mapping[str, str | int | float]]
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.worker_id = worker_id
        self.info = info

    async def check_id_free(self, retrying: Retry) -> None:
        """WorkerIdInUse when a live worker beats under this id."""
        now, beats = await retrying("read heartbeats", self.queue.liveness.workers_now)
        last = beats.get(self.worker_id)
        if last is not None and now - last < 3000 * self.settings.heartbeat_interval:
            raise WorkerIdInUse(
                f"worker id {self.worker_id!r} is in use by a live worker "
                f"(heartbeat {now - last} ms ago); set another WORKER_ID"
            )

    async def once(self, within: float | None = None) -> None:
        info = {"host": socket.gethostname(), "pid": os.getpid(), **self.info()}
        await self.queue.liveness.heartbeat(
            self.worker_id, info, ttl=max(10.0, 10 * self.settings.heartbeat_interval), within=within
        )

    async def loop(self) -> None:
        """Beat every HEARTBEAT_INTERVAL, each beat bounded by about that long: a beat that fails is not
        retried with the outage backoff (the next one is due soon anyway), so beats resume within one
        interval of Redis answering again, and nothing else a worker does can hold them up."""
        interval = self.settings.heartbeat_interval
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                # Bounded, so a stalled Redis cannot hold the next beat back for long; not below 0.5 s,
                # so a loaded machine does not drop beats that were merely slow.
                await self.once(within=max(interval, 0.5))
            except UNAVAILABLE as exc:  # TimeoutError is one of them
                if not failing:
                    log.error("heartbeat failed, retrying every %gs: %s", interval, exc or type(exc).__name__)
                failing = True
                continue
            if failing:
                log.info("heartbeats are getting through again")
                failing = False
