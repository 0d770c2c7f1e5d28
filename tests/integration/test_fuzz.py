"""Random Job, Schedule and ListJobsRequest messages at a real server: every answer is OK or a clear
error (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED), never UNKNOWN, and the server stays up."""

import base64
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobcluster.pb import scheduler_pb2 as pb

pytestmark = pytest.mark.long("Hypothesis drives every RPC with random input: ~32 s")

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# Hypothesis favours small numbers: name the edges so they come up.
INT32 = st.sampled_from([2**31 - 1, -(2**31), -1, 101, 10**6]) | st.integers(-(2**31), 2**31 - 1)
INT64 = st.sampled_from([2**63 - 1, -(2**63), 2**62, 2**53, 253_402_300_800_000, 10**15, -1]) | st.integers(
    -(2**63), 2**63 - 1
)
# Protobuf strings are UTF-8: no lone surrogates. NUL, control and odd characters are all in.
TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=300),
    st.sampled_from(["", " ", "\x00", "x" * 70_000, "../../etc/passwd", "é" * 201]),
)
DOUBLE = st.floats(allow_nan=True, allow_infinity=True)
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def messages(
    build: Callable[..., Any], good: dict[str, st.SearchStrategy], bad: dict[str, st.SearchStrategy]
) -> st.SearchStrategy:
    """Messages that are good but for one field (so the garbage gets past the other checks), plus
    wholly good ones and wholly random ones."""

    def with_bad(field: str) -> st.SearchStrategy:
        return st.fixed_dictionaries({**good, field: bad[field]}).map(lambda kw: build(**kw))

    return st.one_of(
        st.fixed_dictionaries(good).map(lambda kw: build(**kw)),
        *(with_bad(field) for field in bad),
        st.fixed_dictionaries(bad).map(lambda kw: build(**kw)),
    )


def _job(**fields: Any) -> pb.Job:
    optional = {k: fields.pop(k) for k in ("max_retries", "timeout_seconds")}
    job = pb.Job(**fields)
    for key, value in optional.items():
        if value is not None:
            setattr(job, key, value)
    return job


NAME = st.text("abcxyz-_ ", max_size=20)
#: Routing fields (issue 10): good ones, and garbage for each.
ROUTING_GOOD = {
    "queue": st.sampled_from(["", "default", "gpu", "a.b-c_1"]),
    "priority": st.integers(0, 9),
    "constraints": st.lists(st.sampled_from(["gpu", "region=eu", "a/b"]), max_size=3),
    "concurrency_key": st.sampled_from(["", "k", "db eu"]),
    "max_concurrency": st.just(0),
}
ROUTING_BAD = {
    "queue": TEXT,
    "priority": INT32,
    "constraints": st.lists(TEXT, max_size=20),
    "concurrency_key": TEXT,
    "max_concurrency": INT32,
}
_UUID = b"4cd0c1ef-d2aa-4324-9b82-ae739a7a3dd5"
TOKEN = st.one_of(
    TEXT,
    st.binary(max_size=60),
    st.sampled_from(
        [
            b"1:notauuid",
            b"-5:" + _UUID,
            b"99999999999999999999:" + _UUID,
            b"1:",
            b":",
            b"1e9:" + _UUID,
        ]
    ),
).map(lambda v: v if isinstance(v, str) else base64.urlsafe_b64encode(v).decode())
JOBS = messages(
    _job,
    good={
        "command": st.sampled_from(["true", "echo hi", "exit 3"]),
        "name": NAME,
        "description": st.just(""),
        "run_at_ms": st.just(0) | st.integers(1_700_000_000_000, 1_900_000_000_000),
        "idempotency_key": st.just("") | st.uuids().map(str),
        "max_retries": st.none() | st.integers(0, 5),
        "timeout_seconds": st.none() | st.floats(0, 100),
        **ROUTING_GOOD,
    },
    bad={
        "command": TEXT,
        "name": TEXT,
        "description": TEXT,
        "run_at_ms": INT64,
        "idempotency_key": TEXT,
        "max_retries": INT32,
        "timeout_seconds": DOUBLE,
        **ROUTING_BAD,
    },
)
SCHEDULES = messages(
    pb.Schedule,
    good={
        "name": NAME,
        "cron": st.sampled_from(["* * * * *", "*/5 * * * *", "0 3 * * 1-5"]),
        "timezone": st.sampled_from(["", "UTC", "Europe/Paris"]),
        "command": st.just("true"),
        "description": st.just(""),
        "catchup": st.sampled_from(["", "skip", "once"]),
        "overlap": st.sampled_from(["", "allow", "forbid"]),
        **ROUTING_GOOD,
    },
    bad={
        "name": TEXT,
        "cron": TEXT
        | st.sampled_from(["0 0 30 2 *", "* * * * * */1", "61 * * * *", "@hourly", "* * * * * * *", "0 0 29 2 1"]),
        "timezone": TEXT,
        "command": TEXT,
        "description": TEXT,
        "catchup": TEXT,
        "overlap": TEXT,
        **ROUTING_BAD,
    },
)
LISTS = messages(
    pb.ListJobsRequest,
    good={
        "status": st.sampled_from(["", "queued", "PENDING", "FAILED"]),
        "page_size": st.integers(0, 100),
        "page_token": st.just(""),
        "include_output": st.booleans(),
        "ids": st.lists(st.uuids().map(str), max_size=3),
        "text": st.just(""),
        "schedule": st.just(""),
        "created_after_ms": st.just(0),
        "created_before_ms": st.just(0),
        "with_counts": st.booleans(),
        "queue": ROUTING_GOOD["queue"],
    },
    bad={
        "status": TEXT,
        "page_size": INT32,
        "page_token": TOKEN,
        "ids": st.lists(TEXT, max_size=3),
        "text": TEXT,
        "schedule": TEXT,
        "created_after_ms": INT64,
        "created_before_ms": INT64,
        "queue": TEXT,
    },
)


async def _answer(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        assert exc.code() in ALLOWED, f"{exc.code().name}: {exc.details()}"
        return exc.code()
    return grpc.StatusCode.OK


@FUZZ
@given(job=JOBS)
async def test_random_jobs(stub, job):
    await _answer(stub.SubmitJob(job, timeout=10))


@FUZZ
@given(jobs=st.lists(JOBS, min_size=0, max_size=4))
async def test_random_batches(stub, jobs):
    await _answer(stub.SubmitJobs(pb.JobBatch(jobs=jobs), timeout=10))


@FUZZ
@given(schedule=SCHEDULES)
async def test_random_schedules(stub, schedule):
    await _answer(stub.CreateSchedule(schedule, timeout=10))
    await _answer(stub.PauseSchedule(pb.ScheduleRef(name=schedule.name), timeout=10))


@FUZZ
@given(request=LISTS)
async def test_random_list_requests(stub, request):
    await _answer(stub.ListJobs(request, timeout=10))


@FUZZ
@given(job_id=TEXT)
async def test_random_ids(stub, job_id):
    for call in (stub.GetJobStatus, stub.CancelJob):
        await _answer(call(pb.JobId(id=job_id), timeout=10))


@FUZZ
@given(name=TEXT, ref_id=TEXT)
async def test_random_schedule_refs(stub, name, ref_id):
    ref = pb.ScheduleRef(name=name, id=ref_id)
    for call in (stub.ResumeSchedule, stub.RunScheduleNow, stub.DeleteSchedule):
        await _answer(call(ref, timeout=10))


@FUZZ
@given(ids=st.lists(TEXT | st.uuids().map(str), max_size=3), everything=st.booleans())
async def test_random_dead_letter_requests(stub, ids, everything):
    request = pb.DeadLettersRequest(ids=ids, all=everything)
    for call in (stub.ListDeadLetters, stub.RetryDeadLetters, stub.PurgeDeadLetters):
        await _answer(call(request, timeout=10))


@FUZZ
@given(job_id=TEXT)
async def test_random_watches(stub, job_id):
    async def first_event() -> None:
        async for _ in stub.WatchJob(pb.JobId(id=job_id), timeout=10):
            return

    await _answer(first_event())


async def test_the_server_is_still_serving_after_the_fuzz(server):
    async with grpc.aio.insecure_channel(server.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
