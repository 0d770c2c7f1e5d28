import datetime as dt

import pytest

from jobcluster import cron

UTC = dt.timezone.utc


def t(h, m, s=0, day=23):
    return dt.datetime(2026, 11, day, h, m, s, tzinfo=UTC)


@pytest.mark.parametrize(
    "expr, tz, fragment",
    [
        ("", "UTC", "empty"),
        ("61 * * * *", "UTC", "invalid cron expression '61 * * * *'"),
        ("* * *", "UTC", "invalid cron expression"),
        ("*/5 * * * *", "Mars/Olympus", "unknown timezone 'Mars/Olympus'"),
    ],
)
def test_invalid_schedules_name_the_problem(expr, tz, fragment):
    with pytest.raises(cron.InvalidSchedule, match=fragment.replace("*", r"\*")):
        cron.validate(expr, tz)


def test_policies_are_checked():
    with pytest.raises(cron.InvalidSchedule, match="catchup"):
        cron.validate("* * * * *", "UTC", catchup="all")
    with pytest.raises(cron.InvalidSchedule, match="overlap"):
        cron.validate("* * * * *", "UTC", overlap="queue")


def test_on_time_tick_fires_once_and_next_run_moves_on():
    p = cron.plan("*/5 * * * *", "UTC", next_run=t(10, 5), now=t(10, 5, 3), grace=30, catchup="skip")
    assert p.fire == [t(10, 5)] and p.next_run == t(10, 10) and not p.missed_skipped


def test_not_due_fires_nothing():
    p = cron.plan("*/5 * * * *", "UTC", next_run=t(10, 10), now=t(10, 9), grace=30, catchup="skip")
    assert p.fire == [] and p.next_run == t(10, 10)


def test_missed_ticks_skip_by_default_and_once_runs_the_latest():
    skip = cron.plan("*/5 * * * *", "UTC", next_run=t(9, 0), now=t(10, 7), grace=30, catchup="skip")
    assert skip.fire == [] and skip.missed_skipped and skip.next_run == t(10, 10)
    once = cron.plan("*/5 * * * *", "UTC", next_run=t(9, 0), now=t(10, 7), grace=30, catchup="once")
    assert once.fire == [t(10, 5)] and once.next_run == t(10, 10)


def test_a_tick_within_the_grace_after_a_failover_still_fires():
    p = cron.plan("*/5 * * * *", "UTC", next_run=t(10, 5), now=t(10, 5, 12), grace=30, catchup="skip")
    assert p.fire == [t(10, 5)]


def test_timezone_is_applied():
    # 09:00 in Paris is 08:00 UTC in November (CET).
    assert cron.next_tick("0 9 * * *", "Europe/Paris", t(7, 0)) == t(8, 0)


def test_seconds_field():
    assert cron.next_tick("* * * * * */10", "UTC", t(10, 0, 1)) == t(10, 0, 10)
