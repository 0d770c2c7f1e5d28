"""No caller can take a cron tick (issue 17, item 4), on a real server with its real leader, PostgreSQL
and Redis: a tick's job is unique by its (schedule, tick) record and carries no idempotency key, keys
with a reserved prefix are refused, and RunScheduleNow honours overlap=forbid unless an admin forces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from devtools.services import free_port
from jobcluster import cron
from jobcluster.channels import ChannelSecurity, open_aio_channel
from jobcluster.model import ScheduleSpec
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from jobcluster.queue import Queue
from jobcluster.settings import Settings
from jobcluster.store import Store
from jobcluster.store.schedules import ScheduleBusy
from scheduler_server.leader import Leader
from scheduler_server.server import SchedulerServer
from tests.helpers import wait_for

ADMIN, SUBMITTER, READER = ("admin-token-" + "a" * 32, "submit-token-" + "s" * 32, "read-token-" + "r" * 32)
TOKENS = f"{ADMIN} admin alice\n{SUBMITTER} submit ci\n{READER} read dashboard\n"
JOBCLUSTER = Path(sys.executable).with_name("jobcluster")
#: A squat's run_at: a year ahead, so its key stays taken all that time.
YEAR_AHEAD_MS = int((time.time() + 365 * 86400) * 1000)


@pytest.fixture
async def secured(settings: Settings, store: Store, queue: Queue, tmp_path: Path) -> AsyncIterator[SchedulerServer]:
    """An in-process server (and, through etcd, the leader) that takes the three tokens above."""
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS)
    tokens.chmod(0o600)
    srv = SchedulerServer(replace(settings, server_port=free_port(), auth_tokens_file=str(tokens)))
    await srv.start()
    await wait_for(lambda: srv.store is not None, what="server ready")
    yield srv
    await srv.stop()


async def call(srv: SchedulerServer, token: str, rpc: str, request: Any) -> Any:
    """One call of ``rpc`` with ``token``: the reply, or the AioRpcError."""
    async with open_aio_channel(srv.address, ChannelSecurity(token)) as channel:
        try:
            return await getattr(pb_grpc.JobServiceStub(channel), rpc)(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc


def tick_key(schedule_id: str, tick: dt.datetime) -> str:
    """The idempotency key the leader gave a tick's job before this change (scheduler_server/leader.py)."""
    return f"cron:{schedule_id}:{tick.isoformat()}"


def utc_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)


async def jobs_of_tick(store: Store, schedule_id: str, tick: dt.datetime) -> int:
    return int(
        await store.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE schedule_id = $1 AND scheduled_for = $2", uuid.UUID(schedule_id), tick
        )
    )


async def run_queued(make_worker: Callable[..., Any]) -> None:
    """One burst worker: runs what is queued, then returns."""
    await asyncio.wait_for(make_worker("keys-w", burst=True).run(), timeout=30)


@contextlib.asynccontextmanager
async def worker_running(make_worker: Callable[..., Any]) -> AsyncIterator[None]:
    """A worker taking jobs as the leader queues them, stopped at the end."""
    worker = make_worker("keys-w", burst=False)
    task = asyncio.create_task(worker.run(), name="keys-worker")
    try:
        yield
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=30)


async def all_ran(store: Store, schedule_id: str, ticks: list[dt.datetime]) -> bool:
    return await store.pool.fetchval(
        "SELECT count(*) FROM jobs WHERE schedule_id = $1 AND scheduled_for = ANY($2::timestamptz[]) "
        "AND status = 'SUCCEEDED'",
        uuid.UUID(schedule_id),
        ticks,
    ) >= len(ticks)


async def assert_each_ran_once(store: Store, schedule_id: str, ticks: list[dt.datetime]) -> None:
    """Each tick has exactly one job, the schedule's, without an idempotency key, which ran once and succeeded."""
    rows = await store.pool.fetch(
        "SELECT scheduled_for, status, attempts, idempotency_key FROM jobs WHERE schedule_id = $1 "
        "AND scheduled_for = ANY($2::timestamptz[]) ORDER BY scheduled_for",
        uuid.UUID(schedule_id),
        ticks,
    )
    assert [r["scheduled_for"] for r in rows] == ticks, rows
    assert all((r["status"], r["attempts"], r["idempotency_key"]) == ("SUCCEEDED", 1, None) for r in rows), rows


# --- keys -------------------------------------------------------------------------------------------


async def test_a_submitter_cannot_squat_a_future_tick_and_the_tick_runs_once(secured, store, make_worker):
    made = await call(
        secured, ADMIN, "CreateSchedule", pb.Schedule(name="squat-me", cron="* * * * * */2", command="echo tick")
    )
    # What a `read` token sees is enough to name the keys of the ticks to come.
    [listed] = (await call(secured, READER, "ListSchedules", pb.ListSchedulesRequest())).schedules
    assert listed.id == made.id
    ticks = [utc_ms(listed.next_run_ms + 2000 * i) for i in range(1, 4)]  # 2 s and more ahead
    squats = [
        await call(
            secured,
            SUBMITTER,
            "SubmitJob",
            pb.Job(command="true", idempotency_key=tick_key(made.id, tick), run_at_ms=YEAR_AHEAD_MS),
        )
        for tick in ticks
    ]
    batch = await call(
        secured,
        SUBMITTER,
        "SubmitJobs",
        pb.JobBatch(
            jobs=[
                pb.Job(command="true", idempotency_key="mine-1"),
                pb.Job(
                    command="true", name="squat", idempotency_key=tick_key(made.id, ticks[-1]), run_at_ms=YEAR_AHEAD_MS
                ),
            ]
        ),
    )
    taken = [s.job_id for s in squats if isinstance(s, pb.JobResponse)] + (
        [r.job_id for r in batch.jobs] if isinstance(batch, pb.JobBatchResponse) else []
    )

    async with worker_running(make_worker):
        await wait_for(
            lambda: all_ran(store, made.id, ticks),
            timeout=20,
            what=f"the jobs of ticks {ticks} (squats accepted: {taken})",
        )
    await assert_each_ran_once(store, made.id, ticks)
    for squat in squats:
        assert isinstance(squat, grpc.aio.AioRpcError), f"squat accepted: job {squat.job_id}"
        assert squat.code() == grpc.StatusCode.INVALID_ARGUMENT and "starts with 'cron:'" in squat.details()
    assert isinstance(batch, grpc.aio.AioRpcError) and batch.code() == grpc.StatusCode.INVALID_ARGUMENT, batch
    details = batch.details()
    assert "job 2 ('squat')" in details and "'cron:'" in details and "nothing was stored" in details
    assert await store.pool.fetchval("SELECT count(*) FROM jobs WHERE schedule_id IS NULL") == 0


async def test_reserved_prefixes_are_refused_and_others_are_not(secured, store):
    for key, prefix in (("cron:anything", "cron:"), ("cron:", "cron:"), ("manual:1234", "manual:")):
        for token in (SUBMITTER, ADMIN):
            refused = await call(secured, token, "SubmitJob", pb.Job(command="true", idempotency_key=key))
            assert isinstance(refused, grpc.aio.AioRpcError) and refused.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"starts with {prefix!r}" in refused.details() and "reserved" in refused.details()
    for key in ("crontab-1", "my-cron:1", "CRON:1", "manual"):
        ok = await call(secured, SUBMITTER, "SubmitJob", pb.Job(command="true", idempotency_key=key))
        assert isinstance(ok, pb.JobResponse) and ok.job_id, key
    assert await store.pool.fetchval("SELECT count(*) FROM jobs") == 4


@pytest.mark.long("an upgrade path (keys squatted before migration 0012): ~6 s of cron ticks")
async def test_keys_squatted_before_the_upgrade_stop_no_tick(server, stub, store, make_worker):
    """Rows a caller stored under the old tick keys before this version (written straight into PostgreSQL,
    as the old server accepted them) stand in for no tick."""
    made = await stub.CreateSchedule(
        pb.Schedule(name="squatted", cron="* * * * * */2", command="echo tick", enabled=False)
    )
    after = dt.datetime.now(dt.timezone.utc)
    squatted = []
    for _ in range(8):
        after = cron.next_tick("* * * * * */2", "UTC", after)
        squatted.append(after)
    await store.pool.executemany(
        "INSERT INTO jobs (id, command, status, max_retries, timeout_seconds, idempotency_key, run_at, not_before) "
        "VALUES ($1, 'true', 'PENDING', 0, 10, $2, $3, $3)",
        [(uuid.uuid4(), tick_key(made.id, t), utc_ms(YEAR_AHEAD_MS)) for t in squatted],
    )
    resumed = await stub.ResumeSchedule(pb.ScheduleRef(name="squatted"))
    ticks = [utc_ms(resumed.next_run_ms + 2000 * i) for i in range(3)]
    assert set(ticks) <= set(squatted)
    async with worker_running(make_worker):
        await wait_for(lambda: all_ran(store, made.id, ticks), timeout=20, what=f"the jobs of ticks {ticks}")
    await assert_each_ran_once(store, made.id, ticks)
    assert await store.pool.fetchval("SELECT count(*) FROM jobs WHERE idempotency_key LIKE 'cron:%'") == 8


class _Forced:
    """An election that says 'leading' with a given token (as in test_cron.py)."""

    def __init__(self, token: int, identity: str) -> None:
        self.token, self.identity = token, identity

    def leading(self) -> bool:
        return True


# No server here: its real leader would fire the schedule itself.
async def test_a_tick_fired_under_its_old_key_does_not_fire_again(store, queue, settings):
    tick = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    spec = ScheduleSpec(
        name="upgraded",
        cron="* * * * *",
        timezone="UTC",
        command="true",
        description="",
        max_retries=0,
        timeout_seconds=10.0,
        catchup="skip",
        overlap="allow",
    )
    sch = await store.schedules.upsert(spec, tick, max_schedules=10)
    assert sch is not None
    old = uuid.uuid4()
    await store.pool.execute(  # the old leader's job of this tick, and a caller's squat on the next one
        "INSERT INTO jobs (id, command, status, max_retries, timeout_seconds, idempotency_key, schedule_id, "
        "scheduled_for) VALUES ($1, 'true', 'SUCCEEDED', 0, 10, $2, $3, $4), "
        "($5, 'true', 'PENDING', 0, 10, $6, NULL, NULL)",
        old,
        tick_key(sch.id, tick),
        uuid.UUID(sch.id),
        tick,
        uuid.uuid4(),
        tick_key(sch.id, tick + dt.timedelta(minutes=1)),
    )
    leaders = [Leader(settings, store, queue, _Forced(7, n), address=n) for n in "ab"]  # type: ignore[arg-type]
    assert await store.fencing.take(7, "a")
    [due] = await store.schedules.due(tick + dt.timedelta(seconds=1))
    assert await leaders[0].life.ticks.fire(7, due, tick + dt.timedelta(seconds=1)) == []
    assert await jobs_of_tick(store, sch.id, tick) == 1
    later = tick + dt.timedelta(minutes=1, seconds=1)
    [due] = await store.schedules.due(later)
    made = await asyncio.gather(*(leader.life.ticks.fire(7, due, later) for leader in leaders * 2))
    assert sum(len(m) for m in made) == 1
    assert await jobs_of_tick(store, sch.id, tick + dt.timedelta(minutes=1)) == 1


# --- RunScheduleNow and overlap=forbid ---------------------------------------------------------------


async def test_ticks_and_run_now_share_one_overlap_forbid(store, queue, settings):
    """A run-now job holds the next tick back, the tick's job holds run-now back, as one policy."""
    tick = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    spec = ScheduleSpec(
        name="single",
        cron="* * * * *",
        timezone="UTC",
        command="true",
        description="",
        max_retries=0,
        timeout_seconds=10.0,
        catchup="skip",
        overlap="forbid",
    )
    sch = await store.schedules.upsert(spec, tick, max_schedules=10)
    assert sch is not None
    manual = await store.schedules.run_now(sch, "test", force=False)
    leader = Leader(settings, store, queue, _Forced(7, "a"), address="a")  # type: ignore[arg-type]
    assert await store.fencing.take(7, "a")
    [due] = await store.schedules.due(tick + dt.timedelta(seconds=1))
    assert await leader.life.ticks.fire(7, due, tick + dt.timedelta(seconds=1)) == []
    reason = await store.pool.fetchval("SELECT last_skip_reason FROM schedules WHERE id = $1", uuid.UUID(sch.id))
    assert f"job {manual} of this schedule is still QUEUED (overlap=forbid)" in reason
    await store.pool.execute("UPDATE jobs SET status = 'SUCCEEDED' WHERE id = $1", uuid.UUID(manual))
    later = tick + dt.timedelta(minutes=1, seconds=1)
    [due] = await store.schedules.due(later)
    [fired] = await leader.life.ticks.fire(7, due, later)
    with pytest.raises(ScheduleBusy) as busy:
        await store.schedules.run_now(sch, "test", force=False)
    assert busy.value.job.job_id == fired
    assert await store.schedules.run_now(sch, "test", force=True)


async def test_run_now_honours_overlap_forbid_unless_an_admin_forces_it(secured, store, make_worker, caplog):
    await call(
        secured,
        ADMIN,
        "CreateSchedule",
        pb.Schedule(name="forbidden", cron="0 3 * * *", command="true", overlap="forbid"),
    )
    await call(secured, ADMIN, "CreateSchedule", pb.Schedule(name="allowed", cron="0 3 * * *", command="true"))
    first = await call(secured, SUBMITTER, "RunScheduleNow", pb.ScheduleRef(name="forbidden"))
    assert isinstance(first, pb.JobResponse), first

    for token in (SUBMITTER, ADMIN):  # an admin too, unless it asks to force
        again = await call(secured, token, "RunScheduleNow", pb.ScheduleRef(name="forbidden"))
        assert isinstance(again, grpc.aio.AioRpcError), f"a second run while {first.job_id} waits: {again}"
        assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert first.job_id in again.details() and "overlap=forbid" in again.details() and "force" in again.details()
    for token, need in ((SUBMITTER, "with force needs role admin"), (READER, "needs role submit")):
        denied = await call(secured, token, "RunScheduleNow", pb.ScheduleRef(name="forbidden", force=True))
        assert isinstance(denied, grpc.aio.AioRpcError) and denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert need in denied.details(), denied.details()
    with caplog.at_level(logging.INFO, "audit"):
        forced = await call(secured, ADMIN, "RunScheduleNow", pb.ScheduleRef(name="forbidden", force=True))
    assert isinstance(forced, pb.JobResponse) and forced.job_id != first.job_id
    assert "schedule run by=alice" in caplog.text and f"job={forced.job_id} force" in caplog.text

    allowed = [await call(secured, SUBMITTER, "RunScheduleNow", pb.ScheduleRef(name="allowed")) for _ in range(2)]
    assert all(isinstance(a, pb.JobResponse) for a in allowed), allowed
    await run_queued(make_worker)
    after = await call(secured, SUBMITTER, "RunScheduleNow", pb.ScheduleRef(name="forbidden"))
    assert isinstance(after, pb.JobResponse), after  # the earlier ones ended
    counts = dict(await store.pool.fetch("SELECT name, count(*) FROM jobs GROUP BY name"))
    assert counts == {"forbidden": 3, "allowed": 2}


async def test_concurrent_runs_of_a_forbid_schedule_make_one_job(secured, store):
    """Decided under the schedule's row lock: without it, some of these rounds make two jobs."""
    for n in range(5):
        await call(
            secured,
            ADMIN,
            "CreateSchedule",
            pb.Schedule(name=f"once-{n}", cron="0 3 * * *", command="true", overlap="forbid"),
        )
        answers = await asyncio.gather(
            *(call(secured, SUBMITTER, "RunScheduleNow", pb.ScheduleRef(name=f"once-{n}")) for _ in range(8))
        )
        ok = [a for a in answers if isinstance(a, pb.JobResponse)]
        assert len(ok) == 1, (n, answers)
        assert all(a.code() == grpc.StatusCode.FAILED_PRECONDITION for a in answers if a not in ok)
    assert await store.pool.fetchval("SELECT count(*) FROM jobs") == 5


async def test_the_jobcluster_command_forces_with_an_admin_token(secured, store, tmp_path):
    await call(
        secured,
        ADMIN,
        "CreateSchedule",
        pb.Schedule(name="nightly", cron="0 3 * * *", command="true", overlap="forbid"),
    )
    assert isinstance(await call(secured, SUBMITTER, "RunScheduleNow", pb.ScheduleRef(name="nightly")), pb.JobResponse)

    async def jc(token: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "AUTH_TOKEN": token}
        return await asyncio.to_thread(
            subprocess.run,
            [str(JOBCLUSTER), "schedules", "run", "nightly", *args, "-no-wait", "-servers", secured.address],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    busy = await jc(SUBMITTER)
    assert busy.returncode == 2 and "error: FAILED_PRECONDITION:" in busy.stderr and "-force" in busy.stderr, busy
    weak = await jc(SUBMITTER, "-force")
    assert weak.returncode == 2 and "error: PERMISSION_DENIED:" in weak.stderr and "hint:" in weak.stderr, weak
    forced = await jc(ADMIN, "-force")
    assert forced.returncode == 0 and "submitted" in forced.stdout, forced
    assert await store.pool.fetchval("SELECT count(*) FROM jobs") == 2
    misplaced = await asyncio.to_thread(
        subprocess.run,
        [str(JOBCLUSTER), "submit", "true", "-force"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert misplaced.returncode == 2 and "-force goes with -run-schedule" in misplaced.stderr, misplaced
