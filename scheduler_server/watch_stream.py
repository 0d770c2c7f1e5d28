"""A WatchJob stream's mailbox (:class:`Watch`) and what it holds (:class:`Snapshot`); fed by the hub
in ``scheduler_server/watch.py``.

A mailbox of one: the latest snapshot of its job, overwritten by newer ones, so a slow reader
never holds up the others; it simply skips states it was too slow to see (the final one is
never skipped, as it is the last).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from jobcluster.aio import wait_within
from jobcluster.model import TERMINAL
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.queue.live_output import Live
from jobcluster.rows import JobRow
from scheduler_server import convert


@dataclass(frozen=True)
class Snapshot:
    """A watched job as the hub last saw it, and the event that shows it (built once for all streams)."""

    job: JobRow
    live_bytes: int  # bytes the running attempt has written (0: none published)
    event: pb.JobEvent

    @property
    def final(self) -> bool:
        return self.job.status in TERMINAL

    @classmethod
    def of(cls, job: JobRow, live: Live | None) -> Snapshot:
        final = job.status in TERMINAL
        event = pb.JobEvent(job=convert.job_status(job), final=final)
        live = live.of(job.attempts) if live else None  # a dead worker's attempt 1 is not attempt 2's output
        if live:
            event.live_output, event.live_output_bytes = live[1], live[0]
        return cls(job, live[0] if live else 0, event)


class Watch:
    """One stream's mailbox: the latest snapshot of its job, or the error that ends it."""

    def __init__(self, job_id: str, deadline: float, end_reason: str = "the stream's life is over") -> None:
        self.job_id = job_id
        self.deadline = deadline  # loop time at which the stream's life is over
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
