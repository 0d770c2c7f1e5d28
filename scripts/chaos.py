"""`make chaos`: thousands of jobs through a cluster being killed, then checks that nothing was lost or run twice.

Private Redis, PostgreSQL and etcd on free loopback ports; 3 servers and 3 workers
(the election on etcd), a supervisor restarting what died. The load: instant jobs,
0.1-2 s sleeps, fail-then-succeed via $JOB_ATTEMPT, always-fail, timeouts and an
every-2-seconds cron. Faults: kill -9 a worker every 5 s, a server every 10 s, the
leader every 20 s, SIGSTOP Redis for 6 s once, restart PostgreSQL and etcd once.
Every command appends `$JOB_ID $JOB_ATTEMPT start|end <time>` to a side-effect log.
Prints tables and exits 1 on any violation (checks: devtools/chaos_checks.py).

    PYTHONPATH=. .venv/bin/python scripts/chaos.py [--jobs 10000] [--quick] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from devtools import services as svc
from devtools.chaos import CHAOS_SETTINGS, Cluster, FaultPlan, call, inject_faults
from devtools.chaos_checks import AttemptFact, Facts, JobFact, run_checks, table
from jobcluster.errors import POSTGRES_ERRORS
from jobcluster.pb import scheduler_pb2 as pb

MIX = {"instant": 40, "sleep": 25, "flaky": 15, "fail": 10, "timeout": 10}
CRON = "* * * * * */2"
BATCH = 50


def make_job(kind: str, i: int, log: Path, rng: random.Random) -> pb.Job:
    """A job of ``kind`` whose command logs its start and end; the idempotency key names kind and number."""
    mark = lambda what: f'echo "$JOB_ID $JOB_ATTEMPT {what} $(date +%s.%N)" >> {log}'  # noqa: E731
    start, end = mark("start"), mark("end")
    body = {
        "instant": (f"{start}; {end}", 5, 60.0),
        "sleep": (f"{start}; sleep {rng.uniform(0.1, 2.0):.2f}; {end}", 5, 60.0),
        "flaky": (f'{start}; {end}; [ "$JOB_ATTEMPT" -ge 3 ]', 5, 60.0),
        "fail": (f"{start}; {end}; exit 3", 1, 60.0),
        "timeout": (f"{start}; sleep 30; {end}", 0, 1.0),
    }[kind]
    return pb.Job(
        command=body[0],
        max_retries=body[1],
        timeout_seconds=body[2],
        name=f"chaos-{kind}",
        idempotency_key=f"chaos-{kind}-{i}",
    )


async def submit_load(cluster: Cluster, jobs: list[pb.Job], seconds: float) -> None:
    """Submit ``jobs`` in batches spread evenly over ``seconds``; a failed batch is sent again (same keys)."""
    t0 = time.monotonic()
    batches = [jobs[i : i + BATCH] for i in range(0, len(jobs), BATCH)]
    for n, batch in enumerate(batches):
        await asyncio.sleep(max(0.0, t0 + seconds * n / len(batches) - time.monotonic()))
        await call(cluster, "SubmitJobs", lambda stub, b=batch: stub.SubmitJobs(pb.JobBatch(jobs=b), timeout=10))


async def pg_value(dsn: str, query: str) -> int:
    """One number from PostgreSQL, or -1 while it is down: the harness reads it across the restart it injects
    (a read cut by that restart once ended a stress run's chaos test with a traceback instead of its table)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (*POSTGRES_ERRORS, asyncpg.PostgresError):
        return -1
    try:
        return int(await conn.fetchval(query))
    except (*POSTGRES_ERRORS, asyncpg.PostgresError):
        return -1
    finally:
        with contextlib.suppress(*POSTGRES_ERRORS, asyncpg.PostgresError):
            await conn.close()


async def wait_terminal(dsn: str, what: str, query: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (left := await pg_value(dsn, query)) != 0:
        if time.monotonic() > deadline:
            print(f"  !! {left} {what} still not terminal after {timeout:.0f}s", flush=True)
            return
        await asyncio.sleep(0.5)


async def settle(cluster: Cluster, timeout: float = 60.0) -> bool:
    """Wait until every program runs again and a leader leads; False if that did not happen in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p.alive() for p in cluster.programs.values()) and await cluster.leader() is not None:
            return True
        await asyncio.sleep(0.3)
    print(f"  !! the cluster did not settle in {timeout:.0f}s (a program down or no leader)", flush=True)
    return False


def orphans(job_ids: set[str]) -> list[str]:
    """Processes still running that carry one of our jobs' JOB_ID."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            ids = [e[7:].decode() for e in env if e.startswith(b"JOB_ID=")]
            if ids and ids[0] in job_ids:
                found.append(ids[0])
                try:  # ours (our workers started it): end it so the machine stays clean
                    os.kill(int(entry.name), signal.SIGKILL)
                except OSError:
                    pass
    return sorted(set(found))


async def gather_facts(
    cluster: Cluster, log: Path, submitted: int, cron_start: dt.datetime, cron_end: dt.datetime | None
) -> Facts:
    conn = await asyncpg.connect(cluster.services["postgres"].url)
    try:
        rows = await conn.fetch(
            "SELECT id::text, idempotency_key, schedule_id, status, max_retries, scheduled_for, created_at FROM jobs"
        )
        attempts = await conn.fetch("SELECT job_id::text, attempt, error FROM job_attempts")
    finally:
        await conn.close()
    r = aioredis.Redis.from_url(f"redis://{cluster.services['redis'].url}", decode_responses=True)
    dlq = await r.lrange("dlq_tasks", 0, -1)
    await r.aclose()
    jobs = [
        JobFact(
            x["id"],
            "cron" if x["schedule_id"] else (x["idempotency_key"] or "?-?").split("-")[1],
            x["status"],
            x["max_retries"],
            x["scheduled_for"],
            x["created_at"],
        )
        for x in rows
    ]
    ticks = [j.scheduled_for for j in jobs if j.scheduled_for is not None]
    window = (cron_start, cron_end or max(ticks, default=cron_start))
    return Facts(
        jobs=jobs,
        attempts=[AttemptFact(a["job_id"], a["attempt"], a["error"]) for a in attempts],
        log_lines=log.read_text().splitlines(),
        dlq=dlq,
        submitted=submitted,
        cron_window=window,
        cron_grace=float(CHAOS_SETTINGS["CRON_MISFIRE_GRACE"].rstrip("s")),
        orphans=orphans({j.id for j in jobs}),
    )


async def run(args: argparse.Namespace, cluster: Cluster, log: Path, plan: FaultPlan) -> int:
    rng = random.Random(args.seed)
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=args.jobs)
    jobs = [make_job(kind, i, log, rng) for i, kind in enumerate(kinds)]
    stop_supervisor, stop_faults = asyncio.Event(), asyncio.Event()
    supervisor = asyncio.create_task(cluster.supervise(stop_supervisor))
    saved = await call(
        cluster,
        "CreateSchedule",
        lambda stub: stub.CreateSchedule(
            pb.Schedule(name="chaos-cron", cron=CRON, command=make_job("instant", 0, log, rng).command, max_retries=5),
            timeout=10,
        ),
    )
    # The ticks owed start after the schedule was saved (by the server's clock), not when it was asked for:
    # a call that straddled a tick once made the check count that tick as missed.
    cron_start = dt.datetime.fromtimestamp(saved.created_at_ms / 1000, dt.UTC)
    t0 = time.monotonic()
    faults = asyncio.create_task(inject_faults(cluster, plan, stop_faults))
    load_seconds = args.load_seconds if args.load_seconds is not None else args.jobs / 100
    await submit_load(cluster, jobs, load_seconds)
    dsn = cluster.services["postgres"].url
    busy = "SELECT count(*) FROM jobs WHERE status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')"
    while time.monotonic() - t0 < plan.last_one_off and await pg_value(dsn, busy) != 0:
        await asyncio.sleep(0.5)
    while time.monotonic() - t0 < plan.last_one_off:  # every one-off fault happens, even on a fast machine
        await asyncio.sleep(0.2)
    stop_faults.set()
    injected = await faults
    print(f"load submitted in {load_seconds:.0f}s; faults stopped at {time.monotonic() - t0:.0f}s", flush=True)
    settled = await settle(cluster)
    await wait_terminal(dsn, "jobs", busy + " AND schedule_id IS NULL", args.timeout)
    # The cron is checked up to its last tick fired, which must come after the faults ended.
    fresh = f"SELECT count(*) FROM jobs WHERE scheduled_for > '{dt.datetime.now(dt.UTC).isoformat()}'"
    deadline = time.monotonic() + 30
    while await pg_value(dsn, fresh) < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    acting = await pg_value(dsn, fresh) >= 1  # a leader that holds the key but never acts fires no tick
    cron_end = None if acting else dt.datetime.now(dt.UTC)  # None: its last tick
    await call(cluster, "PauseSchedule", lambda stub: stub.PauseSchedule(pb.ScheduleRef(name="chaos-cron"), timeout=10))
    await wait_terminal(dsn, "cron jobs", busy, 30)
    took = time.monotonic() - t0
    stop_supervisor.set()
    await supervisor
    facts = await gather_facts(cluster, log, len(jobs), cron_start, cron_end)
    facts.settled = settled and acting
    return report(cluster, facts, injected, took)


def report(cluster: Cluster, facts: Facts, injected: dict[str, int], took: float) -> int:
    """Print the faults, restarts, statuses and checks; 0 when no check found a violation."""
    print("\nfaults: " + ", ".join(f"{kind} x{n}" for kind, n in sorted(injected.items())))
    print(
        "restarts by the supervisor (killed / exited on their own): "
        + ", ".join(f"{p.name} {p.starts - 1} ({p.kills}/{p.starts - 1 - p.kills})" for p in cluster.programs.values())
    )
    counts: dict[str, dict[str, int]] = {}
    for job in facts.jobs:
        row = counts.setdefault(job.kind, {})
        row[job.status] = row.get(job.status, 0) + 1
    statuses = sorted({s for row in counts.values() for s in row})
    print(
        "\n" + table([[k, *(str(counts[k].get(s, 0)) for s in statuses)] for k in sorted(counts)], ["kind", *statuses])
    )
    checks = run_checks(facts)
    print(
        "\n"
        + table(
            [[c.name, "ok" if c.violations == 0 else f"{c.violations} VIOLATION(S)", c.detail] for c in checks],
            ["check", "result", "detail"],
        )
    )
    bad = sum(c.violations for c in checks)
    print(
        f"\n{len(facts.jobs)} jobs, {len(facts.attempts)} attempts, {took:.0f}s from first fault to last job; "
        f"{bad} violation(s)",
        flush=True,
    )
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--servers", type=int, default=3)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--load-seconds", type=float, default=None, help="spread submissions over this (default jobs/100)")
    p.add_argument("--quick", action="store_true", help="faults squeezed into ~20 s (the make test version)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the jobs to end after the faults")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep", action="store_true", help="keep the logs and data directory")
    args = p.parse_args()
    # SIGTERM (a timeout, Ctrl-C's cousin) ends the run through the finally blocks: every process we started stops
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = (
        FaultPlan(
            worker_every=4, server_every=8, leader_every=12, redis_stop_at=3, postgres_restart_at=13, etcd_restart_at=17
        )
        if args.quick
        else FaultPlan()
    )
    root = Path(tempfile.mkdtemp(prefix="jobcluster-chaos-"))
    os.chmod(root, 0o755)  # the postgres user enters it; jobs (JOB_USER) reach the side-effect log
    log = root / "effects.log"
    log.touch()
    os.chmod(log, 0o666)
    print(
        f"chaos: {args.jobs} jobs, {args.servers} servers, {args.workers} workers, root {root}\n  settings: "
        + " ".join(f"{k}={v}" for k, v in CHAOS_SETTINGS.items())
        + f"\n  faults: {plan}",
        flush=True,
    )
    code = 2
    try:
        with svc.private_services(root, pg_settings={"fsync": "off", "synchronous_commit": "off"}) as services:
            cluster = Cluster(root, services, servers=args.servers, workers=args.workers)
            try:
                cluster.start()
                code = asyncio.run(run(args, cluster, log, plan))
            finally:
                cluster.stop_all()
        return code
    finally:
        if code == 0 and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"logs and side-effect log kept in {root}")


if __name__ == "__main__":
    sys.exit(main())
