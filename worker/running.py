"""The attempts a worker runs now: one registry keyed by (job id, attempt).

A rerun of a job may start in another slot before the old attempt of the same job has ended (the
leader declared this worker dead, and the job came back to it), so the job id alone is not a key. What
each entry holds: the attempt as claimed, its output so far (for WatchJob), the event that stops it,
and whether it was stopped because the job moved on (fenced: it records nothing).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from jobcluster.lifecycle.attempts import Ending
from jobcluster.rows import Claimed
from worker.shell import OutputTail

Key = tuple[str, int]


@dataclass(eq=False)
class Attempt:
    """One running attempt."""

    claimed: Claimed
    tail: OutputTail
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    fenced: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> Key:
        return self.claimed.job_id, self.claimed.attempt

    @property
    def ending(self) -> Ending:
        """How it ended, once its command has: fenced off, stopped by a cancel, or ran to its end."""
        if self.fenced:
            return Ending.FENCED
        return Ending.CANCELLED if self.stop.is_set() else Ending.RAN


class Running:
    """The attempts running now."""

    def __init__(self) -> None:
        self._attempts: dict[Key, Attempt] = {}

    def start(self, claimed: Claimed, output_limit: int) -> Attempt:
        attempt = Attempt(claimed, OutputTail(output_limit))
        self._attempts[attempt.key] = attempt
        return attempt

    def end(self, attempt: Attempt) -> None:
        if self._attempts.get(attempt.key) is attempt:
            del self._attempts[attempt.key]

    def get(self, key: Key) -> Attempt | None:
        return self._attempts.get(key)

    def __iter__(self) -> Iterator[Attempt]:
        return iter(list(self._attempts.values()))

    def __len__(self) -> int:
        return len(self._attempts)

    def newest_by_job(self) -> dict[str, Attempt]:
        """Job id -> its newest running attempt (what WatchJob shows and a cancel stops first)."""
        out: dict[str, Attempt] = {}
        for attempt in self._attempts.values():
            job_id = attempt.claimed.job_id
            if job_id not in out or out[job_id].claimed.attempt < attempt.claimed.attempt:
                out[job_id] = attempt
        return out

    def of_jobs(self, job_ids: set[str]) -> list[Attempt]:
        """Every running attempt of these jobs."""
        return [a for a in self._attempts.values() if a.claimed.job_id in job_ids]
