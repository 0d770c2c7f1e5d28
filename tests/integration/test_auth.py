"""Tokens, roles, audit and TLS on a real in-process server, called over real gRPC channels.

The same promises through the real programs (server subprocess, ``python -m
client``, ``make start TLS=1``) are in tests/e2e/test_auth.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from devtools.services import free_port
from devtools.tls import DevTls, ensure_server_tls, issue_client_cert
from jobcluster.channels import ChannelSecurity, open_aio_channel, open_channel
from jobcluster.credentials import PROBE_PREFIX
from jobcluster.failover import AioChannels, AioPool, Channels, Pool, ServerDown
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from jobcluster.queue import Queue
from jobcluster.settings import Settings
from jobcluster.store import Store
from scheduler_server.auth import CROWDED, WrongTokens
from scheduler_server.server import SchedulerServer
from scheduler_server.tokens import RPC_ROLES, Role
from tests.helpers import wait_for

ADMIN, SUBMITTER, READER = (
    "admin-token-0123456789abcdef-alice",
    "submit-token-0123456789abcdef-ci",
    "read-token-0123456789abcdef-dashboard",
)
WRONG = "wrong-token-0123456789abcdef-guess"
TOKENS = f"{ADMIN} admin alice\n{SUBMITTER} submit ci\n{READER} read dashboard\n"
UNAUTHENTICATED, DENIED = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED

#: A request for each RPC that changes nothing (each is refused as invalid or not found).
HARMLESS: dict[str, Any] = {
    "SubmitJob": pb.Job(),
    "GetJobStatus": pb.JobId(id="00000000-0000-0000-0000-000000000000"),
    "ListJobs": pb.ListJobsRequest(page_size=1),
    "CreateSchedule": pb.Schedule(),
    "ListSchedules": pb.ListSchedulesRequest(),
    "DeleteSchedule": pb.ScheduleRef(name="no-such-schedule"),
    "PauseSchedule": pb.ScheduleRef(name="no-such-schedule"),
    "ResumeSchedule": pb.ScheduleRef(name="no-such-schedule"),
    "RunScheduleNow": pb.ScheduleRef(name="no-such-schedule"),
    "GetClusterInfo": pb.ClusterInfoRequest(),
    "SubmitJobs": pb.JobBatch(jobs=[pb.Job()]),
    "WatchJob": pb.JobId(id="00000000-0000-0000-0000-000000000000"),
    "CancelJob": pb.JobId(id="00000000-0000-0000-0000-000000000000"),
    "ListDeadLetters": pb.DeadLettersRequest(),
    "RetryDeadLetters": pb.DeadLettersRequest(),
    "PurgeDeadLetters": pb.DeadLettersRequest(),
    "GetStats": pb.StatsRequest(minutes=5),
}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> DevTls:
    return ensure_server_tls(tmp_path_factory.mktemp("tls") / "tls")


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    path.chmod(0o600)
    return path


@pytest.fixture
async def start_server(
    settings: Settings, store: Store, queue: Queue
) -> AsyncIterator[Callable[..., Awaitable[SchedulerServer]]]:
    """``await start_server(auth_tokens_file=...)``: an in-process server with these settings, ready."""
    started: list[SchedulerServer] = []

    async def start(**overrides: Any) -> SchedulerServer:
        srv = SchedulerServer(replace(settings, server_port=free_port(), **overrides))
        await srv.start()
        started.append(srv)
        await wait_for(lambda: srv.store is not None, what="server ready")
        return srv

    yield start
    for srv in started:
        await srv.stop()


async def call(address: str, rpc: str, request: Any, security: ChannelSecurity = ChannelSecurity()) -> Any:
    """One call of ``rpc``; a stream is read to its end. Returns the reply or the RpcError."""
    async with open_aio_channel(address, security) as channel:
        method = getattr(pb_grpc.JobServiceStub(channel), rpc)
        try:
            if rpc == "WatchJob":
                return [event async for event in method(request, timeout=5)]
            return await method(request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc


def code_of(answer: Any) -> grpc.StatusCode:
    return answer.code() if isinstance(answer, grpc.RpcError) else grpc.StatusCode.OK


async def test_without_a_token_configured_every_call_passes_and_changes_are_audited_as_anonymous(
    start_server: Callable[..., Awaitable[SchedulerServer]], caplog: pytest.LogCaptureFixture
) -> None:
    srv = await start_server()
    with caplog.at_level(logging.INFO, "audit"):
        reply = await call(srv.address, "SubmitJob", pb.Job(command="true"))
    assert reply.job_id
    assert "submitted by=anonymous peer=ipv4:127.0.0.1:" in caplog.text and f"job={reply.job_id}" in caplog.text
    for rpc, request in HARMLESS.items():
        assert code_of(await call(srv.address, rpc, request)) not in (UNAUTHENTICATED, DENIED), rpc


async def test_each_rpc_needs_its_role(
    start_server: Callable[..., Awaitable[SchedulerServer]], tokens_file: Path
) -> None:
    srv = await start_server(auth_tokens_file=str(tokens_file))
    assert set(HARMLESS) == set(RPC_ROLES)
    # A wrong token on a unary and a streaming RPC (a few: more would be slowed down, the test below).
    for rpc in ("SubmitJob", "WatchJob", "ListJobs"):
        assert code_of(await call(srv.address, rpc, HARMLESS[rpc], ChannelSecurity(WRONG))) == UNAUTHENTICATED, rpc
    for rpc, request in HARMLESS.items():
        assert code_of(await call(srv.address, rpc, request)) == UNAUTHENTICATED, rpc
        for token, role in ((READER, Role.READ), (SUBMITTER, Role.SUBMIT), (ADMIN, Role.ADMIN)):
            code = code_of(await call(srv.address, rpc, request, ChannelSecurity(token)))
            if role < RPC_ROLES[rpc]:
                assert code == DENIED, (rpc, role)
            else:
                assert code not in (UNAUTHENTICATED, DENIED), (rpc, role, code)


async def test_the_refusals_say_what_to_do(
    start_server: Callable[..., Awaitable[SchedulerServer]], tokens_file: Path
) -> None:
    srv = await start_server(auth_tokens_file=str(tokens_file))
    job = pb.Job(command="true")
    missing = await call(srv.address, "SubmitJob", job)
    assert missing.details() == (
        "no token: send gRPC metadata `authorization: Bearer <token>` (clients: set AUTH_TOKEN)"
    )
    wrong = await call(srv.address, "SubmitJob", job, ChannelSecurity(WRONG))
    assert wrong.details() == "the token is not one this server accepts (AUTH_TOKEN)"
    weak = await call(srv.address, "SubmitJob", job, ChannelSecurity(READER))
    assert weak.details() == "the token of dashboard has role read; SubmitJob needs role submit"


async def test_health_and_reflection_answer_without_a_token(
    start_server: Callable[..., Awaitable[SchedulerServer]], tokens_file: Path
) -> None:
    srv = await start_server(auth_tokens_file=str(tokens_file))
    async with grpc.aio.insecure_channel(srv.address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        services = [s.name async for reply in stream for s in reply.list_services_response.service]
    assert "scheduler.JobService" in services


async def test_refused_calls_are_logged_once_per_peer(
    start_server: Callable[..., Awaitable[SchedulerServer]], tokens_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await start_server(auth_tokens_file=str(tokens_file))
    with caplog.at_level(logging.WARNING, "auth"):
        for _ in range(5):  # five connections from 127.0.0.1, each on a new port
            assert code_of(await call(srv.address, "ListJobs", pb.ListJobsRequest())) == UNAUTHENTICATED
            assert code_of(await call(srv.address, "SubmitJob", pb.Job(), ChannelSecurity(READER))) == DENIED
    refused = [r.getMessage() for r in caplog.records if r.name == "auth" and r.getMessage().startswith("refused")]
    assert len(refused) == 1, refused
    assert refused[0].startswith("refused ListJobs from ipv4:127.0.0.1:") and "UNAUTHENTICATED no token" in refused[0]
    assert ADMIN not in caplog.text and READER not in caplog.text


async def test_a_burst_of_wrong_tokens_is_slowed_down_and_a_right_token_still_works(
    start_server: Callable[..., Awaitable[SchedulerServer]], tokens_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await start_server(auth_tokens_file=str(tokens_file))
    burst, deadline = 20, 1.0

    async def answer(reply: Awaitable[Any]) -> grpc.StatusCode:
        try:
            await reply
        except grpc.aio.AioRpcError as exc:
            assert exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or exc.details() == CROWDED
            return exc.code()
        return grpc.StatusCode.OK

    with caplog.at_level(logging.WARNING, "auth"):
        async with (
            open_aio_channel(srv.address, ChannelSecurity(WRONG)) as channel,
            grpc.aio.insecure_channel(srv.address) as plain,
        ):
            stub = pb_grpc.JobServiceStub(channel)
            calls = [stub.ListJobs(pb.ListJobsRequest(page_size=1), timeout=deadline) for _ in range(burst)]
            # Meanwhile the server serves everyone else: its loop is not blocked.
            health = await health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            codes = Counter([await answer(reply) for reply in calls])
        assert set(codes) <= {UNAUTHENTICATED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
        # Unslowed, all 20 are answered UNAUTHENTICATED within milliseconds. Slowed, the free ones are, then
        # one after 0.1 s, 0.3 s, 0.7 s: no more before the deadline; past QUEUE waiting, the rest at once.
        free = WrongTokens.FREE
        assert free <= codes[UNAUTHENTICATED] <= free + 3, codes
        assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] >= burst - (free + 1 + WrongTokens.QUEUE), codes
        # The calls that gave up left the line: a right token from the same host is answered at once.
        assert (
            code_of(await call(srv.address, "ListJobs", pb.ListJobsRequest(page_size=1), ChannelSecurity(READER)))
            == grpc.StatusCode.OK
        )
    refused = [r.getMessage() for r in caplog.records if r.name == "auth" and r.getMessage().startswith("refused")]
    assert len(refused) == 1, refused  # 20 refused calls from 127.0.0.1 within the minute: one line
    assert WRONG not in caplog.text


async def test_made_up_tokens_are_refused_at_once_and_not_counted_as_guesses(
    start_server: Callable[..., Awaitable[SchedulerServer]], tokens_file: Path
) -> None:
    """The web UI asks whether the servers refuse a made-up token (PROBE_PREFIX) before it trusts a token
    login: that never slows down the UI's own calls."""
    srv = await start_server(auth_tokens_file=str(tokens_file))
    async with open_aio_channel(srv.address, ChannelSecurity(f"{PROBE_PREFIX}{'p' * 32}")) as channel:
        stub = pb_grpc.JobServiceStub(channel)
        replies = [stub.GetClusterInfo(pb.ClusterInfoRequest(), timeout=1.0) for _ in range(3 * WrongTokens.FREE)]
        for reply in replies:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await reply
            assert caught.value.code() == UNAUTHENTICATED
    # None of them counted: a wrong token still has all its free tries.
    async with open_aio_channel(srv.address, ChannelSecurity(WRONG)) as channel:
        stub = pb_grpc.JobServiceStub(channel)
        replies = [stub.GetClusterInfo(pb.ClusterInfoRequest(), timeout=1.0) for _ in range(WrongTokens.FREE)]
        assert [code_of(answer) for answer in await asyncio.gather(*replies, return_exceptions=True)] == [
            UNAUTHENTICATED
        ] * WrongTokens.FREE


async def test_changes_are_audited_with_the_tokens_name(
    start_server: Callable[..., Awaitable[SchedulerServer]], tokens_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await start_server(auth_tokens_file=str(tokens_file))
    ci, alice = ChannelSecurity(SUBMITTER), ChannelSecurity(ADMIN)
    with caplog.at_level(logging.INFO, "audit"):
        job = (await call(srv.address, "SubmitJob", pb.Job(command="sleep 30", run_at_ms=2**40), ci)).job_id
        batch = await call(srv.address, "SubmitJobs", pb.JobBatch(jobs=[pb.Job(command="true", run_at_ms=2**40)]), ci)
        await call(srv.address, "CancelJob", pb.JobId(id=job), ci)
        sch = await call(
            srv.address, "CreateSchedule", pb.Schedule(name="audited", cron="0 3 * * *", command="true"), alice
        )
        await call(srv.address, "PauseSchedule", pb.ScheduleRef(name="audited"), alice)
        await call(srv.address, "ResumeSchedule", pb.ScheduleRef(name="audited"), alice)
        run = await call(srv.address, "RunScheduleNow", pb.ScheduleRef(name="audited"), ci)
        await call(srv.address, "DeleteSchedule", pb.ScheduleRef(name="audited"), alice)
        await call(srv.address, "RetryDeadLetters", pb.DeadLettersRequest(all=True), alice)
        await call(srv.address, "PurgeDeadLetters", pb.DeadLettersRequest(all=True), alice)
        assert code_of(await call(srv.address, "CancelJob", pb.JobId(id=job), ci)) != grpc.StatusCode.OK
    lines = [
        r.getMessage().split(" peer=")[0] + " " + r.getMessage().split(" rpc=")[1]
        for r in caplog.records
        if r.name == "audit"
    ]
    assert lines == [
        f"submitted by=ci SubmitJob job={job}",
        f"submitted by=ci SubmitJobs count=1 jobs={batch.jobs[0].job_id}",
        f"cancelled by=ci CancelJob job={job} status=CANCELLED",
        f"schedule created by=alice CreateSchedule schedule={sch.id} name='audited'",
        f"schedule paused by=alice PauseSchedule schedule={sch.id} name='audited'",
        f"schedule resumed by=alice ResumeSchedule schedule={sch.id} name='audited'",
        f"schedule run by=ci RunScheduleNow schedule='audited' job={run.job_id}",
        f"schedule deleted by=alice DeleteSchedule schedule={sch.id} name='audited'",
        "retried by=alice RetryDeadLetters count=0 jobs=none",
        "purged by=alice PurgeDeadLetters count=0 jobs=all",
    ]  # the second cancel failed: not audited


async def test_a_job_runs_over_tls_and_a_plaintext_client_is_refused(
    start_server: Callable[..., Awaitable[SchedulerServer]], tls: DevTls
) -> None:
    srv = await start_server(auth_token=ADMIN, tls_cert=str(tls.cert), tls_key=str(tls.key))
    secure = ChannelSecurity(ADMIN, str(tls.ca))
    reply = await call(srv.address, "SubmitJob", pb.Job(command="true"), secure)
    assert (await call(srv.address, "GetJobStatus", pb.JobId(id=reply.job_id), secure)).id == reply.job_id
    assert (
        code_of(await call(srv.address, "ListJobs", pb.ListJobsRequest(), ChannelSecurity(ADMIN)))
        == grpc.StatusCode.UNAVAILABLE
    )
    localhost = srv.address.replace("127.0.0.1", "localhost")  # the certificate names both
    assert code_of(await call(localhost, "ListJobs", pb.ListJobsRequest(), secure)) == grpc.StatusCode.OK
    other_ca = ensure_server_tls(tls.directory.parent / "other")
    assert (
        code_of(await call(srv.address, "ListJobs", pb.ListJobsRequest(), ChannelSecurity(ADMIN, str(other_ca.ca))))
        == grpc.StatusCode.UNAVAILABLE
    )


async def test_client_certificates_when_the_server_requires_them(
    start_server: Callable[..., Awaitable[SchedulerServer]], tls: DevTls
) -> None:
    srv = await start_server(auth_token=ADMIN, tls_cert=str(tls.cert), tls_key=str(tls.key), tls_client_ca=str(tls.ca))
    cert, key = issue_client_cert(tls, "robot")
    request = pb.ListJobsRequest()
    assert (
        code_of(await call(srv.address, "ListJobs", request, ChannelSecurity(ADMIN, str(tls.ca))))
        == grpc.StatusCode.UNAVAILABLE
    )
    with_cert = ChannelSecurity(ADMIN, str(tls.ca), str(cert), str(key))
    assert code_of(await call(srv.address, "ListJobs", request, with_cert)) == grpc.StatusCode.OK
    assert code_of(await call(srv.address, "ListJobs", request, replace(with_cert, token=""))) == UNAUTHENTICATED


async def test_the_failover_pools_send_the_token_over_tls(
    start_server: Callable[..., Awaitable[SchedulerServer]], tls: DevTls
) -> None:
    srv = await start_server(auth_token=ADMIN, tls_cert=str(tls.cert), tls_key=str(tls.key))
    secure = ChannelSecurity(ADMIN, str(tls.ca))
    aio_pool = AioPool([srv.address], AioChannels(secure))
    try:
        info, _ = await aio_pool.call(lambda stub: stub.GetClusterInfo(pb.ClusterInfoRequest(), timeout=5))
        assert info.answered_by == srv.address
        assert await aio_pool.health(srv.address) == "SERVING"
        # A call with its own token (the web UI acting for a person) is not given the channel's.
        own = aio_pool.stub().SubmitJob(pb.Job(command="true"), metadata=(("authorization", "Bearer nope"),), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await own
        assert caught.value.code() == UNAUTHENTICATED
    finally:
        await aio_pool.close()

    # The blocking pool (the client) runs in a thread: this loop serves the in-process server.
    def list_jobs(security: ChannelSecurity) -> Any:
        pool = Pool([srv.address], Channels(security))
        try:
            return pool.call(lambda stub: stub.ListJobs(pb.ListJobsRequest(page_size=1), timeout=5))[0]
        finally:
            pool.close()

    def watch_unknown_job(security: ChannelSecurity) -> grpc.StatusCode:
        """A stream (the client's -watch) carries the token too: NOT_FOUND, not UNAUTHENTICATED."""
        with open_channel(srv.address, security) as channel:
            try:
                list(pb_grpc.JobServiceStub(channel).WatchJob(HARMLESS["WatchJob"], timeout=5))
            except grpc.RpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    assert isinstance(await asyncio.to_thread(list_jobs, secure), pb.ListJobsResponse)
    assert await asyncio.to_thread(watch_unknown_job, secure) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ServerDown, match="UNAVAILABLE"):
        await asyncio.to_thread(list_jobs, ChannelSecurity(ADMIN))


async def test_channels_carry_the_message_limits(start_server: Callable[..., Awaitable[SchedulerServer]]) -> None:
    """A request over gRPC's 4 MiB default reaches the server: its receive limit is MAX_MESSAGE_BYTES."""
    srv = await start_server(job_max_command_bytes=1024)
    big = pb.Job(command="x" * (5 * 2**20))
    answer = await call(srv.address, "SubmitJob", big)
    assert code_of(answer) == grpc.StatusCode.INVALID_ARGUMENT  # read whole by the server, then refused

    def blocking_submit() -> grpc.StatusCode:
        with open_channel(srv.address) as channel:
            try:
                pb_grpc.JobServiceStub(channel).SubmitJob(big, timeout=5)
            except grpc.RpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    assert await asyncio.to_thread(blocking_submit) == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_reply_over_grpcs_default_limit_reaches_both_kinds_of_client(
    start_server: Callable[..., Awaitable[SchedulerServer]], make_worker: Callable[..., Any]
) -> None:
    """A 5 MiB output (gRPC's default receive limit is 4 MiB): the channels raise it to MAX_MESSAGE_BYTES."""
    srv = await start_server(job_output_limit=6 * 2**20)
    job_id = (await call(srv.address, "SubmitJob", pb.Job(command="head -c 5000000 /dev/zero | tr '\\0' x"))).job_id
    await make_worker(job_output_limit=6 * 2**20).run()
    reply = await call(srv.address, "GetJobStatus", pb.JobId(id=job_id))
    assert code_of(reply) == grpc.StatusCode.OK and len(reply.output) == 5_000_000

    def blocking_get() -> int:
        with open_channel(srv.address) as channel:
            return len(pb_grpc.JobServiceStub(channel).GetJobStatus(pb.JobId(id=job_id), timeout=5).output)

    assert await asyncio.to_thread(blocking_get) == 5_000_000
