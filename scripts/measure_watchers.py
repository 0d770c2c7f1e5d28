"""What open WatchJob streams cost a run of jobs: the same run with 0 and with 1,000 streams on one server.

    PYTHONPATH=. .venv/bin/python scripts/measure_watchers.py [--jobs 2000] [--streams 1000] [--rounds 2]

Private Redis, PostgreSQL (fsync on) and etcd in a temporary directory, one server and two workers as
`make bench` runs them (scripts/bench_jobcluster.py). Each round times ``--jobs`` `true` jobs end to end
(submitted in batches of 1,000, until the last one SUCCEEDED) three ways, interleaved:

- ``none``: no stream open;
- ``idle``: ``--streams`` streams open on as many other jobs that do not change (delayed an hour),
  opened HOT_FOR + 2 s before the run (so the hub has found them quiet) and open through it:
  what idle watchers cost everyone else;
- ``run``: ``--streams`` streams on ``--streams`` of the run's own jobs, each open from before the run
  until its job ends (the jobs are submitted delayed, the streams opened, then the clock starts at
  their due time; ``none`` and ``idle`` are timed the same way).

Prints each time and its ratio to ``none`` in the same round. The machine may be shared: compare
within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import grpc
import redis.asyncio as aioredis

from bench_jobcluster import BATCH, JobclusterBench, Measure
from devtools import services as svc
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from scheduler_server.watch import HOT_FOR

#: Jobs are due this long after the submit started, so the streams are open before any runs.
LEAD = 12.0
CHANNELS = 10


async def _submit(stub: pb_grpc.JobServiceStub, n: int, run_at_ms: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, BATCH):
        jobs = [pb.Job(command="true", run_at_ms=run_at_ms) for _ in range(min(BATCH, n - start))]
        resp = await stub.SubmitJobs(pb.JobBatch(jobs=jobs), timeout=60)
        ids += [r.job_id for r in resp.jobs]
    return ids


async def _watch(stub: pb_grpc.JobServiceStub, job_id: str, first: asyncio.Event, counter: list[int]) -> None:
    async for _ in stub.WatchJob(pb.JobId(id=job_id)):
        if not first.is_set():
            first.set()
            counter[0] += 1


def _open(
    stubs: list[pb_grpc.JobServiceStub], job_ids: list[str], firsts: list[asyncio.Event]
) -> list[asyncio.Task[None]]:
    """A stream on each job (``firsts`` gets an event for each, set by its first message)."""
    counter = [0]
    firsts += [asyncio.Event() for _ in job_ids]
    return [asyncio.create_task(_watch(stubs[i % len(stubs)], j, firsts[i], counter)) for i, j in enumerate(job_ids)]


async def timed_run(m: Measure, stubs: list[pb_grpc.JobServiceStub], jobs: int, streams: int, mode: str) -> float:
    """Seconds from the jobs' due time to the last one done, with ``streams`` open as ``mode`` says."""
    await m.reset()
    stub = stubs[0]
    due_ms = int((time.time() + LEAD) * 1000)
    watched: list[str] = []
    idle: list[asyncio.Task[None]] = []
    if mode == "idle":  # open first, and let the hub find them quiet (HOT_FOR) before the run is submitted
        watched = await _submit(stub, streams, int((time.time() + 3600) * 1000))
        idle = _open(stubs, watched, [])
        await asyncio.sleep(HOT_FOR + 2)
        due_ms = int((time.time() + LEAD) * 1000)
    ids = await _submit(stub, jobs, due_ms)
    if mode == "run":
        watched = ids[:streams]
    firsts: list[asyncio.Event] = []
    tasks = idle or _open(stubs, watched, firsts)
    try:
        await asyncio.gather(*(e.wait() for e in firsts))
        left = due_ms / 1000 - time.time()
        if left < 0.5:
            raise SystemExit(f"opening {streams} streams took past the jobs' due time; raise LEAD ({LEAD}s)")
        await asyncio.sleep(left)
        started = time.monotonic()
        done = await m.wait_done(jobs)
        if mode == "run":
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)  # every watcher saw its job end
        return done - started
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def measure(jc: JobclusterBench, jobs: int, streams: int, rounds: int) -> None:
    pg = await asyncpg.connect(jc.dsn)
    r = aioredis.from_url(jc.redis_url, decode_responses=True)
    channels = [grpc.aio.insecure_channel(jc.address) for _ in range(CHANNELS)]
    stubs = [pb_grpc.JobServiceStub(c) for c in channels]
    m = Measure(jc, stubs[0], pg, r)
    try:
        await m.wait_workers(jc.start_workers("watch"))
        times: dict[str, list[float]] = {"none": [], "idle": [], "run": []}
        for i in range(1, rounds + 1):
            for mode in times:
                times[mode].append(await timed_run(m, stubs, jobs, streams if mode != "none" else 0, mode))
            base = times["none"][-1]
            print(
                f"round {i}: "
                + "; ".join(f"{mode} {t[-1]:.2f}s ({t[-1] / base:.2f}x)" for mode, t in times.items())
                + f"  (load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        base = statistics.median(times["none"])
        print(f"\n{jobs:,} `true` jobs end to end, one server, two workers; median of {rounds} rounds:")
        print(f"  0 streams:                          {base:.2f}s ({jobs / base:.0f} jobs/s)")
        for mode, label in (
            ("idle", f"{streams:,} streams on other jobs:"),
            ("run", f"{streams:,} streams on the run's jobs:"),
        ):
            t = statistics.median(times[mode])
            print(f"  {label:<35} {t:.2f}s ({jobs / t:.0f} jobs/s), {t / base:.2f}x the time with none")
    finally:
        for c in channels:
            await c.close()
        await r.aclose()
        await pg.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="jobcluster-watchers-"))
    os.chmod(root, 0o755)  # PostgreSQL runs as postgres and must enter it
    jc: JobclusterBench | None = None
    try:
        with svc.private_services(root) as started:
            jc = JobclusterBench(root, started)
            jc.env["WATCH_MAX_STREAMS"] = str(max(1000, args.streams))
            jc.start_server()
            print(
                f"measure_watchers on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; logs in {root}",
                flush=True,
            )
            asyncio.run(measure(jc, args.jobs, args.streams, args.rounds))
            jc.stop()
            return 0
    finally:
        if jc is not None:
            jc.kill_all()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
