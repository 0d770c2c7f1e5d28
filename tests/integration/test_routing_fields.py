"""Routing fields (queue, priority, constraints, concurrency key) end to end through a real server:
validation, round trip through SubmitJob / SubmitJobs / GetJobStatus / ListJobs, schedules."""

import asyncio
import datetime as dt

import grpc
import pytest

from jobcluster import keys
from jobcluster.model import ScheduleSpec, validate_routing
from jobcluster.pb import scheduler_pb2 as pb
from scheduler_server.leader import Leader
from tests.helpers import wait_for

ROUTED = dict(
    queue="gpu", priority=7, constraints=["region=eu", "gpu", "gpu"], concurrency_key="db-eu", max_concurrency=2
)


def _routing(msg) -> tuple:
    return msg.queue, msg.priority, list(msg.constraints), msg.concurrency_key, msg.max_concurrency


EXPECTED = ("gpu", 7, ["gpu", "region=eu"], "db-eu", 2)


@pytest.mark.parametrize(
    "fields,fragment",
    [
        (dict(queue="gpu queue"), "queue 'gpu queue' is not a queue name"),
        (dict(queue="q" * 65), "is not a queue name"),
        (dict(queue="a:b"), "is not a queue name"),
        (dict(priority=10), "priority must be 0 to 9 (higher runs first), got 10"),
        (dict(priority=-1), "priority must be 0 to 9"),
        (dict(constraints=[f"t{i}" for i in range(17)]), "constraints has more than 16 tags"),
        (dict(constraints=["gpu,ssd"]), "constraints item 1 'gpu,ssd' is not a tag"),
        (dict(constraints=["gpu", ""]), "constraints item 2 is empty"),
        (dict(constraints=["zone:a"]), "is not a tag"),
        (dict(max_concurrency=2), "max_concurrency needs a concurrency_key"),
        (dict(concurrency_key="k", max_concurrency=10_001), "max_concurrency must be 0 to 10000"),
        (dict(concurrency_key="k" * 129), "concurrency_key is 129 characters, over the limit of 128"),
        (dict(concurrency_key="a\nb"), "concurrency_key contains a control character"),
    ],
)
async def test_bad_routing_is_invalid_argument(stub, store, fields, fragment):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SubmitJob(pb.Job(command="true", **fields))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SubmitJobs(pb.JobBatch(jobs=[pb.Job(command="true"), pb.Job(command="true", name="b", **fields)]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"job 2 ('b'): {fragment}" in err.value.details() or fragment in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateSchedule(pb.Schedule(name="s", cron="* * * * *", command="true", **fields))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in err.value.details()
    assert await store.pool.fetchval("SELECT count(*) FROM jobs") == 0
    assert await store.pool.fetchval("SELECT count(*) FROM schedules") == 0


async def test_fields_round_trip_and_list_filter(stub):
    one = await stub.SubmitJob(pb.Job(command="true", **ROUTED))
    batch = await stub.SubmitJobs(
        pb.JobBatch(
            jobs=[
                pb.Job(command="true", **ROUTED),
                pb.Job(command="true"),
                pb.Job(command="true", queue="slow", constraints=["ssd"]),
            ]
        )
    )
    plain = await stub.SubmitJob(pb.Job(command="true"))
    ids = [one.job_id] + [r.job_id for r in batch.jobs] + [plain.job_id]
    got = [await stub.GetJobStatus(pb.JobId(id=i)) for i in ids]
    assert _routing(got[0]) == EXPECTED and _routing(got[1]) == EXPECTED
    assert _routing(got[2]) == _routing(got[4]) == ("default", 0, [], "", 0)
    assert _routing(got[3]) == ("slow", 0, ["ssd"], "", 0)

    listed = await stub.ListJobs(pb.ListJobsRequest(queue="gpu"))
    assert {j.id for j in listed.jobs} == {one.job_id, batch.jobs[0].job_id}
    assert all(_routing(j) == EXPECTED for j in listed.jobs)
    default = await stub.ListJobs(pb.ListJobsRequest(queue="default"))
    assert {j.id for j in default.jobs} == {batch.jobs[1].job_id, plain.job_id}
    assert len((await stub.ListJobs(pb.ListJobsRequest())).jobs) == 5
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListJobs(pb.ListJobsRequest(queue="no such"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a queue name" in err.value.details()


async def test_seed_client_job_lands_in_pending_jobs(stub, queue):
    """The original Go client sends id, command and created_at only: the default queue, list pending_jobs."""
    resp = await stub.SubmitJob(pb.Job(id="ignored", command="true", created_at=1))
    assert await queue.redis.lrange(keys.PENDING, 0, -1) == [resp.job_id]
    status = await stub.GetJobStatus(pb.JobId(id=resp.job_id))
    assert (status.status, status.queue, status.priority) == ("QUEUED", "default", 0)


async def test_schedule_jobs_inherit_its_routing(stub):
    sch = await stub.CreateSchedule(pb.Schedule(name="nightly", cron="0 3 * * *", command="true", **ROUTED))
    assert _routing(sch) == EXPECTED
    listed = (await stub.ListSchedules(pb.ListSchedulesRequest())).schedules
    assert [_routing(s) for s in listed] == [EXPECTED]
    run = await stub.RunScheduleNow(pb.ScheduleRef(name="nightly"))
    job = await stub.GetJobStatus(pb.JobId(id=run.job_id))
    assert _routing(job) == EXPECTED and job.schedule_id == sch.id
    # an update by name replaces the routing too
    sch = await stub.CreateSchedule(pb.Schedule(name="nightly", cron="0 3 * * *", command="true"))
    assert _routing(sch) == ("default", 0, [], "", 0)


async def _beat(queue, worker_id: str, queues: str, tags: str = "") -> None:
    await queue.liveness.heartbeat(worker_id, {"host": "h", "pid": 1, "slots": 1, "queues": queues, "tags": tags}, 30)


async def _reason(stub, job_id: str) -> str:
    return (await stub.GetJobStatus(pb.JobId(id=job_id))).waiting_reason


async def test_waiting_reason_names_what_no_live_worker_offers(stub, queue):
    gpu = (await stub.SubmitJob(pb.Job(command="true", queue="gpu", constraints=["region=eu", "gpu"]))).job_id
    plain = (await stub.SubmitJob(pb.Job(command="true"))).job_id
    assert await _reason(stub, gpu) == await _reason(stub, plain) == "no live worker"
    # a worker whose heartbeat is older than WORKER_DEAD_AFTER does not count
    await queue.redis.hset(
        keys.worker_info("gone"), mapping={"heartbeat_ms": 1, "queues": "gpu", "tags": "gpu,region=eu"}
    )
    await queue.redis.zadd(keys.WORKERS, {"gone": 1})
    await _beat(queue, "w1", "default")
    assert await _reason(stub, gpu) == "no live worker serves queue gpu"
    assert await _reason(stub, plain) == ""
    await _beat(queue, "w2", "default,gpu", "gpu")
    assert await _reason(stub, gpu) == "no live worker has tags gpu, region=eu"
    await _beat(queue, "w3", "default", "gpu,region=eu")
    assert await _reason(stub, gpu) == "no live worker serving queue gpu has tags gpu, region=eu"
    listed = await stub.ListJobs(pb.ListJobsRequest())
    assert {j.id: j.waiting_reason for j in listed.jobs} == {
        gpu: "no live worker serving queue gpu has tags gpu, region=eu",
        plain: "",
    }
    await _beat(queue, "w4", "gpu", "gpu,region=eu,ssd")
    assert await _reason(stub, gpu) == ""
    info = await stub.GetClusterInfo(pb.ClusterInfoRequest())
    by_id = {w.id: w for w in info.workers}
    assert (list(by_id["w2"].queues), list(by_id["w2"].tags)) == (["default", "gpu"], ["gpu"])
    assert (list(by_id["gone"].queues), by_id["gone"].alive) == (["gpu"], False)


async def test_waiting_reason_for_a_full_concurrency_key(stub, store, queue):
    await _beat(queue, "w1", "default")
    running = [
        (await stub.SubmitJob(pb.Job(command="sleep 9", concurrency_key="db", max_concurrency=2))).job_id
        for _ in range(2)
    ]
    waiting = (await stub.SubmitJob(pb.Job(command="true", concurrency_key="db", max_concurrency=2))).job_id
    assert await _reason(stub, waiting) == ""
    await store.pool.execute("UPDATE jobs SET status = 'RUNNING', worker_id = 'w1' WHERE id = ANY($1::uuid[])", running)
    assert await _reason(stub, waiting) == "waiting for concurrency key db (2 of 2 running)"
    assert await _reason(stub, running[0]) == ""  # RUNNING: nothing to explain
    # without max_concurrency: the key's CONCURRENCY_LIMITS entry, else 1
    other = (await stub.SubmitJob(pb.Job(command="true", concurrency_key="db"))).job_id
    assert await _reason(stub, other) == "waiting for concurrency key db (2 of 1 running)"


class _Forced:
    """An election that says 'leading' (no server here: the leader is driven by hand)."""

    def __init__(self, token: int, identity: str) -> None:
        self.token, self.identity = token, identity

    def leading(self) -> bool:
        return True


async def test_a_cron_tick_fires_a_job_with_the_schedules_routing(store, queue, settings):
    tick = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    spec = ScheduleSpec(
        name="gpu-nightly",
        cron="* * * * *",
        timezone="UTC",
        command="true",
        description="",
        max_retries=0,
        timeout_seconds=10.0,
        catchup="skip",
        overlap="allow",
        **validate_routing(**ROUTED).routing(),
    )
    await store.schedules.upsert(spec, tick, max_schedules=10)
    leader = Leader(settings, store, queue, _Forced(7, "a"), address="a")
    assert await store.fencing.take(7, "a")
    (sch,) = await store.schedules.due(dt.datetime.now(dt.timezone.utc))
    assert len(await leader.life.ticks.fire(7, sch, tick + dt.timedelta(seconds=1))) == 1
    row = await store.pool.fetchrow(
        "SELECT queue, priority, constraints, concurrency_key, max_concurrency FROM jobs WHERE scheduled_for = $1", tick
    )
    assert (row["queue"], row["priority"], row["constraints"], row["concurrency_key"], row["max_concurrency"]) == (
        "gpu",
        7,
        ["gpu", "region=eu"],
        "db-eu",
        2,
    )


async def test_waiting_reason_from_a_real_workers_heartbeat(stub, make_worker):
    """The worker's own info hash (WORKER_QUEUES, WORKER_TAGS) is what the reason is read from."""
    gpu = (await stub.SubmitJob(pb.Job(command="true", queue="gpu"))).job_id
    ssd = (await stub.SubmitJob(pb.Job(command="true", constraints=["ssd"]))).job_id
    worker = make_worker("w-real", burst=False, worker_queues=("default",), worker_tags=("region=eu",))
    running = asyncio.create_task(worker.run())
    try:

        async def serves_default() -> bool:
            return await _reason(stub, gpu) == "no live worker serves queue gpu"

        await wait_for(serves_default, timeout=10, what="the worker's heartbeat")
        assert await _reason(stub, ssd) == "no live worker has tags ssd"
        info = await stub.GetClusterInfo(pb.ClusterInfoRequest())
        (w,) = [w for w in info.workers if w.id == "w-real"]
        assert (list(w.queues), list(w.tags), w.alive) == (["default"], ["region=eu"], True)
    finally:
        worker.stop()
        await running
