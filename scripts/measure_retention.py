"""Submit latency while JOB_RETENTION deletes a backlog of old jobs.

    PYTHONPATH=. .venv/bin/python scripts/measure_retention.py [--old 200000] [--seconds 8]

Private PostgreSQL (fsync on, as under `make start`) in a temporary directory. Stores ``--old`` SUCCEEDED
jobs that finished 30 days ago, each with one attempt (COPY-speed INSERT ... SELECT), then times
submissions (the store's insert, 16 at a time, as one server's SubmitJob sends them) for ``--seconds``
without retention, and again while the leader's retention duty (scheduler_server/retention.py, run every
leader TICK as the leader runs it) deletes the backlog. Prints p50/p99/max of both and how fast the
backlog went. The machine may be shared: compare the rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import asyncpg

from devtools import services as svc
from jobcluster.model import validate_job
from jobcluster.settings import Settings
from jobcluster.store import Store
from scheduler_server.duties import TICK
from scheduler_server.retention import Expiry

INFLIGHT = 16
BACKLOG = """
WITH old AS (
    INSERT INTO jobs (id, command, status, max_retries, timeout_seconds, attempts, created_at, updated_at,
                      started_at, finished_at, exit_code)
    SELECT gen_random_uuid(), 'true', 'SUCCEEDED', 0, 10, 1, t, t, t, t, 0
      FROM generate_series(1, $1::int) g, LATERAL (SELECT now() - interval '30 days' + g * interval '1 ms') AS x(t)
    RETURNING id, finished_at
)
INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, finished_at, exit_code, output)
SELECT id, 1, 'old-worker', finished_at, finished_at, 0, '' FROM old"""


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


async def submits(store: Store, seconds: float, stop: asyncio.Event | None = None) -> list[float]:
    """SubmitJob's store insert, INFLIGHT at a time, for ``seconds`` (or until ``stop``): each call's time."""
    spec = validate_job(
        command="true", name="probe", default_max_retries=0, default_timeout=60.0, max_command_bytes=65536
    )
    took: list[float] = []
    ends = time.monotonic() + seconds

    async def lane() -> None:
        while time.monotonic() < ends and not (stop is not None and stop.is_set()):
            t = time.perf_counter()
            await store.jobs.insert(spec, "measure")
            took.append(time.perf_counter() - t)

    await asyncio.gather(*(lane() for _ in range(INFLIGHT)))
    return took


async def measure(url: str, old: int, seconds: float) -> None:
    settings = replace(Settings(), database_url=url, pg_max_conns=INFLIGHT + 2)
    for _ in range(60):  # the port answers before the database accepts logins
        try:
            store = await Store.connect(settings)
            break
        except asyncpg.CannotConnectNowError:
            await asyncio.sleep(0.5)
    else:
        raise SystemExit(f"PostgreSQL at {url} did not accept logins")
    try:
        t = time.monotonic()
        async with store.pool.acquire() as conn:
            for start in range(0, old, 20_000):  # in parts: the pool's statement timeout is 15 s
                await conn.execute(BACKLOG, min(20_000, old - start), timeout=600)
            await conn.execute("VACUUM ANALYZE jobs", timeout=600)
        print(f"{old:,} old jobs with their attempts stored in {time.monotonic() - t:.1f}s", flush=True)
        assert await store.fencing.take(1, "measure")

        def line(what: str, took: list[float]) -> str:
            return (
                f"  {what:<36} {len(took) / seconds:6.0f} submits/s, p50 {_pct(took, 0.5):5.1f} ms, "
                f"p99 {_pct(took, 0.99):5.1f} ms, max {max(took) * 1000:6.1f} ms"
            )

        quiet = await submits(store, seconds)
        expiry = Expiry(7 * 86400.0, store)
        deleting = asyncio.Event()
        began = time.monotonic()

        async def leader() -> None:  # the duty, every TICK, as Leader._term runs it
            deleting.set()
            while await expiry.step(1, lambda: True):
                await asyncio.sleep(TICK)

        duty = asyncio.create_task(leader())
        await deleting.wait()
        busy = await submits(store, seconds)
        await duty
        took = time.monotonic() - began
        left = await store.pool.fetchval("SELECT count(*) FROM jobs WHERE finished_at < now() - interval '7 days'")
        print(f"\nSubmits, {INFLIGHT} in flight, {seconds:g}s each (store insert, fsync on):")
        print(line("no retention running:", quiet))
        print(line("while retention deletes:", busy))
        print(
            f"\nretention deleted {expiry.deleted:,} jobs (+ their attempts) in {took:.1f}s "
            f"({expiry.deleted / took:,.0f} jobs/s; {left} expired left)"
        )
    finally:
        await store.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", type=int, default=200_000)
    p.add_argument("--seconds", type=float, default=8.0)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="jobcluster-retention-"))
    os.chmod(root, 0o755)  # PostgreSQL runs as postgres and must enter it
    try:
        pg = svc.start_postgres(root / "pg", svc.free_port(), root / "pg.log")
        try:
            print(f"measure_retention on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
            asyncio.run(measure(pg.url, args.old, args.seconds))
        finally:
            pg.stop()
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
