"""Cron schedules through the API, and the leader's cron duty with two leaders at once."""

import asyncio
import datetime as dt

import grpc
import pytest

from jobcluster.model import ScheduleSpec
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.store import Fenced
from scheduler_server.leader import Leader


async def test_invalid_cron_or_timezone_is_invalid_argument(stub):
    for sch, fragment in [
        (pb.Schedule(name="a", cron="61 * * * *", command="true"), "invalid cron expression '61 * * * *'"),
        (pb.Schedule(name="a", cron="* * * * *", timezone="Mars/Base", command="true"), "unknown timezone"),
        (pb.Schedule(name="a", cron="* * * * *", command=""), "command is empty"),
        (pb.Schedule(name="", cron="* * * * *", command="true"), "needs a name"),
        (pb.Schedule(name="a", cron="* * * * *", command="true", catchup="all"), "catchup"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateSchedule(sch)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in err.value.details()


async def test_schedule_crud(stub, queue):
    made = await stub.CreateSchedule(
        pb.Schedule(name="nightly", cron="0 3 * * *", timezone="Europe/Paris", command="echo night", max_retries=1)
    )
    assert made.enabled and made.next_run_ms > 0 and made.catchup == "skip" and made.overlap == "allow"
    again = await stub.CreateSchedule(pb.Schedule(name="nightly", cron="0 4 * * *", command="echo later"))
    assert again.id == made.id and again.cron == "0 4 * * *"
    paused = await stub.PauseSchedule(pb.ScheduleRef(name="nightly"))
    assert not paused.enabled
    resumed = await stub.ResumeSchedule(pb.ScheduleRef(name="nightly"))
    assert resumed.enabled
    run = await stub.RunScheduleNow(pb.ScheduleRef(name="nightly"))
    job = await stub.GetJobStatus(pb.JobId(id=run.job_id))
    assert job.command == "echo later" and job.schedule_id == made.id
    listed = await stub.ListSchedules(pb.ListSchedulesRequest())
    assert [s.name for s in listed.schedules] == ["nightly"] and listed.schedules[0].last_job_id == ""
    await stub.DeleteSchedule(pb.ScheduleRef(name="nightly"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.DeleteSchedule(pb.ScheduleRef(name="nightly"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


class _Forced:
    """An election that says 'leading' with a given token: two servers forced to lead at once."""

    def __init__(self, token: int, identity: str) -> None:
        self.token, self.identity = token, identity

    def leading(self) -> bool:
        return True


def _sch(name: str) -> ScheduleSpec:
    return ScheduleSpec(
        name=name,
        cron="* * * * *",
        timezone="UTC",
        command="true",
        description="",
        max_retries=0,
        timeout_seconds=10.0,
        catchup="skip",
        overlap="allow",
    )


# No server here: its real leader would fire the schedule itself.
async def test_two_leaders_at_once_still_make_one_job_per_tick(store, queue, settings):
    tick = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    await store.schedules.upsert(_sch("every-minute"), tick, max_schedules=10)
    a = Leader(settings, store, queue, _Forced(7, "a"), address="a")  # type: ignore[arg-type]
    b = Leader(settings, store, queue, _Forced(7, "b"), address="b")  # type: ignore[arg-type]
    assert await store.fencing.take(7, "a")
    sch = (await store.schedules.due(dt.datetime.now(dt.timezone.utc)))[0]
    made = await asyncio.gather(
        *(leader.life.ticks.fire(7, sch, tick + dt.timedelta(seconds=1)) for leader in (a, b, a, b))
    )
    assert sum(len(m) for m in made) == 1
    assert await store.pool.fetchval("SELECT count(*) FROM jobs WHERE scheduled_for = $1", tick) == 1


async def test_a_deposed_leader_cannot_write(store, queue, settings):
    tick = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    await store.schedules.upsert(_sch("m"), tick, max_schedules=10)
    old = Leader(settings, store, queue, _Forced(10, "old"), address="old")  # type: ignore[arg-type]
    assert await store.fencing.take(10, "old")
    assert await store.fencing.take(11, "new")  # a newer term began
    assert not await store.fencing.take(10, "old")  # and an old one cannot come back
    sch = (await store.schedules.due(dt.datetime.now(dt.timezone.utc)))[0]
    with pytest.raises(Fenced):
        await old.life.ticks.fire(10, sch, tick + dt.timedelta(seconds=1))
    assert await store.pool.fetchval("SELECT count(*) FROM jobs") == 0
