"""Cost of routing on the hot path: taking from lanes and claiming with a concurrency key.

    PYTHONPATH=. .venv/bin/python scripts/measure_routing.py [JOBS]   # default 4000

Private Redis and PostgreSQL in a temporary directory (removed afterwards). For JOBS stored jobs each,
16 at a time, it times take (dequeue into a processing list) + claim + finish + ack, once per set-up:

- ``pending_jobs`` only (the seed's path: one lane, BLMOVE when idle);
- 20 lanes served (5 queues x 2 priorities x 2 constraint sets), the jobs spread over them;
- every job with one concurrency key whose limit is never reached (the advisory lock and count);
- jobs with 100 different keys.

The machine is shared, so compare the rows of one run, not figures across runs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

from devtools import services as svc
from jobcluster import keys
from jobcluster import queue as queue_mod
from jobcluster.model import Serving, Status
from jobcluster.queue import Queue
from jobcluster.settings import Settings
from jobcluster.store import Store

INSERT = """INSERT INTO jobs (id, command, status, max_retries, timeout_seconds, queue, priority, constraints,
                              concurrency_key, max_concurrency)
    SELECT gen_random_uuid(), 'true', 'QUEUED', 0, 1, CASE WHEN $4 THEN 'default' ELSE 'q' || (g % $2) END,
           CASE WHEN $4 THEN 0 ELSE (g / $2) % $3 END,
           CASE WHEN g % 2 = 0 OR $4 THEN '{}'::text[] ELSE '{gpu}'::text[] END,
           CASE WHEN $5 = 0 THEN '' ELSE 'key-' || (g % $5) END, CASE WHEN $5 = 0 THEN 0 ELSE 10000 END
      FROM generate_series(1, $1::int) g RETURNING id, queue, priority, constraints"""
PARALLEL = 16


async def _round(
    store: Store, queue: Queue, what: str, n: int, *, queues: int, priorities: int, default_lane: bool, keys_: int
) -> None:
    await store.pool.execute("DELETE FROM job_attempts; DELETE FROM jobs")
    await queue.redis.flushall()
    rows = await store.pool.fetch(INSERT, n, queues, priorities, default_lane, keys_)
    by_lane: dict[str, list[str]] = {}
    for r in rows:
        lane = keys.PENDING if default_lane else keys.lane(r["queue"], r["priority"], r["constraints"])
        by_lane.setdefault(lane, []).append(str(r["id"]))
    await queue.jobs.enqueue_many([(i, 0, lane) for lane, ids in by_lane.items() for i in ids])
    names = tuple(keys.DEFAULT_QUEUE if default_lane else f"q{q}" for q in range(queues))
    done = 0

    async def slot(n: int) -> None:
        nonlocal done
        serving = Serving(queues=names, tags=frozenset({"gpu"}))
        worker = f"w{n}"
        while True:
            job_id = await queue.jobs.dequeue(worker, serving, timeout=0.05)
            if job_id is None:
                return
            claimed = await store.jobs.claim(job_id, worker, uuid.uuid4(), serves=serving)
            assert claimed is not None, job_id
            await store.jobs.finish_attempt(
                claimed, Status.SUCCEEDED, exit_code=0, error="", output="", output_truncated=False
            )
            await queue.jobs.ack(worker, job_id)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(slot(n) for n in range(PARALLEL)))
    secs = time.perf_counter() - started
    print(f"{what:<52} {done / secs:6.0f} take+claim+finish+ack per s ({done} in {secs:.2f}s)")


async def measure(services: dict[str, svc.Service], n: int) -> None:
    settings = replace(
        Settings(),
        database_url=services["postgres"].url,
        redis_addr=services["redis"].url,
        etcd_endpoints=(),
        pg_max_conns=PARALLEL,
    )
    store = await Store.connect(settings)
    queue = Queue(queue_mod.connect_from(settings))
    for _ in range(2):  # the first round warms up
        await _round(store, queue, "pending_jobs only, no key", n, queues=1, priorities=1, default_lane=True, keys_=0)
        await _round(
            store,
            queue,
            "20 lanes (5 queues x 2 priorities x 2 tag sets)",
            n,
            queues=5,
            priorities=2,
            default_lane=False,
            keys_=0,
        )
        await _round(
            store,
            queue,
            "pending_jobs only, one concurrency key (limit 10000)",
            n,
            queues=1,
            priorities=1,
            default_lane=True,
            keys_=1,
        )
        await _round(
            store,
            queue,
            "pending_jobs only, 100 concurrency keys",
            n,
            queues=1,
            priorities=1,
            default_lane=True,
            keys_=100,
        )
    await store.close()
    await queue.redis.aclose()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    root = tempfile.mkdtemp(prefix="jobcluster-routing-")
    os.chmod(root, 0o755)  # PostgreSQL runs as the postgres user
    try:
        with svc.private_services(Path(root)) as services:
            asyncio.run(measure(services, n))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
