"""The chaos checks see each broken promise (devtools/chaos_checks.py), from made-up facts."""

from __future__ import annotations

import datetime as dt

from devtools.chaos_checks import AttemptFact, Facts, JobFact, run_checks

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def facts(**changes: object) -> Facts:
    base = Facts(
        jobs=[JobFact("a", "instant", "SUCCEEDED", 5), JobFact("b", "fail", "FAILED", 1)]
        + [JobFact(f"c{i}", "cron", "SUCCEEDED", 5, T0 + dt.timedelta(seconds=2 * i), T0) for i in range(1, 4)],
        attempts=[AttemptFact("a", 1, ""), AttemptFact("b", 1, "exit 3"), AttemptFact("b", 2, "exit 3")],
        log_lines=[
            "a 1 start 10.0",
            "a 1 end 10.1",
            "b 1 start 11.0",
            "b 1 end 11.1",
            "b 2 start 12.0",
            "b 2 end 12.1",
        ],
        dlq=["b"],
        submitted=2,
        cron_window=(T0, T0 + dt.timedelta(seconds=6)),
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def violations(f: Facts) -> dict[str, int]:
    return {c.name: c.violations for c in run_checks(f) if c.violations}


def test_a_clean_run_has_no_violation() -> None:
    assert violations(facts()) == {}


def test_each_broken_promise_is_counted_under_its_check() -> None:
    f = facts()
    assert violations(facts(log_lines=f.log_lines + ["a 1 start 13.0"])) == {"no (job, attempt) executed twice": 1}
    assert violations(facts(log_lines=f.log_lines + ["a 2 start 13.0"])) == {"no execution left unrecorded": 1}
    overlap = ["b 1 start 11.0", "b 2 start 11.5", "b 1 end 12.0", "b 2 end 12.1", "a 1 start 1.0"]
    assert violations(facts(log_lines=overlap)) == {"no two attempts of a job overlap": 1}
    assert violations(facts(dlq=[])) == {"dlq_tasks equals the FAILED jobs": 1}
    assert violations(facts(dlq=["b", "b", "a"])) == {"dlq_tasks equals the FAILED jobs": 2}
    assert violations(facts(jobs=f.jobs[:3] + f.jobs[4:])) == {"cron fired one job per tick": 1}
    assert violations(facts(orphans=["a"])) == {"no job process left running": 1}
    assert violations(facts(submitted=3)) == {"every job created once": 1}


def test_an_unexpected_status_is_excused_only_by_lost_workers() -> None:
    f = facts()
    failed = [JobFact("a", "instant", "FAILED", 0), *f.jobs[1:]]
    lost = [AttemptFact("a", 1, "worker lost: no heartbeat"), *f.attempts[1:]]
    assert violations(facts(jobs=failed, dlq=["a", "b"])) == {"every job has its expected status": 1}
    assert violations(facts(jobs=failed, attempts=lost, dlq=["a", "b"])) == {}
    running = [JobFact("a", "instant", "RUNNING", 5), *f.jobs[1:]]
    assert violations(facts(jobs=running)) == {"every job terminal": 1}


def test_a_tick_is_excused_only_when_the_catchup_policy_skipped_it() -> None:
    late = [JobFact("c9", "cron", "SUCCEEDED", 5, T0 + dt.timedelta(seconds=40), T0 + dt.timedelta(seconds=40))]
    window = (T0, T0 + dt.timedelta(seconds=40))
    # ticks 2..38 s missing: those older than CRON_MISFIRE_GRACE (30 s) when the next job was made are skipped
    found = {
        c.name: c
        for c in run_checks(facts(jobs=late, attempts=[], log_lines=[], dlq=[], submitted=0, cron_window=window))
    }
    assert found["cron fired one job per tick"].violations == 15  # 10 s..38 s: within the grace, so missed
