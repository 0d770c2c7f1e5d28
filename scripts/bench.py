"""`make bench`: jobcluster beside Celery on this machine, in interleaved rounds, with issue 11's goals.

Private Redis, PostgreSQL (fsync on) and etcd for jobcluster; a private Redis for Celery. Each round
runs, one after the other (never at once):

- Celery 5 (prefork, concurrency 2, Redis broker and result backend; the task runs
  ``subprocess.run("true", shell=True)``): JOBS tasks sent one by one from one client, until every
  result is stored; then the start latency at 100 tasks/s (sent -> task started);
- jobcluster, one server and two workers as ``make start SERVER_COUNT=1 WORKER_COUNT=2`` runs them,
  with the default settings: SubmitJob alone (16 in flight, no workers running); SubmitJobs alone
  (batches of 1,000: jobs stored per second); then with the workers, end to end for JOBS `true` jobs
  by single calls (16 in flight) and by batches of 1,000, and the start latency at 100 jobs/s
  (created_at -> started_at, both PostgreSQL's clock).

Then, once, each engine alone (scripts/bench_engines.py): pgbench running a job's three PostgreSQL
commits, and redis-benchmark: the jobs/s one PostgreSQL and one Redis could carry here.

It prints each round, then the table: a range over the rounds per figure, the ratio to Celery of the
same round, each goal and in how many rounds it was met. Figures swing on a shared machine: compare
only within one run.

    PYTHONPATH=. .venv/bin/python scripts/bench.py [--rounds 3] [--jobs 2000]   (make bench ROUNDS=3)
    PYTHONPATH=. .venv/bin/python scripts/bench.py --submit-only   (SubmitJob alone, SubmitJobs stored)
    PYTHONPATH=. .venv/bin/python scripts/bench.py --scale         (make bench SCALE=1: scripts/bench_scale.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench_stats import Round, round_line, table
from devtools import services as svc

try:
    import celery

    from bench_celery import CeleryBench
except ImportError as exc:  # bench-only: make bench installs it; --submit-only runs without
    if "--submit-only" not in sys.argv and "--scale" not in sys.argv:
        raise SystemExit(
            f"Celery is not installed ({exc}): run `make bench`, or `{sys.executable} -m pip "
            f"install --require-hashes --no-deps -r requirements/bench.lock`"
        ) from None

from bench_engines import ceilings, fsync_figure, lines
from bench_jobcluster import JobclusterBench, measure_round, measure_submit
from bench_scale import run_scale
from bench_stats import Cpu


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def one_round(i: int, args: argparse.Namespace, cel: CeleryBench, jc: JobclusterBench) -> Round:
    cel.start()
    try:
        celery_e2e, celery_cpu = cel.end_to_end(args.jobs)
        celery_start = cel.start_latency(args.rate, args.rate_jobs)
    finally:
        cel.stop()
    figures = asyncio.run(
        measure_round(jc, f"r{i}", args.jobs, args.stored_jobs, args.inflight, args.rate, args.rate_jobs)
    )
    return Round(celery_e2e=celery_e2e, celery_cpu=celery_cpu, celery_start=celery_start, **figures)


@contextlib.contextmanager
def one_server() -> Iterator[tuple[JobclusterBench, dict[str, svc.Service]]]:
    """Private services and one jobcluster server on them (no workers yet); all of it gone afterwards."""
    root = Path(tempfile.mkdtemp(prefix="jobcluster-bench-"))
    os.chmod(root, 0o755)  # PostgreSQL runs as postgres and must enter it
    jc: JobclusterBench | None = None
    try:
        with svc.private_services(root) as started:
            jc = JobclusterBench(root, started)
            jc.start_server()
            yield jc, started
    finally:
        if jc is not None:
            jc.kill_all()
        shutil.rmtree(root, ignore_errors=True)


def submit_only(args: argparse.Namespace) -> int:
    """`--submit-only`: the two submission figures of one server, each round on its own line."""
    with one_server() as (jc, started):
        print(f"submit only on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
        assert jc.server is not None
        cpu = Cpu([jc.server.pid, started["postgres"].proc.pid])
        for i in range(1, args.rounds + 1):
            submit, lat, stored, per_call, per_job, floor = asyncio.run(
                measure_submit(jc, args.jobs, args.stored_jobs, args.inflight, cpu)
            )
            print(
                f"round {i}: SubmitJob {args.inflight} in flight {submit.per_s:,.0f}/s p50 {lat.p50:.1f} "
                f"p99 {lat.p99:.1f} ms ({per_call} a call; Health.Check: {floor}); SubmitJobs stored "
                f"{stored.per_s:,.0f} jobs/s ({per_job} a job) (load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        jc.stop()
        return 0


def scale(args: argparse.Namespace) -> int:
    """`make bench SCALE=1` (scripts/bench_scale.py): empty, then with a long history."""
    with one_server() as (jc, _):
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        print(
            f"make bench SCALE=1 on {os.cpu_count()} cores ({_cpu()}), {when}; load average "
            f"{os.getloadavg()[0]:.1f}; logs in {jc.root}",
            flush=True,
        )
        print(
            asyncio.run(
                run_scale(
                    jc,
                    args.jobs,
                    args.inflight,
                    args.finished,
                    args.queued,
                    args.dead,
                    args.reconcile_seconds,
                    args.server_jobs,
                    args.worker_jobs,
                )
            )
        )
        print(f"(load average at the end {os.getloadavg()[0]:.1f})")
        return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2000, help="`true` jobs end to end, and SubmitJob calls")
    p.add_argument("--stored-jobs", type=int, default=20_000, help="jobs sent in batches of 1,000 alone")
    p.add_argument("--inflight", type=int, default=16, help="SubmitJob calls in flight")
    p.add_argument("--rate", type=int, default=100, help="jobs/s for the start latency")
    p.add_argument("--rate-jobs", type=int, default=500, help="jobs for the start latency")
    p.add_argument("--no-engines", action="store_true", help="skip pgbench and redis-benchmark at the end")
    p.add_argument(
        "--submit-only",
        action="store_true",
        help="only SubmitJob alone and SubmitJobs stored, each round (no Celery, no workers)",
    )
    p.add_argument(
        "--scale",
        action="store_true",
        help="flat as it grows (make bench SCALE=1): empty, then with --finished and --queued "
        "jobs stored, and dead-letter operations on --dead entries",
    )
    p.add_argument("--finished", type=int, default=1_000_000, help="--scale: finished jobs in the history")
    p.add_argument("--queued", type=int, default=100_000, help="--scale: jobs waiting in a lane no worker serves")
    p.add_argument("--dead", type=int, default=100_000, help="--scale: dead letters for the DLQ operations")
    p.add_argument(
        "--server-jobs",
        type=int,
        default=1_000_000,
        help="--scale: jobs submitted through the server before its memory is read",
    )
    p.add_argument(
        "--worker-jobs", type=int, default=20_000, help="--scale: jobs two new workers run while their memory is read"
    )
    p.add_argument(
        "--reconcile-seconds",
        type=float,
        default=12.0,
        help="--scale: how long to watch the leader's reconciliation cost Redis",
    )
    args = p.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)  # a killed bench still stops what it started
    if args.submit_only:
        return submit_only(args)
    if args.scale:
        return scale(args)

    root = Path(tempfile.mkdtemp(prefix="jobcluster-bench-"))
    os.chmod(root, 0o755)  # PostgreSQL runs as postgres and must enter it
    jc: JobclusterBench | None = None
    broker: svc.Service | None = None
    try:
        with svc.private_services(root) as started:
            broker = svc.start_redis(root / "celery-redis", svc.free_port(), root / "celery-redis.log")
            jc = JobclusterBench(root, started)
            jc.start_server()
            cel = CeleryBench(broker.url, root, broker.pid)
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            print(
                f"make bench on {os.cpu_count()} cores ({_cpu()}), {when}; "
                f"load average {os.getloadavg()[0]:.1f}; Celery {celery.__version__}; "
                f"{args.rounds} rounds of {args.jobs:,} `true` jobs; logs in {root}",
                flush=True,
            )
            print(f"this disk ({root}): {fsync_figure(root)}", flush=True)
            rounds = []
            for i in range(1, args.rounds + 1):
                rounds.append(one_round(i, args, cel, jc))
                print(f"{round_line(i, rounds[-1])} (load average {os.getloadavg()[0]:.1f})", flush=True)
            jc.stop()
            print()
            print(table(rounds))
            print(
                "\nRatios are jobcluster / Celery within the same round. The machine may be shared: "
                "figures swing from run to run."
            )
            if not args.no_engines:
                print("\nEach engine alone, on the same private services (scripts/bench_engines.py):")
                print("\n".join(lines(ceilings(started))))
            return 0
    finally:
        if jc is not None:
            jc.kill_all()
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
