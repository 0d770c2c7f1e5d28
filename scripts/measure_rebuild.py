"""Cost of rebuilding ``dlq_tasks``: one reconciliation pass with a big DLQ among many finished jobs.

    PYTHONPATH=. .venv/bin/python scripts/measure_rebuild.py [DEAD] [FINISHED]   # default 100000 1000000

Private Redis and PostgreSQL in a temporary directory (removed afterwards). Prints the time of an
ordinary pass (nothing new), of a pass after 100 new dead letters (one missing from ``dlq_tasks``),
of the full rebuilds of ``pending_jobs`` (100,000 QUEUED jobs) and ``dlq_tasks`` after FLUSHALL, and
Redis' slowest commands.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import replace
from pathlib import Path

import redis

from devtools import services as svc
from jobcluster import keys
from jobcluster import queue as queue_mod
from jobcluster.queue import Queue
from jobcluster.settings import Settings
from jobcluster.store import Store
from scheduler_server.healer import rebuild_waiting, reconcile_dead_letters

INSERT = """INSERT INTO jobs (id, command, status, max_retries, timeout_seconds, updated_at)
    SELECT gen_random_uuid(), 'true', CASE WHEN g <= $1::int THEN 'FAILED' ELSE 'SUCCEEDED' END, 0, 1,
           now() - make_interval(secs => $4) FROM generate_series($2::int, $3::int) g RETURNING id, status"""

WAITING = """INSERT INTO jobs (id, command, status, max_retries, timeout_seconds, updated_at)
    SELECT gen_random_uuid(), 'true', 'QUEUED', 0, 1, now() - interval '1 minute'
      FROM generate_series(1, $1::int) RETURNING id"""
QUEUED = 100_000


async def _timed(what: str, pass_: Awaitable[int]) -> None:
    started = time.perf_counter()
    pushed = await pass_
    print(f"{what}: {1000 * (time.perf_counter() - started):.1f} ms, {pushed} pushed")


async def measure(services: dict[str, svc.Service], dead: int, finished: int) -> None:
    settings = replace(
        Settings(), database_url=services["postgres"].url, redis_addr=services["redis"].url, etcd_endpoints=()
    )
    store = await Store.connect(settings)
    queue = Queue(queue_mod.connect_from(settings))
    total = dead + finished
    for start in range(1, total + 1, 100_000):
        rows = await store.pool.fetch(INSERT, dead, start, min(start + 99_999, total), 3600.0)
        ids = [str(r["id"]) for r in rows if r["status"] == "FAILED"]
        for at in range(0, len(ids), 1000):
            await queue.redis.lpush(keys.DLQ, *ids[at : at + 1000])
    await store.pool.execute("ANALYZE jobs")
    print(f"{dead} dead letters in dlq_tasks, {finished} SUCCEEDED jobs")
    await reconcile_dead_letters(store, queue, 1.0, kept=False)  # the first pass only starts counting
    await _timed("ordinary pass, nothing new", reconcile_dead_letters(store, queue, 1.0, kept=True))
    new = await store.pool.fetch(INSERT, 100, 1, 100, 2.0)
    await queue.redis.lpush(keys.DLQ, *[str(r["id"]) for r in new][:-1])
    await _timed("ordinary pass, 100 new dead letters, 1 missing", reconcile_dead_letters(store, queue, 1.0, kept=True))
    queued = await store.pool.fetch(WAITING, QUEUED)
    for at in range(0, len(queued), 1000):
        await queue.redis.lpush(keys.PENDING, *[str(r["id"]) for r in queued[at : at + 1000]])
    print(f"{QUEUED} QUEUED jobs in pending_jobs")
    await queue.redis.flushall()
    started, n = time.perf_counter(), 0
    async for page in store.reconcile.all_waiting(0.0, 5000):
        n += len(page)
    print(f"reading {n} waiting jobs: {1000 * (time.perf_counter() - started):.1f} ms")
    await _timed("full rebuild of pending_jobs after FLUSHALL", rebuild_waiting(store, queue))
    await _timed("full rebuild of dlq_tasks after FLUSHALL", reconcile_dead_letters(store, queue, 0.0, kept=False))
    print(
        f"pending_jobs now holds {await queue.redis.llen(keys.PENDING)} ids, "
        f"dlq_tasks {await queue.redis.llen(keys.DLQ)}"
    )
    await store.close()
    await queue.redis.aclose()


def main() -> None:
    dead, finished = (int(a) for a in (sys.argv[1:] + ["100000", "1000000"][len(sys.argv) - 1 :])[:2])
    root = tempfile.mkdtemp(prefix="jobcluster-rebuild-")
    os.chmod(root, 0o755)  # PostgreSQL runs as the postgres user
    try:
        with svc.private_services(Path(root)) as services:
            r = redis.Redis(port=services["redis"].port)
            r.config_set("slowlog-log-slower-than", 1000)
            asyncio.run(measure(services, dead, finished))
            slow = sorted((e["duration"] for e in r.slowlog_get(128)), reverse=True)[:3]
            print(f"slowest Redis commands: {', '.join(f'{d / 1000:.1f} ms' for d in slow) or 'none over 1 ms'}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
