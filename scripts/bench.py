"""`make bench`: jobcluster's speed on this machine, printed as figures (no pass/fail).

Starts private Redis, PostgreSQL and etcd, one server and WORKERS workers, then:

1. submissions: N single SubmitJob calls, 16 in flight (rate, p50/p99 latency);
2. end to end, single submits: N `true` jobs submitted one call each, until all SUCCEEDED;
3. end to end, batched: N `true` jobs in SubmitJobs calls of 1,000;
4. submit-to-start latency at a steady, moderate rate (started_at - created_at).

    .venv/bin/python scripts/bench.py [--jobs 2000] [--workers 2] [--concurrency 16]

Celery is not measured side by side yet (see the README).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from jobcluster.channels import open_aio_channel
from jobcluster.devtools import services as svc
from jobcluster.devtools.cluster import wait_healthy
from jobcluster.devtools.job_user import job_user_env
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


async def wait_done(dsn: str, total: int, timeout: float = 300) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'SUCCEEDED'")
            if n >= total:
                return time.monotonic()
            await asyncio.sleep(0.02)
        raise TimeoutError(f"only {n} of {total} jobs done")
    finally:
        await conn.close()


async def reset(dsn: str, redis_url: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute("TRUNCATE jobs CASCADE")
    await conn.close()
    import redis.asyncio as aioredis
    r = aioredis.Redis.from_url(f"redis://{redis_url}")
    await r.delete("pending_jobs", "delayed_jobs", "dlq_tasks")
    await r.aclose()


async def submit_many(stub, n: int, inflight: int, command: str = "true") -> list[float]:
    latencies: list[float] = []
    queue = iter(range(n))

    async def one_lane() -> None:
        for _ in queue:
            t = time.perf_counter()
            await stub.SubmitJob(pb.Job(command=command, max_retries=0), timeout=30)
            latencies.append(time.perf_counter() - t)
    await asyncio.gather(*(one_lane() for _ in range(inflight)))
    return latencies


async def run(args: argparse.Namespace, server: str, dsn: str, redis_url: str,
              start_workers, stop_workers) -> None:
    n = args.jobs
    async with open_aio_channel(server) as channel:
        stub = pb_grpc.JobServiceStub(channel)
        await submit_many(stub, 50, 4)  # warm up
        await reset(dsn, redis_url)

        # 1. submissions alone (no workers competing for the CPU)
        t = time.perf_counter()
        lat = await submit_many(stub, n, args.concurrency)
        took = time.perf_counter() - t
        print(f"submit, single calls, {args.concurrency} in flight: {n / took:,.0f} jobs/s; "
              f"p50 {pct(lat, .5) * 1000:.1f} ms, p99 {pct(lat, .99) * 1000:.1f} ms")
        await reset(dsn, redis_url)

        # 2. end to end, single submits
        start_workers()
        await asyncio.sleep(1.0)
        t = time.monotonic()
        await submit_many(stub, n, args.concurrency)
        done = await wait_done(dsn, n)
        print(f"end to end, {n} `true` jobs, single submits: {n / (done - t):,.0f} jobs/s "
              f"({done - t:.2f} s, {args.workers} workers x {args.worker_concurrency} slots)")
        await reset(dsn, redis_url)

        # 3. end to end, batches of 1000
        t = time.monotonic()
        for start in range(0, n, 1000):
            batch = pb.JobBatch(jobs=[pb.Job(command="true", max_retries=0) for _ in range(min(1000, n - start))])
            await stub.SubmitJobs(batch, timeout=60)
        submitted = time.monotonic()
        done = await wait_done(dsn, n)
        print(f"end to end, {n} `true` jobs, SubmitJobs batches of 1000: {n / (done - t):,.0f} jobs/s "
              f"(submitting took {submitted - t:.2f} s: {n / (submitted - t):,.0f} jobs/s)")
        await reset(dsn, redis_url)

        # 4. submit-to-start latency at a steady rate
        rate, count = args.latency_rate, args.latency_jobs
        t0 = time.perf_counter()
        for i in range(count):
            await stub.SubmitJob(pb.Job(command="true", max_retries=0), timeout=30)
            delay = t0 + (i + 1) / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await wait_done(dsn, count)
        conn = await asyncpg.connect(dsn)
        rows = await conn.fetch("SELECT extract(epoch FROM started_at - created_at) AS d FROM jobs")
        await conn.close()
        waits = [float(r["d"]) * 1000 for r in rows]
        print(f"submit-to-start at {rate}/s ({count} jobs): p50 {pct(waits, .5):.1f} ms, "
              f"p99 {pct(waits, .99):.1f} ms, mean {statistics.mean(waits):.1f} ms")
        stop_workers()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--worker-concurrency", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=16, help="submits in flight")
    p.add_argument("--latency-rate", type=int, default=100, help="jobs/s for the latency run")
    p.add_argument("--latency-jobs", type=int, default=500)
    args = p.parse_args()

    root = Path(tempfile.mkdtemp(prefix="jobcluster-bench-"))
    os.chmod(root, 0o755)
    procs: list[subprocess.Popen] = []
    workers: list[subprocess.Popen] = []
    try:
        with svc.private_services(root) as started:
            redis, pg = started["redis"], started["postgres"]
            port = svc.free_port()
            env = {**os.environ, **job_user_env(os.environ.get("JOB_USER", "")),
                   "DATABASE_URL": pg.url, "REDIS_ADDR": redis.url,
                   "ETCD_ENDPOINTS": started["etcd"].url, "LOG_LEVEL": "WARNING",
                   "WORKER_CONCURRENCY": str(args.worker_concurrency), "PG_MAX_CONNS": "20"}
            server = f"127.0.0.1:{port}"

            def spawn(name: str, *argv: str) -> subprocess.Popen:
                with open(root / f"{name}.log", "w") as log:
                    return subprocess.Popen([sys.executable, *argv], cwd=root, env=env, stdout=log,
                                            stderr=subprocess.STDOUT)

            procs.append(spawn("server", "-m", "scheduler_server", "--port", str(port)))
            if wait_healthy([server], timeout=60):
                raise SystemExit(f"server {server} did not become ready; see {root}/server.log")

            def start_workers() -> None:
                workers.extend(spawn(f"worker-{i}", "-m", "worker", "--id", f"bench-{i}")
                               for i in range(args.workers))

            def stop_workers() -> None:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait()

            print(f"jobcluster bench on {os.cpu_count()} cores; PostgreSQL {pg.url.rsplit('@', 1)[-1]}, "
                  f"Redis {redis.url}")
            asyncio.run(run(args, server, pg.url, redis.url, start_workers, stop_workers))
            return 0
    finally:
        for proc in workers + procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
