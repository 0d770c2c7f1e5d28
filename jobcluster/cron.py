"""Cron expressions (croniter) and which ticks a schedule fires: pure functions, no I/O.

Expressions have 5 fields (minute hour day month weekday) or 6, the sixth being
seconds (``* * * * * */10``: every 10 seconds). They are read in the
schedule's IANA timezone (``Europe/Paris``; default ``UTC``), so ``0 9 * * *``
means 09:00 local time across daylight-saving changes.

A tick is *on time* while it is at most CRON_MISFIRE_GRACE old: it always
fires. Older ticks were *missed* (no leader, or the cluster was down): the
schedule's ``catchup`` policy says ``skip`` (the default: they never run) or
``once`` (one job for the latest missed tick).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from croniter import CroniterBadDateError, croniter

CATCHUP_POLICIES = ("skip", "once")
MAX_EXPRESSION_CHARS = 200
MAX_TIMEZONE_CHARS = 64
#: How many upcoming ticks are looked at for the minimum interval.
INTERVAL_SAMPLE = 100
OVERLAP_POLICIES = ("allow", "forbid")
UTC = dt.timezone.utc


class InvalidSchedule(ValueError):
    """A cron expression, timezone or policy that cannot be used; the message names it."""


def zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(f"unknown timezone {name!r} (use an IANA name such as 'UTC' or 'Europe/Paris')") from None


def validate(
    expr: str,
    timezone: str,
    catchup: str = "skip",
    overlap: str = "allow",
    min_interval: float = 0.0,
    now: dt.datetime | None = None,
) -> None:
    """Refuse what cannot be used: a bad expression or timezone, one that never fires, ticks closer
    together than ``min_interval`` seconds (CRON_MIN_INTERVAL), an unknown policy."""
    expr = expr.strip()
    if not expr:
        raise InvalidSchedule("cron expression is empty")
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise InvalidSchedule(f"cron expression is {len(expr)} characters, over the limit of {MAX_EXPRESSION_CHARS}")
    fields = len(expr.split())
    if fields not in (5, 6) or not croniter.is_valid(expr):
        raise InvalidSchedule(
            f"invalid cron expression {expr!r}: expected 5 fields (minute hour day month "
            f"weekday) or 6 (with seconds last), each a valid value, range, list or step"
        )
    if len(timezone) > MAX_TIMEZONE_CHARS:
        raise InvalidSchedule(f"timezone is over the limit of {MAX_TIMEZONE_CHARS} characters")
    zone(timezone)
    _check_ticks(expr, timezone, min_interval, now or dt.datetime.now(UTC))
    if catchup not in CATCHUP_POLICIES:
        raise InvalidSchedule(f"catchup must be one of {', '.join(CATCHUP_POLICIES)}, got {catchup!r}")
    if overlap not in OVERLAP_POLICIES:
        raise InvalidSchedule(f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, got {overlap!r}")


def _check_ticks(expr: str, timezone: str, min_interval: float, now: dt.datetime) -> None:
    """The expression fires, and its next ticks are at least ``min_interval`` seconds apart."""
    try:
        it = croniter(expr, now.astimezone(zone(timezone)))
        ticks: list[dt.datetime] = [it.get_next(dt.datetime) for _ in range(INTERVAL_SAMPLE)]
    except CroniterBadDateError:
        raise InvalidSchedule(f"cron expression {expr!r} never fires (no such date, e.g. 30 February)") from None
    gap = min((b - a).total_seconds() for a, b in zip(ticks, ticks[1:]))
    if gap < min_interval:
        raise InvalidSchedule(
            f"cron expression {expr!r} fires {gap:g}s apart; the minimum is {min_interval:g}s (CRON_MIN_INTERVAL)"
        )


def next_tick(expr: str, timezone: str, after: dt.datetime) -> dt.datetime:
    """The first tick strictly after ``after`` (UTC out)."""
    local = after.astimezone(zone(timezone))
    tick: dt.datetime = croniter(expr, local).get_next(dt.datetime)
    return tick.astimezone(UTC)


def _latest_at_or_before(expr: str, timezone: str, moment: dt.datetime) -> dt.datetime:
    nxt = next_tick(expr, timezone, moment - dt.timedelta(microseconds=1))
    if nxt == moment:
        return moment
    local = moment.astimezone(zone(timezone))
    tick: dt.datetime = croniter(expr, local).get_prev(dt.datetime)
    return tick.astimezone(UTC)


@dataclass(frozen=True)
class Plan:
    fire: list[dt.datetime]  # ticks to create a job for, oldest first
    next_run: dt.datetime  # the schedule's next tick after now
    missed_skipped: bool  # some missed ticks were skipped by the catchup policy


def plan(
    expr: str, timezone: str, next_run: dt.datetime, now: dt.datetime, grace: float, catchup: str, limit: int = 100
) -> Plan:
    """Which ticks of a schedule due at ``next_run`` fire at ``now``."""
    if next_run > now:
        return Plan([], next_run, False)
    oldest_on_time = now - dt.timedelta(seconds=grace)
    fire: list[dt.datetime] = []
    skipped = False
    if next_run < oldest_on_time:
        latest_missed = _latest_at_or_before(expr, timezone, oldest_on_time - dt.timedelta(microseconds=1))
        if latest_missed >= next_run:
            if catchup == "once":
                fire.append(latest_missed)
            else:
                skipped = True
        start = oldest_on_time
    else:
        start = next_run
    tick = next_tick(expr, timezone, start - dt.timedelta(microseconds=1))
    while tick <= now and len(fire) < limit:
        fire.append(tick)
        tick = next_tick(expr, timezone, tick)
    return Plan(fire, next_tick(expr, timezone, now), skipped)
