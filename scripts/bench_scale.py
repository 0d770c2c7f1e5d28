"""`make bench SCALE=1`: is jobcluster as fast with a long history as when empty (issue 11, "flat as it grows")?

One server and two workers with make start's defaults, on private services (PostgreSQL with fsync on). It
measures, first on an empty database and then again after writing a history into it:

- SubmitJob alone, INFLIGHT in flight (workers stopped): calls per second and p99;
- end to end, JOBS `true` jobs by batches of 1,000 and by single calls (two workers);
- reconciliation: what the leader's passes cost Redis while the cluster idles (Redis's own
  ``INFO commandstats`` over a few passes, and the slowest command it ran), with the history once the
  leader has been through every waiting job once;

the history: FINISHED jobs that ended over the last six days (inside JOB_RETENTION, so nothing is deleted
meanwhile), each with its attempt, and QUEUED jobs waiting in a queue no worker serves (``parked``), their
ids in that lane in Redis: written with one server-side ``INSERT ... SELECT generate_series`` each (COPY
speed, no client round trip per row). Then, on DEAD dead letters added to ``dlq_tasks``: ListDeadLetters
(first page), RetryDeadLetters all, and PurgeDeadLetters all (on a fresh DEAD), each timed through the API
while a probe pings Redis every millisecond: the longest ping says how long Redis was blocked. Last, memory
(RSS): the server's before and after SERVER_JOBS more jobs submitted through it (batches of 1,000, into
``parked``), and two new workers' after each quarter of WORKER_JOBS jobs run.

    PYTHONPATH=. .venv/bin/python scripts/bench.py --scale [--finished 1000000] [--queued 100000] [--dead 100000]
                                              [--server-jobs 1000000] [--worker-jobs 20000]
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench_jobcluster import JobclusterBench, Measure, warmed
from bench_stats import Rate, pct
from jobcluster import keys
from jobcluster.pb import scheduler_pb2 as pb
from scheduler_server.healer import WAITING_PAGE

#: The queue the history's waiting jobs sit in: the bench's workers serve only ``default``.
PARKED = "parked"
#: Rows per INSERT of the history (each its own transaction, so PostgreSQL's WAL and memory stay small).
FILL_CHUNK = 200_000


class Since(Measure):
    """A :class:`Measure` that leaves the history alone: it counts and clears only the jobs created since
    ``since``, and only the default lane, delayed jobs and processing lists in Redis."""

    since: dt.datetime

    async def mark(self) -> None:
        self.since = await self.pg.fetchval("SELECT now()")

    async def reset(self) -> None:
        await self.pg.execute("DELETE FROM jobs WHERE created_at >= $1", self.since)
        await self.r.delete(keys.PENDING, keys.DELAYED)
        async for key in self.r.scan_iter(match=keys.PROCESSING_PREFIX + "*", count=1000):
            await self.r.delete(key)

    async def wait_done(self, n: int, timeout: float = 300.0) -> float:
        deadline = time.monotonic() + timeout
        done = 0
        while time.monotonic() < deadline:
            done = await self.pg.fetchval(
                "SELECT count(*) FROM jobs WHERE status = 'SUCCEEDED' AND created_at >= $1", self.since
            )
            if done >= n:
                return time.monotonic()
            await asyncio.sleep(0.02)
        raise TimeoutError(f"jobcluster: only {done} of {n} jobs done; see {self.bench.root}")


@dataclass
class Figures:
    """One pass of the measurements (empty, or with the history)."""

    submit: Rate | None = None
    submit_p99_ms: float = 0.0
    batched: Rate | None = None
    single: Rate | None = None
    reconcile: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class RedisProbe:
    """PINGs Redis every millisecond on its own connection; :meth:`longest` is the slowest reply (ms)
    since :meth:`reset`: how long anything else running meanwhile blocked Redis."""

    def __init__(self, url: str) -> None:
        self.r = aioredis.Redis.from_url(url)
        self.worst = 0.0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stopping:
            t = time.perf_counter()
            await self.r.ping()
            self.worst = max(self.worst, (time.perf_counter() - t) * 1000)
            await asyncio.sleep(0.001)

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[RedisProbe]:
        await self.r.ping()
        self.worst = 0.0
        self._stopping = False
        self._task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            # A flag, not a cancel: redis-py can swallow a cancel that lands inside a command, and the
            # probe then pinged on forever (seen once, the bench hung there).
            self._stopping = True
            await asyncio.wait_for(self._task, timeout=5)
            await self.r.aclose()


async def measure(m: Since, bench: JobclusterBench, tag: str, jobs: int, inflight: int) -> Figures:
    """SubmitJob alone (no workers), then end to end batched and single with two workers."""
    f = Figures()
    await m.reset()
    f.submit, lat = await m.submit_singles(jobs, inflight)
    f.submit_p99_ms = pct(lat, 0.99) * 1000
    await m.reset()
    await m.wait_workers(bench.start_workers(tag))
    try:
        f.batched, _ = await m.end_to_end(jobs, "batched", inflight)
        f.single, _ = await m.end_to_end(jobs, "single", inflight)
    finally:
        bench.stop_workers()
    await m.reset()
    return f


async def reconcile_cost(r: aioredis.Redis, seconds: float, pass_every: float) -> str:
    """What the leader's reconciliation costs Redis while nothing else runs: Redis's CPU per pass over
    ``seconds`` (INFO commandstats), and the slowest command in that time (SLOWLOG)."""
    await r.config_set("slowlog-log-slower-than", 1000)  # µs
    await r.slowlog_reset()
    await r.config_resetstat()
    await asyncio.sleep(seconds)  # the leader's passes run meanwhile; this is what is measured
    stats = await r.info("commandstats")
    slow = await r.slowlog_get(10)
    usec = sum(v["usec"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config", "cmdstat_slowlog"))
    passes = max(1.0, seconds / pass_every)
    worst = max((entry["duration"] for entry in slow), default=0) / 1000
    top = max(((k[8:], v["usec"]) for k, v in stats.items()), key=lambda kv: kv[1], default=("-", 0))
    return (
        f"{usec / passes / 1000:.1f} ms of Redis time a pass (most: {top[0]}), slowest command "
        f"{'under 1 ms' if not slow else f'{worst:.1f} ms'}"
    )


async def fill_history(m: Since, finished: int, queued: int) -> float:
    """``finished`` jobs that ended over the last six days (with their attempts) and ``queued`` waiting in
    PARKED (ids pushed to its lane); returns the seconds it took."""
    t = time.monotonic()
    for start in range(0, finished, FILL_CHUNK):
        n = min(FILL_CHUNK, finished - start)
        await m.pg.execute(f"""
            WITH made AS (
              INSERT INTO jobs (id, command, status, max_retries, timeout_seconds, attempts, exit_code, worker_id,
                                created_at, updated_at, started_at, finished_at, dead_letter_purged_at)
              SELECT gen_random_uuid(), 'echo history ' || i, s.status, 0, 0, 1, s.code, 'bench-history',
                     t, t + interval '2 s', t + interval '1 s', t + interval '2 s', s.purged
                FROM generate_series(1, {n}) AS i,
                     LATERAL (SELECT now() - interval '6 days' * random() AS t) AS tt,
                     LATERAL (SELECT CASE WHEN i % 20 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END AS status,
                                     CASE WHEN i % 20 = 0 THEN 1 ELSE 0 END AS code,
                                     CASE WHEN i % 20 = 0 THEN tt.t + interval '1 h' END AS purged) AS s
              RETURNING id, worker_id, started_at, finished_at, exit_code)
            INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, finished_at, exit_code, output)
            SELECT id, 1, worker_id, started_at, finished_at, exit_code, 'history' FROM made""")
    lane = keys.lane(PARKED, 0, ())
    for start in range(0, queued, FILL_CHUNK):
        n = min(FILL_CHUNK, queued - start)
        ids = await m.pg.fetch(f"""
            INSERT INTO jobs (id, command, status, max_retries, timeout_seconds, queue, created_at, updated_at)
            SELECT gen_random_uuid(), 'true', 'QUEUED', 0, 0, '{PARKED}', now() - interval '1 hour',
                   now() - interval '1 hour'
              FROM generate_series(1, {n})
            RETURNING id""")
        await _push(m.r, lane, [str(row["id"]) for row in ids])
    await m.r.sadd(keys.LANES, lane)
    await m.pg.execute("ANALYZE jobs")
    await m.pg.execute("ANALYZE job_attempts")
    return time.monotonic() - t


async def add_dead_letters(m: Since, n: int) -> None:
    """``n`` FAILED jobs of PARKED, their ids in ``dlq_tasks`` (oldest at the tail, as workers leave them)."""
    rows = await m.pg.fetch(f"""
        INSERT INTO jobs (id, command, status, max_retries, timeout_seconds, queue, attempts, exit_code,
                          last_error, created_at, updated_at, started_at, finished_at)
        SELECT gen_random_uuid(), 'exit 3', 'FAILED', 0, 0, '{PARKED}', 1, 3, 'exit 3', now(), now(), now(), now()
          FROM generate_series(1, {n})
        RETURNING id""")
    await _push(m.r, keys.DLQ, [str(row["id"]) for row in rows])


async def _push(r: aioredis.Redis, key: str, ids: list[str]) -> None:
    async with r.pipeline(transaction=False) as pipe:
        for start in range(0, len(ids), 1000):
            pipe.lpush(key, *ids[start : start + 1000])
        await pipe.execute()


async def dead_letter_ops(m: Since, bench: JobclusterBench, n: int) -> list[tuple[str, float, float]]:
    """(operation, seconds through the API, longest Redis ping meanwhile in ms) for each DLQ operation."""
    out: list[tuple[str, float, float]] = []

    async def timed(what: str, call: Any) -> Any:
        async with RedisProbe(bench.redis_url).watching() as probe:
            t = time.perf_counter()
            reply = await call
            took = time.perf_counter() - t
        out.append((what, took, probe.worst))
        return reply

    await add_dead_letters(m, n)
    listed = await timed(
        f"ListDeadLetters, first page of {n:,}",
        m.stub.ListDeadLetters(pb.DeadLettersRequest(page_size=1000), timeout=120),
    )
    if listed.total < n:
        raise SystemExit(f"ListDeadLetters says {listed.total} dead letters, expected {n}")
    retried = await timed(
        f"RetryDeadLetters all ({n:,})", m.stub.RetryDeadLetters(pb.DeadLettersRequest(all=True), timeout=120)
    )
    if retried.count != n:
        raise SystemExit(f"RetryDeadLetters retried {retried.count}, expected {n}")
    await add_dead_letters(m, n)
    purged = await timed(
        f"PurgeDeadLetters all ({n:,})", m.stub.PurgeDeadLetters(pb.DeadLettersRequest(all=True), timeout=120)
    )
    if purged.count != n:
        raise SystemExit(f"PurgeDeadLetters purged {purged.count}, expected {n}")
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of one process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _rate(r: Rate | None) -> float:
    return r.per_s if r else 0.0


def report(
    empty: Figures,
    full: Figures,
    finished: int,
    queued: int,
    fill_s: float,
    dlq: list[tuple[str, float, float]],
    memory: list[str],
) -> str:
    rows = [
        ("SubmitJob alone, 16 in flight (calls/s)", _rate(empty.submit), _rate(full.submit)),
        ("end to end, batches of 1,000 (jobs/s)", _rate(empty.batched), _rate(full.batched)),
        ("end to end, single SubmitJob calls (jobs/s)", _rate(empty.single), _rate(full.single)),
    ]
    lines = [
        f"history: {finished:,} finished jobs (with their attempts) and {queued:,} queued in '{PARKED}', "
        f"written in {fill_s:.0f} s",
        "",
        "| figure | empty | with the history | ratio | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for what, a, b in rows:
        ratio = b / a if a else 0.0
        lines.append(
            f"| {what} | {a:,.0f} | {b:,.0f} | {ratio:.2f}× | within 20 % (≥ 0.80×) | "
            f"{'met' if ratio >= 0.8 else 'NOT met'} |"
        )
    lines.append(f"| SubmitJob p99 | {empty.submit_p99_ms:.1f} ms | {full.submit_p99_ms:.1f} ms | | | |")
    lines.append(f"| reconciliation, idle cluster | {empty.reconcile} | {full.reconcile} | | flat | see figures |")
    lines += [
        "",
        "| dead-letter operation | took | longest Redis ping meanwhile | goal | met |",
        "|---|---|---|---|---|",
    ]
    for what, took, worst in dlq:
        ok = took < 1.0 and worst <= 50.0
        lines.append(
            f"| {what} | {took:.2f} s | {worst:.1f} ms | < 1 s, Redis blocked ≤ 50 ms | {'met' if ok else 'NOT met'} |"
        )
    lines += ["", "memory:", *(f"- {line}" for line in memory)]
    return "\n".join(lines)


async def measure_memory(
    m: Since, bench: JobclusterBench, server_jobs: int, worker_jobs: int, inflight: int
) -> list[str]:
    """RSS of the server before and after it takes ``server_jobs`` more jobs (SubmitJobs of 1,000, into
    PARKED), and of two new workers every quarter of ``worker_jobs`` `true` jobs run end to end."""
    assert bench.server is not None
    before = rss_mb(bench.server.pid)
    t = time.monotonic()
    for start in range(0, server_jobs, 1000):
        batch = [pb.Job(command="true", queue=PARKED) for _ in range(min(1000, server_jobs - start))]
        await m.stub.SubmitJobs(pb.JobBatch(jobs=batch), timeout=120)
    out = [
        f"server {before:.0f} MB RSS before and {rss_mb(bench.server.pid):.0f} MB after {server_jobs:,} more "
        f"jobs submitted ({server_jobs / (time.monotonic() - t):,.0f} jobs/s; goal < 200 MB)"
    ]
    await m.wait_workers(bench.start_workers("memory"))
    samples: list[str] = []
    try:
        quarter = max(1, worker_jobs // 4)
        for _ in range(4):
            await m.end_to_end(quarter, "batched", inflight)
            samples.append("/".join(f"{rss_mb(w.pid):.0f}" for w in bench.workers))
    finally:
        bench.stop_workers()
    out.append(
        f"two new workers' RSS in MB after each quarter of {worker_jobs:,} jobs: {', '.join(samples)} (goal < 100 MB)"
    )
    return out


async def run_scale(
    bench: JobclusterBench,
    jobs: int,
    inflight: int,
    finished: int,
    queued: int,
    dead: int,
    reconcile_s: float,
    server_jobs: int = 1_000_000,
    worker_jobs: int = 20_000,
) -> str:
    from jobcluster.settings import Settings

    pass_every = max(0.5, Settings().reconcile_after / 2)
    async with warmed(bench, inflight) as (plain, _):
        m = Since(bench, plain.stub, plain.pg, plain.r)
        await m.mark()
        print(f"empty: measuring ({jobs:,} jobs each)", flush=True)
        empty = await measure(m, bench, "empty", jobs, inflight)
        empty.reconcile = await reconcile_cost(m.r, reconcile_s, pass_every)
        print(f"writing the history: {finished:,} finished, {queued:,} queued", flush=True)
        fill_s = await fill_history(m, finished, queued)
        await m.mark()
        print(f"with the history: measuring ({fill_s:.0f} s to write it)", flush=True)
        full = await measure(m, bench, "full", jobs, inflight)
        # Its first cycle through the waiting jobs reads Redis each pass (every job is new to it); what
        # stays is the cost of a pass over a backlog already seen.
        cycle = (queued // WAITING_PAGE + 2) * pass_every
        print(f"waiting {cycle:.0f} s: reconciliation's first cycle through the {queued:,} waiting jobs", flush=True)
        await asyncio.sleep(cycle)
        full.reconcile = await reconcile_cost(m.r, reconcile_s, pass_every)
        print(f"dead letters: {dead:,}", flush=True)
        dlq = await dead_letter_ops(m, bench, dead)
        memory = await measure_memory(m, bench, server_jobs, worker_jobs, inflight)
    return report(empty, full, finished, queued, fill_s, dlq, memory)
