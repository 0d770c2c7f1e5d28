"""jobcluster's side of `make bench`: one server and two workers as `make start SERVER_COUNT=1 WORKER_COUNT=2`
runs them (default settings: no .env in their working directory, only the services' addresses set; as
root, jobs run as JOB_USER), measured through the public gRPC API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench_stats import Cpu, Latency, Rate, pct
from devtools import services as svc
from devtools.cluster import wait_healthy
from devtools.job_user import job_user_env
from jobcluster import keys
from jobcluster.channels import open_aio_channel
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc

BATCH = 1000
#: True while a job has not ended: one probe of the status index.
UNFINISHED = "SELECT EXISTS (SELECT 1 FROM jobs WHERE status IN ('PENDING', 'QUEUED', 'RUNNING'))"


class JobclusterBench:
    """The programs (subprocesses, logs in ``root``) on the private services ``started``."""

    def __init__(self, root: Path, started: dict[str, svc.Service]) -> None:
        self.root = root
        self.dsn = started["postgres"].url
        self.redis_url = f"redis://{started['redis'].url}"
        self.env = {
            **os.environ,
            "DATABASE_URL": self.dsn,
            "REDIS_ADDR": started["redis"].url,
            "ETCD_ENDPOINTS": started["etcd"].url,
        }
        self.address = f"127.0.0.1:{svc.free_port()}"
        self.service_pids = [s.pid for s in started.values()]  # PostgreSQL, Redis, etcd
        self.server: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.root / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, *argv],
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_server(self) -> None:
        port = self.address.rsplit(":", 1)[1]
        self.server = self._spawn("server", ["-m", "scheduler_server", "--port", port], self.env)
        if wait_healthy([self.address], timeout=60):
            raise SystemExit(f"server {self.address} did not become ready; see {self.root}/server.log")

    def start_workers(self, tag: str, count: int = 2) -> list[str]:
        """``count`` workers, as root with make start's job user; returns their ids."""
        env = {**self.env, **job_user_env(os.environ.get("JOB_USER", ""))}
        ids = [f"bench-{tag}-{i}" for i in range(1, count + 1)]
        self.workers += [self._spawn(f"worker-{i}", ["-m", "worker", "--id", wid], env) for i, wid in enumerate(ids)]
        return ids

    def pids(self) -> list[int]:
        """Every process of the system under test: the services, the server, the workers."""
        return [*self.service_pids, *(p.pid for p in ([self.server] if self.server else []) + self.workers)]

    def stop_workers(self) -> None:
        for w in self.workers:
            w.terminate()
        for w in self.workers:
            w.wait(60)
        self.workers = []

    def stop(self) -> None:
        self.stop_workers()
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(30)

    def kill_all(self) -> None:
        for proc in [*self.workers, *([self.server] if self.server else [])]:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


class Measure:
    """The measurements, through one gRPC channel and one PostgreSQL and Redis connection."""

    def __init__(self, bench: JobclusterBench, stub: Any, pg: asyncpg.Connection, r: aioredis.Redis) -> None:
        self.bench, self.stub, self.pg, self.r = bench, stub, pg, r

    async def reset(self) -> None:
        """No jobs in PostgreSQL, no ids in Redis (workers stopped)."""
        await self.pg.execute("TRUNCATE jobs CASCADE")
        for pattern in (keys.PENDING + "*", keys.DELAYED + "*", keys.PROCESSING_PREFIX + "*", keys.DLQ):
            async for key in self.r.scan_iter(match=pattern, count=1000):
                await self.r.delete(key)

    async def wait_workers(self, ids: list[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(await asyncio.gather(*(self.r.zscore(keys.WORKERS, w) for w in ids))):
                return
            await asyncio.sleep(0.05)
        raise SystemExit(f"workers {ids} did not start beating within {timeout:.0f}s; see {self.bench.root}")

    async def wait_done(self, n: int, timeout: float = 300.0) -> float:
        """When all ``n`` jobs (every one submitted by now) have SUCCEEDED. Polled every 20 ms, as Celery's
        side polls DBSIZE: one probe of the status index while jobs remain (no count of what is done, whose
        cost would grow with the jobs and land in PostgreSQL's CPU per job); the count once, at the end."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not await self.pg.fetchval(UNFINISHED):
                done = time.monotonic()
                count = await self.pg.fetchval("SELECT count(*) FROM jobs WHERE status = 'SUCCEEDED'")
                if count >= n:
                    return done
                raise SystemExit(f"jobcluster: {count} of {n} jobs SUCCEEDED, the rest ended otherwise")
            await asyncio.sleep(0.02)
        raise TimeoutError(f"jobcluster: not all {n} jobs done within {timeout:.0f}s; see {self.bench.root}")

    async def submit_singles(self, n: int, inflight: int) -> tuple[Rate, list[float]]:
        """``n`` SubmitJob calls, ``inflight`` at a time; the rate and each call's seconds."""
        latencies: list[float] = []
        todo = iter(range(n))

        async def lane() -> None:
            for _ in todo:
                t = time.perf_counter()
                await self.stub.SubmitJob(pb.Job(command="true"), timeout=30)
                latencies.append(time.perf_counter() - t)

        t = time.monotonic()
        await asyncio.gather(*(lane() for _ in range(inflight)))
        return Rate(n, time.monotonic() - t), latencies

    async def submit_batches(self, n: int) -> Rate:
        t = time.monotonic()
        for start in range(0, n, BATCH):
            jobs = [pb.Job(command="true") for _ in range(min(BATCH, n - start))]
            await self.stub.SubmitJobs(pb.JobBatch(jobs=jobs), timeout=60)
        return Rate(n, time.monotonic() - t)

    async def end_to_end(self, n: int, submit: str, inflight: int) -> tuple[Rate, float]:
        """``n`` jobs end to end; the rate, and the CPU per job (µs) of every process of the system (the
        server, the workers with their launchers and jobs, PostgreSQL, Redis, etcd) and this client."""
        await self.reset()
        cpu = Cpu(self.bench.pids())
        t = time.monotonic()
        if submit == "single":
            await self.submit_singles(n, inflight)
        else:
            await self.submit_batches(n)
        done = await self.wait_done(n)
        return Rate(n, done - t), cpu.total_per(n)

    async def start_latency(self, rate: int, n: int) -> Latency:
        """Jobs submitted at ``rate`` per second; started_at - created_at, both PostgreSQL's now()."""
        await self.reset()
        t0 = time.perf_counter()
        for i in range(n):
            await self.stub.SubmitJob(pb.Job(command="true"), timeout=30)
            delay = t0 + (i + 1) / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await self.wait_done(n)
        rows = await self.pg.fetch("SELECT extract(epoch FROM started_at - created_at) AS d FROM jobs")
        waits = [float(row["d"]) * 1000 for row in rows]
        return Latency(pct(waits, 0.5), pct(waits, 0.99))


@contextlib.asynccontextmanager
async def warmed(bench: JobclusterBench, inflight: int) -> AsyncIterator[tuple[Measure, grpc.aio.Channel]]:
    """A Measure on fresh connections to the bench's server, PostgreSQL and Redis, with the server's
    pools and the channel warmed by 100 submissions and the jobs table emptied again."""
    pg = await asyncpg.connect(bench.dsn)
    r = aioredis.Redis.from_url(bench.redis_url)
    try:
        async with open_aio_channel(bench.address) as channel:
            m = Measure(bench, pb_grpc.JobServiceStub(channel), pg, r)
            await m.reset()
            await m.submit_singles(100, inflight)
            await m.reset()
            yield m, channel
    finally:
        await pg.close()
        await r.aclose()


async def measure_round(
    bench: JobclusterBench, tag: str, jobs: int, stored_jobs: int, inflight: int, rate: int, rate_jobs: int
) -> dict[str, Any]:
    """One round: submissions alone (no workers), then with two workers end to end and the start latency."""
    async with warmed(bench, inflight) as (m, _):
        assert bench.server is not None
        server = Cpu([bench.server.pid])
        submit, lat = await m.submit_singles(jobs, inflight)
        (server_s,), _ = server.used()
        await m.reset()
        stored = await m.submit_batches(stored_jobs)
        await m.reset()
        await m.wait_workers(bench.start_workers(tag))
        try:
            single, single_cpu = await m.end_to_end(jobs, "single", inflight)
            batched, batched_cpu = await m.end_to_end(jobs, "batched", inflight)
            start = await m.start_latency(rate, rate_jobs)
        finally:
            bench.stop_workers()
        await m.reset()
    return {
        "jc_single": single,
        "jc_batched": batched,
        "jc_single_cpu": single_cpu,
        "jc_batched_cpu": batched_cpu,
        "jc_submit": submit,
        "jc_submit_lat": Latency(pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000),
        "jc_submit_server_cpu": server_s * 1e6 / jobs,
        "jc_stored": stored,
        "jc_start": start,
    }


async def measure_submit(
    bench: JobclusterBench, jobs: int, stored_jobs: int, inflight: int, cpu: Cpu | None = None
) -> tuple[Rate, Latency, Rate, str, str, str]:
    """Submissions alone, no workers (`bench.py --submit-only`): SubmitJob ``inflight`` at a time (rate,
    latency in ms) and SubmitJobs of 1,000 (jobs stored per second), and with ``cpu`` the CPU per call
    and per stored job, and per Health.Check call at the same concurrency (the floor of a call)."""
    async with warmed(bench, inflight) as (m, channel):
        floor = ""
        if cpu:  # the cost of any unary call on this server: Health.Check, no store behind it
            health = health_pb2_grpc.HealthStub(channel)
            cpu.mark()
            todo = iter(range(jobs))

            async def check() -> None:
                for _ in todo:
                    await health.Check(health_pb2.HealthCheckRequest(), timeout=30)

            await asyncio.gather(*(check() for _ in range(inflight)))
            floor = cpu.per(jobs)
            cpu.mark()
        submit, lat = await m.submit_singles(jobs, inflight)
        per_call = cpu.per(jobs) if cpu else ""
        await m.reset()
        if cpu:
            cpu.mark()
        stored = await m.submit_batches(stored_jobs)
        per_job = cpu.per(stored_jobs) if cpu else ""
        await m.reset()
    return submit, Latency(pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000), stored, per_call, per_job, floor
