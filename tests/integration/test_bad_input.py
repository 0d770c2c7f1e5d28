"""Each bad input found by trying the API as an attacker would is a clear error, never UNKNOWN.

(The property-based test in test_fuzz.py throws random messages at the same server.)
"""

import base64
from dataclasses import replace

import grpc
import pytest

from jobcluster.model import MAX_TIME_MS
from jobcluster.pb import scheduler_pb2 as pb


async def _code(call) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("job", "says"),
    [
        (pb.Job(command="true", run_at_ms=2**62), "days ahead"),
        (pb.Job(command="true", run_at_ms=-1), "must not be negative"),
        (pb.Job(command="true", name="x" * 201), "over the limit"),
        (pb.Job(command="echo \x00"), "NUL"),
    ],
)
async def test_bad_jobs(stub, job, says):
    code, details = await _code(stub.SubmitJob(job))
    assert (code, says in details) == (INVALID, True), details


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        (pb.ListJobsRequest(page_token=base64.urlsafe_b64encode(b"1:notauuid").decode()), "page_token"),
        (
            pb.ListJobsRequest(
                page_token=base64.urlsafe_b64encode(
                    b"99999999999999999999999:4cd0c1ef-d2aa-4324-9b82-ae739a7a3dd5"
                ).decode()
            ),
            "page_token",
        ),
        (pb.ListJobsRequest(page_token="%%%"), "page_token"),
        (pb.ListJobsRequest(created_after_ms=2**62), "created_after_ms"),
        (pb.ListJobsRequest(created_before_ms=MAX_TIME_MS + 1), "created_before_ms"),
        (pb.ListJobsRequest(text="a\x00b"), "NUL"),
        (pb.ListJobsRequest(text="x" * 1001), "over the limit"),
        (pb.ListJobsRequest(schedule="\x00"), "NUL"),
        (pb.ListJobsRequest(status="DONE"), "unknown status"),
        (pb.ListJobsRequest(page_size=-1), "negative"),
        (pb.ListJobsRequest(ids=["not-an-id"]), "not a job id"),
    ],
)
async def test_bad_list_requests(stub, request_, says):
    code, details = await _code(stub.ListJobs(request_))
    assert (code, says in details) == (INVALID, True), details


async def test_the_latest_time_is_still_fine(stub):
    assert (await _code(stub.ListJobs(pb.ListJobsRequest(created_after_ms=MAX_TIME_MS))))[0] == grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("cron", "says"),
    [
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4 *", "never fires"),
        ("* * * * * */3", "CRON_MIN_INTERVAL"),  # the test server allows 1 s: see below
        ("* " * 150, "over the limit"),
    ],
)
async def test_bad_schedules(stub_strict_cron, cron, says):
    code, details = await _code(stub_strict_cron.CreateSchedule(pb.Schedule(name="s", cron=cron, command="true")))
    assert (code, says in details) == (INVALID, True), details


async def test_schedule_names_are_bounded(stub):
    for ref in (pb.ScheduleRef(name="x" * 500), pb.ScheduleRef(name="a\x00")):
        code, details = await _code(stub.PauseSchedule(ref))
        assert code == INVALID, details


async def test_max_schedules(stub_strict_cron):
    for n in range(3):
        await stub_strict_cron.CreateSchedule(pb.Schedule(name=f"s{n}", cron="*/5 * * * *", command="true"))
    code, details = await _code(
        stub_strict_cron.CreateSchedule(pb.Schedule(name="one-too-many", cron="*/5 * * * *", command="true"))
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "MAX_SCHEDULES" in details
    # an existing one can still be updated
    assert (
        await stub_strict_cron.CreateSchedule(pb.Schedule(name="s1", cron="*/10 * * * *", command="true"))
    ).cron == "*/10 * * * *"


@pytest.fixture
async def stub_strict_cron(settings, store, queue):
    """A server with the default CRON_MIN_INTERVAL (10 s) and MAX_SCHEDULES 3."""
    from devtools.services import free_port
    from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
    from scheduler_server.server import SchedulerServer
    from tests.helpers import wait_for

    srv = SchedulerServer(
        replace(settings, server_port=free_port(), cron_min_interval=10.0, max_schedules=3, etcd_endpoints=())
    )
    await srv.start()
    await wait_for(lambda: srv.store is not None, what="server ready")
    async with grpc.aio.insecure_channel(srv.address) as channel:
        yield pb_grpc.JobServiceStub(channel)
    await srv.stop()
