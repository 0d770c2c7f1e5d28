"""This host's wall clock, which decides nothing between processes, with a skew tests can inject.

Decisions that two processes must agree on read a store's clock instead (docs/design.md, "Clocks"):
PostgreSQL ``now()`` for due times, claims and cron ticks; Redis ``TIME`` for heartbeats and the
delayed set's scores. This host's clock is only for what a person reads (log lines, "started at")
and for checks of user input (a ``run_at`` too far ahead). ``TEST_CLOCK_SKEW_MS`` shifts it, so a
test can run one program as if its host's clock were wrong and show that nothing changes.
"""

from __future__ import annotations

import datetime as dt
import time

_skew_ms = 0


def set_skew_ms(skew_ms: int) -> None:
    """Make this process's wall clock read ``skew_ms`` ahead (negative: behind); TEST_CLOCK_SKEW_MS."""
    global _skew_ms
    _skew_ms = skew_ms


def wall_ms() -> int:
    """This host's wall clock, unix milliseconds (skewed when a test asked)."""
    return int(time.time() * 1000) + _skew_ms


def wall_now() -> dt.datetime:
    """This host's wall clock as an aware UTC datetime (skewed when a test asked)."""
    return dt.datetime.fromtimestamp(wall_ms() / 1000, dt.timezone.utc)
