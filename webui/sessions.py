"""Login state, in memory: sessions with an expiry, failed logins per address and in all, tokens lately verified.

All three take their time from an injected clock (``time.monotonic`` in the
program, a settable one in tests) and are bounded in size, so a flood of
logins or made-up tokens cannot grow them without limit. A restart logs
everyone out.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
MAX_SESSIONS = 10_000
#: Failed logins allowed per client address within FAILURE_WINDOW seconds.
MAX_FAILURES = 5
FAILURE_WINDOW = 60.0
MAX_TRACKED_ADDRESSES = 10_000
#: Failed logins from all addresses together within FAILURE_WINDOW before every login is slowed down ...
GLOBAL_FREE_FAILURES = 30
#: ... by this much more for each one beyond, up to GLOBAL_MAX_DELAY: a slowdown, never a refusal.
GLOBAL_DELAY_STEP = 0.1
GLOBAL_MAX_DELAY = 3.0
#: How long a bearer token the servers accepted is trusted before it is checked again.
TOKEN_TRUST = 60.0
MAX_TRUSTED_TOKENS = 1_000


@dataclass(frozen=True)
class Session:
    """One logged-in browser: how it logged in and, for a token login, the token its calls carry."""

    id: str
    how: str  # "password" or "token"
    token: str | None
    expires: float


class Sessions:
    """Session ids (random, 256 bits) -> :class:`Session`, each expiring ``ttl`` seconds after login."""

    def __init__(self, ttl: float, clock: Clock) -> None:
        self.ttl = ttl
        self.clock = clock
        self._by_id: dict[str, Session] = {}

    def start(self, how: str, token: str | None = None) -> Session:
        """A new session; when full, the expired ones go, then the oldest."""
        now = self.clock()
        if len(self._by_id) >= MAX_SESSIONS:
            self._by_id = {k: s for k, s in self._by_id.items() if s.expires > now}
            while len(self._by_id) >= MAX_SESSIONS:
                del self._by_id[next(iter(self._by_id))]
        session = Session(secrets.token_urlsafe(32), how, token, now + self.ttl)
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of this id; an expired one is forgotten and gives None."""
        session = self._by_id.get(session_id or "")
        if session is None:
            return None
        if session.expires <= self.clock():
            del self._by_id[session.id]
            return None
        return session

    def end(self, session_id: str | None) -> None:
        self._by_id.pop(session_id or "", None)


class TooManyFailures(Exception):
    """An address has used up its tries for now; it may try again in ``wait`` seconds."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"try again in {wait:.0f} s")
        self.wait = wait


class FailedLogins:
    """Failed logins per client address and from all of them, counted before each try is checked.

    :meth:`begin` counts a try before its password or token is looked at, and refuses it
    (:class:`TooManyFailures`) when the address's failures and tries still being checked reach ``limit``:
    so concurrent tries get no more than sequential ones. :meth:`end` keeps it as a failure or drops it.
    Failures from all addresses together only slow every try down (:meth:`begin`'s delay), so a crowd of
    addresses cannot lock anyone out.
    """

    def __init__(self, clock: Clock, limit: int = MAX_FAILURES, window: float = FAILURE_WINDOW) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self._times: dict[str, deque[float]] = {}
        self._checking: dict[str, int] = {}  # address -> tries begun and not yet ended
        self._all: deque[float] = deque(maxlen=GLOBAL_FREE_FAILURES + int(GLOBAL_MAX_DELAY / GLOBAL_DELAY_STEP))

    def _recent(self, times: deque[float]) -> deque[float]:
        cutoff = self.clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
        return times

    def wait(self, address: str) -> float:
        """Seconds until ``address`` may try again, if its tries being checked all fail; 0 when it may now."""
        now = self.clock()
        times = [*self._recent(self._times.get(address, deque())), *[now] * self._checking.get(address, 0)]
        if len(times) < self.limit:
            return 0.0
        return times[-self.limit] + self.window - now

    def begin(self, address: str) -> float:
        """Count a try from ``address`` before it is checked; the seconds it waits first (the slowdown of all).

        :class:`TooManyFailures` when the address may not try now; then nothing is counted.
        """
        wait = self.wait(address)
        if wait > 0:
            raise TooManyFailures(wait)
        self._checking[address] = self._checking.get(address, 0) + 1
        beyond = len(self._recent(self._all)) - GLOBAL_FREE_FAILURES + 1
        return min(GLOBAL_MAX_DELAY, beyond * GLOBAL_DELAY_STEP) if beyond > 0 else 0.0

    def end(self, address: str, failed: bool) -> None:
        """The try :meth:`begin` counted is over: kept as a failure when ``failed``, else forgotten."""
        left = self._checking.pop(address, 1) - 1
        if left > 0:
            self._checking[address] = left
        if failed:
            self.failed(address)

    def failed(self, address: str) -> None:
        """Count one failed login from ``address``."""
        now = self.clock()
        times = self._recent(self._times.get(address, deque()))
        times.append(now)
        self._times[address] = times
        self._all.append(now)
        if len(self._times) > MAX_TRACKED_ADDRESSES:
            self._times = {a: t for a, t in self._times.items() if self._recent(t)}
            while len(self._times) > MAX_TRACKED_ADDRESSES:
                del self._times[next(iter(self._times))]


class TrustedTokens:
    """Bearer tokens the servers accepted lately (kept as SHA-256), so each API call need not check again."""

    def __init__(self, clock: Clock, trust: float = TOKEN_TRUST) -> None:
        self.clock = clock
        self.trust = trust
        self._until: dict[bytes, float] = {}

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def trusted(self, token: str) -> bool:
        until = self._until.get(self._key(token))
        return until is not None and until > self.clock()

    def add(self, token: str) -> None:
        now = self.clock()
        if len(self._until) >= MAX_TRUSTED_TOKENS:
            self._until = {k: t for k, t in self._until.items() if t > now}
            while len(self._until) >= MAX_TRUSTED_TOKENS:
                del self._until[next(iter(self._until))]
        self._until[self._key(token)] = now + self.trust
