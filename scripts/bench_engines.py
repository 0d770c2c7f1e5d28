"""`make bench`'s engine ceilings: how many jobs/s one PostgreSQL and one Redis could carry here, alone.

Each engine is driven by its own C benchmark (no Python client in the way), on the bench's private
services, while nothing else of the bench runs:

- PostgreSQL (fsync on): ``pgbench`` running a job's three commits against our schema, the way the
  programs write them: the INSERT of a submit, the claim (job RUNNING + its attempt row, one
  statement), the settle (attempt closed + job SUCCEEDED, one statement). One pgbench transaction
  is one job.
- Redis: ``redis-benchmark`` LPUSH and LPOP; a job costs about three Redis round trips (push,
  move to a processing list, ack), so a third of the slower rate is its ceiling in jobs/s. Our Lua
  scripts do a little more per call than these plain commands: read it as an upper bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from devtools import services as svc
from jobcluster.settings import Settings
from jobcluster.store import Store

#: One job's PostgreSQL writes (jobcluster/sql/jobs.sql insert_job, claim_job, finish_attempt, trimmed to
#: the columns they set), in pgbench's syntax: three statements, three commits.
JOB_SCRIPT = """\
INSERT INTO jobs (id, command, status, max_retries, timeout_seconds, submitted_via)
VALUES (gen_random_uuid(), 'true', 'QUEUED', 3, 3600, 'pgbench') RETURNING quote_literal(id) AS job \\gset
WITH claimed AS (UPDATE jobs SET status = 'RUNNING', attempts = attempts + 1, worker_id = 'pgbench',
                 started_at = now(), updated_at = now()
                 WHERE id = :job AND status IN ('QUEUED', 'PENDING') AND not_before <= now()
                 RETURNING id, attempts)
INSERT INTO job_attempts (job_id, attempt, worker_id) SELECT id, attempts, 'pgbench' FROM claimed;
WITH job AS (UPDATE jobs SET status = 'SUCCEEDED', exit_code = 0, finished_at = now(), updated_at = now()
             WHERE id = :job AND attempts = 1 AND status = 'RUNNING' RETURNING id)
UPDATE job_attempts SET finished_at = now(), exit_code = 0, output = ''
 WHERE job_id = :job AND attempt = 1 AND EXISTS (SELECT 1 FROM job);
"""
REDIS_TRIPS_PER_JOB = 3


@dataclass(frozen=True)
class Ceilings:
    """Jobs/s each engine sustained alone (0 when its tool is missing), and how it was measured."""

    pg_jobs_per_s: float
    pg_how: str
    redis_ops_per_s: float
    redis_how: str

    @property
    def redis_jobs_per_s(self) -> float:
        return self.redis_ops_per_s / REDIS_TRIPS_PER_JOB


def pg_ceiling(pg: svc.Service, seconds: int = 10, clients: int = 16) -> tuple[float, str]:
    """pgbench's transactions per second for JOB_SCRIPT: jobs/s one PostgreSQL commits here."""
    tool = svc.which("pgbench")
    if tool is None:
        return 0.0, "pgbench not installed"
    url = urlsplit(pg.url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(JOB_SCRIPT)
        script.flush()
        cmd = [
            tool,
            "-h",
            url.hostname or "127.0.0.1",
            "-p",
            str(url.port),
            "-U",
            url.username or "postgres",
            "-n",
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            "-f",
            script.name,
            url.path.lstrip("/"),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("tps = "):
            tps = float(line.split()[2])
            return tps, f"pgbench -c {clients} -T {seconds}, a job's 3 commits a transaction"
    raise RuntimeError(f"pgbench failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


def redis_ceiling(redis: svc.Service, requests: int = 200_000, clients: int = 16) -> tuple[float, str]:
    """The slower of LPUSH and LPOP, in requests per second (redis-benchmark)."""
    tool = svc.which("redis-benchmark")
    if tool is None:
        return 0.0, "redis-benchmark not installed"
    host, port = redis.url.rsplit(":", 1)
    done = subprocess.run(
        [tool, "-h", host, "-p", port, "-c", str(clients), "-n", str(requests), "-t", "lpush,lpop", "--csv"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    rates = [float(row[1]) for row in csv.reader(io.StringIO(done.stdout)) if row and row[0] in ("LPUSH", "LPOP")]
    if not rates:
        raise RuntimeError(f"redis-benchmark failed ({done.returncode}): {done.stderr.strip()}")
    return min(rates), f"redis-benchmark -c {clients} -n {requests:,} LPUSH/LPOP, no pipelining"


def fsync_figure(directory: Path) -> str:
    """pg_test_fsync's fdatasync (Linux's default wal_sync_method) for one 8 kB write in ``directory``:
    what one commit's flush costs on this disk. Only its first comparison is waited for (about 5 s)."""
    tool = svc.which("pg_test_fsync")
    if tool is None:
        return "pg_test_fsync: not installed"
    target = directory / "pg_test_fsync.tmp"
    proc = subprocess.Popen([tool, "-s", "1", "-f", str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            words = line.split()
            if words[:1] == ["fdatasync"] and "ops/sec" in words:
                return f"pg_test_fsync: fdatasync of one 8 kB write {words[1]} ops/s, {words[3]} µs each"
        return f"pg_test_fsync: no fdatasync figure (exit {proc.wait()})"
    finally:
        proc.kill()
        proc.wait()
        target.unlink(missing_ok=True)


def ceilings(started: dict[str, svc.Service]) -> Ceilings:
    pg, pg_how = pg_ceiling(started["postgres"])
    redis, redis_how = redis_ceiling(started["redis"])
    return Ceilings(pg, pg_how, redis, redis_how)


def lines(c: Ceilings) -> list[str]:
    """What to print below the table."""
    return [
        f"one PostgreSQL alone (fsync on): {c.pg_jobs_per_s:,.0f} jobs/s ({c.pg_how})",
        f"one Redis alone: {c.redis_ops_per_s:,.0f} requests/s = {c.redis_jobs_per_s:,.0f} jobs/s at "
        f"{REDIS_TRIPS_PER_JOB} round trips a job ({c.redis_how})",
    ]


async def _schema(database_url: str) -> None:
    store = await Store.connect(Settings.from_env({"DATABASE_URL": database_url}))
    await store.close()


if __name__ == "__main__":  # the ceilings alone: PYTHONPATH=. .venv/bin/python scripts/bench_engines.py
    root = Path(tempfile.mkdtemp(prefix="jobcluster-engines-"))
    os.chmod(root, 0o755)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        started = cleanup.enter_context(svc.private_services(root))
        asyncio.run(_schema(started["postgres"].url))
        print("\n".join(lines(ceilings(started))))
        check = subprocess.run(
            [
                svc.which("psql") or "psql",
                started["postgres"].url,
                "-Atc",
                "SELECT status, count(*) FROM jobs GROUP BY status",
            ],
            capture_output=True,
            text=True,
        )
        print("jobs pgbench left, by status:", check.stdout.split())
