"""The leader's duties as objects, under one small runner.

Each duty has a name, an interval and ``run_once(term)``; :class:`Runner` runs the ones that are due, in
order, while the term still leads, and is the one throttle: a duty runs again ``interval`` seconds after
it began, or after the delay its ``run_once`` returned (0: at once, the next round). :class:`Term` holds
the one "still leading this term" check. The transitions a duty makes are the lifecycle's
(:mod:`jobcluster.lifecycle`); River's ``internal/maintenance/`` services are the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jobcluster.election import Election

log = logging.getLogger("leader")

#: How often the leader runs a round of its duties (seconds); the shortest interval a duty can have.
TICK = 0.5


@dataclass(frozen=True)
class Term:
    """One leader term: its fencing token, and whether this server still leads it."""

    token: int
    election: Election

    def leading(self) -> bool:
        """True while this server leads, in this term (a new term of the same server is another term)."""
        return self.election.leading() and self.election.token == self.token


class Duty:
    """One thing the leader does now and then. Subclasses set ``name`` and ``interval`` and write
    :meth:`run_once`."""

    name = "duty"
    #: Seconds from one run's start to the next (the runner's round, TICK, is the shortest).
    interval = 0.0

    async def run_once(self, term: Term) -> float | None:
        """Do the duty once for ``term`` (checking ``term.leading()`` between steps that take long).
        Returns how many seconds until it is due again, or None for its interval."""
        raise NotImplementedError

    def restart(self) -> None:
        """A new term begins: forget what the last one had seen."""


class Runner:
    """Runs each due duty in order while the term leads: the one throttle of the leader."""

    def __init__(self, duties: Sequence[Duty], clock: Callable[[], float] = time.monotonic) -> None:
        self.duties = list(duties)
        self._clock = clock
        self._due: dict[str, float] = {}
        self.runs: dict[str, int] = {duty.name: 0 for duty in self.duties}  # runs begun, by duty (tests wait on it)

    def restart(self) -> None:
        """A new term: every duty is due at once and starts afresh."""
        self._due.clear()
        for duty in self.duties:
            duty.restart()

    def due_now(self, name: str) -> None:
        """Run the duty ``name`` in the next round, whatever its interval."""
        self._due[name] = 0.0

    async def run_due(self, term: Term) -> None:
        """One round: each duty whose time has come, in order; stops as soon as the term is over."""
        for duty in self.duties:
            if not term.leading():
                return
            started = self._clock()
            if started < self._due.get(duty.name, 0.0):
                continue
            self._due[duty.name] = started + duty.interval  # set first: a failing duty waits its interval too
            self.runs[duty.name] += 1
            delay = await duty.run_once(term)
            if delay is not None:
                self._due[duty.name] = started + delay
