"""The load ``make multihost`` keeps on its hosts, and the facts it checks afterwards.

Every job appends ``$JOB_ID $JOB_ATTEMPT start|end <unix time>`` to a side-effect log (as ``make chaos``'s
do), so :mod:`.chaos_checks` can tell a job lost from one run twice. A job's idempotency key names the
scenario that was under way when it was submitted: ``mh-sleep-<scenario>-<n>``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import redis.asyncio as aioredis

from devtools.chaos_checks import AttemptFact, Check, Facts, JobFact, check_executions, check_statuses
from devtools.multihost import MultiHost
from devtools.multihost_services import APP_USER, DATABASE, PG_PORT
from devtools.netns import Network
from jobcluster import keys
from jobcluster.channels import open_aio_channel
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc

CRON = "* * * * * */2"
CRON_NAME = "multihost-cron"
TERMINAL = "('SUCCEEDED', 'FAILED', 'CANCELLED')"


def marked(command: str, log: Path) -> str:
    """``command`` between the start and end lines of the side-effect log."""

    def mark(what: str) -> str:
        return f'echo "$JOB_ID $JOB_ATTEMPT {what} $(date +%s.%N)" >> {log}'

    return f"{mark('start')}; {command}; {mark('end')}"


async def call(
    mh: MultiHost, rpc: Any, hosts: list[int] | None = None, deadline: float = 60.0, timeout: float = 3.0
) -> Any:
    """``rpc(stub, timeout)`` on the hosts' servers in turn until one answers (some are cut off on purpose)."""
    end = time.monotonic() + deadline
    while True:
        for host in random.sample(hosts or mh.hosts, len(hosts or mh.hosts)):
            try:
                async with open_aio_channel(mh.server_address(host), mh.security) as channel:
                    return await rpc(pb_grpc.JobServiceStub(channel), timeout)
            except grpc.RpcError as exc:
                if time.monotonic() > end:
                    raise RuntimeError(f"no server answered for {deadline:.0f}s ({exc.code()})") from None
        await asyncio.sleep(0.2)


@dataclass
class Load:
    """Jobs submitted steadily (``rate`` a second, each sleeping ``0.2..sleep_max`` s) while scenarios run."""

    mh: MultiHost
    log: Path
    rate: float = 4.0
    sleep_max: float = 1.5
    phase: str = "start"
    submitted: dict[str, list[str]] = field(default_factory=dict)  # scenario -> keys (answered with an id)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def job(self, key: str, seconds: float) -> pb.Job:
        return pb.Job(
            command=marked(f"sleep {seconds:.2f}", self.log),
            name="multihost",
            max_retries=5,
            timeout_seconds=60,
            idempotency_key=key,
        )

    async def submit(self, job: pb.Job, phase: str) -> str:
        reply = await call(self.mh, lambda stub, t: stub.SubmitJob(job, timeout=t))
        self.submitted.setdefault(phase, []).append(job.idempotency_key)
        return str(reply.job_id)

    async def run(self) -> None:
        n = 0
        rng = random.Random(7)
        while not self.stop.is_set():
            t0 = time.monotonic()
            n += 1
            phase = self.phase
            await self.submit(self.job(f"mh-sleep-{phase}-{n}", rng.uniform(0.2, self.sleep_max)), phase)
            await asyncio.sleep(max(0.0, 1 / self.rate - (time.monotonic() - t0)))


class Store:
    """Reads of PostgreSQL and Redis on host 1, from the observer, logged in as the programs are."""

    def __init__(self, mh: MultiHost) -> None:
        self.mh = mh

    async def conn(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            host=Network.address(1),
            port=PG_PORT,
            user=APP_USER,
            database=DATABASE,
            password=self.mh.secret("postgres").read_text().strip(),
            timeout=5,
        )

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        conn = await self.conn()
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def value(self, query: str, *args: Any) -> Any:
        rows = await self.fetch(query, *args)
        return rows[0][0] if rows else None

    async def wait(self, query: str, timeout: float, *args: Any, every: float = 0.2) -> float | None:
        """Seconds until ``query`` returns a true value; None if it did not within ``timeout``."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if await self.value(query, *args):
                return time.monotonic() - t0
            await asyncio.sleep(every)
        return None

    async def unfinished(self) -> int:
        return int(await self.value(f"SELECT count(*) FROM jobs WHERE status NOT IN {TERMINAL}"))

    async def dlq(self) -> list[str]:
        host, port = await asyncio.to_thread(self.mh.redis_primary)
        r = aioredis.Redis(
            host=host,
            port=port,
            username=APP_USER,
            password=self.mh.secret("redis").read_text().strip(),
            decode_responses=True,
        )
        try:
            return [str(x) for x in await r.lrange(keys.DLQ, 0, -1)]
        finally:
            await r.aclose()

    async def facts(self, log: Path, load: Load, cron_window: tuple[dt.datetime, dt.datetime]) -> Facts:
        rows = await self.fetch(
            "SELECT id::text, idempotency_key, schedule_id, status, max_retries, scheduled_for, created_at FROM jobs"
        )
        attempts = await self.fetch("SELECT job_id::text, attempt, error FROM job_attempts")
        jobs = [
            JobFact(
                r["id"],
                "cron" if r["schedule_id"] else (r["idempotency_key"] or "?-?").split("-")[1],
                r["status"],
                r["max_retries"],
                r["scheduled_for"],
                r["created_at"],
            )
            for r in rows
        ]
        return Facts(
            jobs=jobs,
            attempts=[AttemptFact(a["job_id"], a["attempt"], a["error"]) for a in attempts],
            log_lines=log.read_text().splitlines(),
            dlq=await self.dlq(),
            submitted=sum(len(k) for k in load.submitted.values()),
            cron_window=cron_window,
            cron_grace=float(self.mh.settings["CRON_MISFIRE_GRACE"].rstrip("s")),
        )


def lost_and_twice(facts: Facts, keys_of: list[str], key_of: dict[str, str]) -> tuple[int, int, list[Check]]:
    """(jobs lost, jobs run twice) among the jobs with these idempotency keys, and the checks behind them."""
    wanted = set(keys_of)
    ids = {jid for jid, key in key_of.items() if key in wanted}
    jobs = [j for j in facts.jobs if j.id in ids]
    ours = Facts(
        jobs=jobs,
        attempts=[a for a in facts.attempts if a.job_id in ids],
        log_lines=[ln for ln in facts.log_lines if ln.split(" ", 1)[0] in ids],
        dlq=[],
        submitted=len(wanted),
    )
    statuses, executions = check_statuses(ours), check_executions(ours)
    lost = len(wanted) - len(jobs) + sum(1 for j in jobs if j.status != "SUCCEEDED")
    twice = executions[0].violations + executions[2].violations
    return lost, twice, [*statuses, *executions]
