"""The promises ``make chaos`` checks after its run, from PostgreSQL, Redis and the jobs' side-effect log.

Each job's command appends ``$JOB_ID $JOB_ATTEMPT start <unix time>`` when it
begins and ``... end <unix time>`` when it is done (killed attempts write no end).
The checks are pure functions of those facts, so they can be tested alone.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

EXPECTED = {
    "instant": "SUCCEEDED",
    "sleep": "SUCCEEDED",
    "flaky": "SUCCEEDED",
    "fail": "FAILED",
    "timeout": "FAILED",
    "cron": "SUCCEEDED",
}
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
LOST = "worker lost"  # how the leader closes the open attempt of a worker it found gone


@dataclass(frozen=True)
class JobFact:
    id: str
    kind: str
    status: str
    max_retries: int
    scheduled_for: dt.datetime | None = None
    created_at: dt.datetime | None = None


@dataclass(frozen=True)
class AttemptFact:
    job_id: str
    attempt: int
    error: str


@dataclass
class Facts:
    jobs: list[JobFact]
    attempts: list[AttemptFact]
    log_lines: list[str]
    dlq: list[str]
    submitted: int  # jobs the load meant to create (cron jobs not counted)
    cron_window: tuple[dt.datetime, dt.datetime] | None = None  # ticks expected in (start, end]
    cron_period: float = 2.0
    cron_grace: float = 30.0
    orphans: list[str] = field(default_factory=list)  # jobs with a process still running after the run
    settled: bool = True  # after the faults every program ran again, and a leader acted (fired a cron tick)


@dataclass
class Check:
    name: str
    violations: int
    detail: str = ""


@dataclass
class Execution:
    start: float
    end: float | None = None
    starts: int = 0


def executions(lines: Iterable[str]) -> tuple[dict[tuple[str, int], Execution], int]:
    """(job, attempt) -> when it ran, from the side-effect log; and how many lines did not parse."""
    runs: dict[tuple[str, int], Execution] = {}
    bad = 0
    for line in lines:
        parts = line.split()
        if len(parts) != 4 or parts[2] not in ("start", "end") or not parts[1].isdigit():
            bad += 1
            continue
        key, moment = (parts[0], int(parts[1])), float(parts[3])
        run = runs.setdefault(key, Execution(moment))
        if parts[2] == "start":
            run.starts += 1
            run.start = min(run.start, moment)
        else:
            run.end = moment if run.end is None else max(run.end, moment)
    return runs, bad


def _some(items: Iterable[object], n: int = 3) -> str:
    shown = [str(i) for i in list(items)[:n]]
    return ", ".join(shown)


def check_statuses(f: Facts) -> list[Check]:
    lost = Counter(a.job_id for a in f.attempts if a.error.startswith(LOST))
    attempts = Counter(a.job_id for a in f.attempts)
    unfinished = [j.id for j in f.jobs if j.status not in TERMINAL]
    wrong, excused = [], []
    for j in f.jobs:
        if j.status in TERMINAL and j.status != EXPECTED[j.kind]:
            # A kill -9 uses up a retry: a job whose workers died under it more often than
            # max_retries allows ends FAILED, and that is the promise kept, not broken.
            if j.status == "FAILED" and lost[j.id] and attempts[j.id] > j.max_retries:
                excused.append(j.id)
            else:
                wrong.append(f"{j.id} {j.kind} {j.status}")
    submitted = sum(1 for j in f.jobs if j.kind != "cron")
    return [
        Check(
            "every job created once", abs(submitted - f.submitted), f"{submitted} jobs for {f.submitted} submissions"
        ),
        Check("every job terminal", len(unfinished), _some(unfinished)),
        Check(
            "every job has its expected status",
            len(wrong),
            _some(wrong) or f"{len(excused)} FAILED accepted: worker(s) lost used up their retries",
        ),
    ]


def check_executions(f: Facts) -> list[Check]:
    runs, bad = executions(f.log_lines)
    twice = [f"{j} #{a}" for (j, a), r in runs.items() if r.starts > 1]
    recorded = {(a.job_id, a.attempt) for a in f.attempts}
    unrecorded = [f"{j} #{a}" for (j, a) in runs if (j, a) not in recorded]
    per_job: dict[str, list[tuple[int, Execution]]] = defaultdict(list)
    for (job, attempt), run in runs.items():
        per_job[job].append((attempt, run))
    overlaps = []
    for job, job_runs in per_job.items():
        job_runs.sort(key=lambda item: item[1].start)
        for (a1, r1), (a2, r2) in zip(job_runs, job_runs[1:]):
            if r1.end is not None and r1.end > r2.start:
                overlaps.append(f"{job} #{a1} ended {r1.end - r2.start:.2f}s after #{a2} began")
    return [
        Check(
            "no (job, attempt) executed twice",
            len(twice) + bad,
            _some(twice) or (f"{bad} unreadable log lines" if bad else f"{len(runs)} executions logged"),
        ),
        Check("no execution left unrecorded", len(unrecorded), _some(unrecorded)),
        Check("no two attempts of a job overlap", len(overlaps), _some(overlaps, 2)),
    ]


def check_dlq(f: Facts) -> Check:
    failed = {j.id for j in f.jobs if j.status == "FAILED"}
    listed = Counter(f.dlq)
    missing = failed - set(listed)
    extra = set(listed) - failed
    doubled = [i for i, n in listed.items() if n > 1]
    detail = (
        (f"{len(missing)} FAILED not in it ({_some(missing, 2)}); " if missing else "")
        + (f"{len(extra)} not FAILED ({_some(extra, 2)}); " if extra else "")
        + (f"{len(doubled)} listed twice" if doubled else "")
    )
    return Check(
        "dlq_tasks equals the FAILED jobs",
        len(missing) + len(extra) + len(doubled),
        detail or f"{len(failed)} FAILED, {len(listed)} in dlq_tasks",
    )


def check_cron(f: Facts) -> Check:
    """One job per tick, and a tick without a job only where the catchup policy (skip) allows it."""
    if f.cron_window is None:
        return Check("cron fired one job per tick", 0, "no schedule")
    ticks = Counter(j.scheduled_for for j in f.jobs if j.kind == "cron" and j.scheduled_for is not None)
    doubled = [t for t, n in ticks.items() if n > 1]
    created = sorted(
        (j.scheduled_for, j.created_at)
        for j in f.jobs
        if j.kind == "cron" and j.scheduled_for is not None and j.created_at is not None
    )
    start, end = f.cron_window
    step = dt.timedelta(seconds=f.cron_period)
    tick = dt.datetime.fromtimestamp((start.timestamp() // f.cron_period + 1) * f.cron_period, dt.UTC)
    missed, skipped = [], 0
    while tick <= end:
        if tick not in ticks:
            later = next((c for t, c in created if t > tick), None)
            # catchup=skip: a tick older than CRON_MISFIRE_GRACE when a leader came back is skipped
            if later is not None and (later - tick).total_seconds() > f.cron_grace:
                skipped += 1
            else:
                missed.append(tick.strftime("%H:%M:%S"))
        tick += step
    detail = (
        _some(missed)
        if missed
        else f"{sum(ticks.values())} jobs, {len(ticks)} ticks"
        + (f", {skipped} skipped by catchup=skip" if skipped else "")
    )
    return Check("cron fired one job per tick", len(doubled) + len(missed), detail)


def run_checks(f: Facts) -> list[Check]:
    checks = [
        Check("a leader acts again after the faults", 0 if f.settled else 1),
        *check_statuses(f),
        *check_executions(f),
        check_dlq(f),
        check_cron(f),
    ]
    checks.append(
        Check(
            "no job process left running",
            len(f.orphans),
            f"{len(f.orphans)} jobs: {_some(f.orphans, 2)}" if f.orphans else "",
        )
    )
    return checks


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain text table, columns as wide as their widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "-+-".join("-" * w for w in widths)

    def fmt(row: list[str]) -> str:
        return " | ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()

    return "\n".join([fmt(header), line, *(fmt(r) for r in rows)])
