"""An in-process stand-in for the servers' JobService, for the web UI's unit tests (no network).

:class:`FakeConnector` goes where :class:`jobcluster.failover.AioChannels` would:
``create_app(SERVERS, FakeConnector(SERVERS))``. Each address gets a
:class:`FakeServer`, whose async methods answer with real protobuf messages,
record what they were asked, and raise a chosen ``grpc.aio.AioRpcError`` on demand.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
from google.protobuf.message import Message
from httpx2 import Response
from starlette.testclient import TestClient

from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from webui.app import create_app
from webui.config import UIConfig
from webui.sessions import Clock

SERVERS = ["a.test:50051", "b.test:50052"]
#: Where the UI under test says it listens: TestClient's requests are addressed (Host) to it.
UI_URL = "http://127.0.0.1:8080"
#: Call metadata as a stub method takes it.
Metadata = Sequence[tuple[str, str]] | None
READ_METHODS = frozenset(
    {"GetJobStatus", "ListJobs", "WatchJob", "ListDeadLetters", "ListSchedules", "GetClusterInfo", "GetStats"}
)


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    """The error a grpc.aio call raises when the server answers ``code``."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@dataclass
class Cluster:
    """What every server sees, as real servers share one database and one queue."""

    jobs: dict[str, pb.JobStatus] = field(default_factory=dict)
    dead: list[pb.DeadLetter] = field(default_factory=list)
    schedules: dict[str, pb.Schedule] = field(default_factory=dict)
    info: pb.ClusterInfo = field(
        default_factory=lambda: pb.ClusterInfo(
            leader=SERVERS[0],
            leader_since_ms=1_700_000_000_000,
            leader_term=7,
            election="etcd",
            pending=3,
            processing=1,
            delayed=2,
            dlq=0,
        )
    )
    #: What GetStats answers.
    stats: pb.Stats = field(default_factory=pb.Stats)
    #: What WatchJob streams.
    events: list[pb.JobEvent] = field(default_factory=list)
    #: Tokens the servers accept in call metadata; None: they check none (any token passes).
    #: A call without metadata stands for the pool's own AUTH_TOKEN and always passes.
    accepted_tokens: set[str] | None = None
    #: Accepted tokens whose role is ``read``: anything but a read RPC is PERMISSION_DENIED.
    read_only: set[str] = field(default_factory=set)


class FakeServer:
    """One server: JobService methods over the shared :class:`Cluster`, its own calls and errors."""

    def __init__(self, address: str, cluster: Cluster) -> None:
        self.address = address
        self.cluster = cluster
        self.calls: list[tuple[str, Message]] = []
        #: (method, the call's ``authorization`` metadata or None), oldest first.
        self.tokens_seen: list[tuple[str, str | None]] = []
        #: method name -> the error it raises instead of answering; "*" for every method.
        self.errors: dict[str, grpc.aio.AioRpcError] = {}
        self.health = "SERVING"

    def _answer(self, method: str, request: Message, metadata: Metadata) -> None:
        self.calls.append((method, request))
        token = dict(metadata or ()).get("authorization")
        self.tokens_seen.append((method, token))
        error = self.errors.get(method) or self.errors.get("*")
        if error is not None:
            raise error
        accepted = self.cluster.accepted_tokens
        if token is not None and accepted is not None and token.removeprefix("Bearer ") not in accepted:
            raise rpc_error(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")
        if token is not None and method not in READ_METHODS and token.removeprefix("Bearer ") in self.cluster.read_only:
            raise rpc_error(grpc.StatusCode.PERMISSION_DENIED, f"role read may not call {method}")

    def tokens_for(self, method: str) -> list[str | None]:
        """The ``authorization`` metadata each ``method`` call carried (None: none, so the pool's own)."""
        return [token for name, token in self.tokens_seen if name == method]

    def asked(self, method: str) -> list[Any]:
        """The requests ``method`` received, oldest first."""
        return [request for name, request in self.calls if name == method]

    def _job(self, job_id: str) -> pb.JobStatus:
        if job_id not in self.cluster.jobs:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, f"no job {job_id}")
        return self.cluster.jobs[job_id]

    async def SubmitJob(self, job: pb.Job, timeout: float | None = None, metadata: Metadata = None) -> pb.JobResponse:
        self._answer("SubmitJob", job, metadata)
        job_id = f"job-{len(self.cluster.jobs) + 1}"
        self.cluster.jobs[job_id] = pb.JobStatus(id=job_id, status="QUEUED", command=job.command, name=job.name)
        return pb.JobResponse(job_id=job_id, success=True)

    async def GetJobStatus(
        self, req: pb.JobId, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.JobStatus:
        self._answer("GetJobStatus", req, metadata)
        return self._job(req.id)

    async def ListJobs(
        self, req: pb.ListJobsRequest, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.ListJobsResponse:
        self._answer("ListJobs", req, metadata)
        jobs = [j for j in self.cluster.jobs.values() if not req.status or j.status == req.status]
        counts: dict[str, int] = {}
        for j in self.cluster.jobs.values():
            counts[j.status] = counts.get(j.status, 0) + 1
        return pb.ListJobsResponse(jobs=jobs, status_counts=counts)

    async def CancelJob(self, req: pb.JobId, timeout: float | None = None, metadata: Metadata = None) -> pb.JobStatus:
        self._answer("CancelJob", req, metadata)
        self._job(req.id).status = "CANCELLED"
        return self.cluster.jobs[req.id]

    def WatchJob(
        self, req: pb.JobId, timeout: float | None = None, metadata: Metadata = None
    ) -> AsyncIterator[pb.JobEvent]:
        async def stream() -> AsyncIterator[pb.JobEvent]:
            self._answer("WatchJob", req, metadata)  # like grpc.aio: the error comes while iterating
            for event in self.cluster.events:
                yield event

        return stream()

    async def ListDeadLetters(
        self, req: pb.DeadLettersRequest, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.DeadLetters:
        self._answer("ListDeadLetters", req, metadata)
        return pb.DeadLetters(dead_letters=self.cluster.dead)

    async def RetryDeadLetters(
        self, req: pb.DeadLettersRequest, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.DeadLettersResult:
        self._answer("RetryDeadLetters", req, metadata)
        ids = [d.id for d in self.cluster.dead] if req.all else list(req.ids)
        return pb.DeadLettersResult(count=len(ids), ids=ids)

    async def PurgeDeadLetters(
        self, req: pb.DeadLettersRequest, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.DeadLettersResult:
        self._answer("PurgeDeadLetters", req, metadata)
        ids = [d.id for d in self.cluster.dead] if req.all else list(req.ids)
        return pb.DeadLettersResult(count=len(ids), ids=ids)

    async def ListSchedules(
        self, req: pb.ListSchedulesRequest, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.ListSchedulesResponse:
        self._answer("ListSchedules", req, metadata)
        return pb.ListSchedulesResponse(schedules=list(self.cluster.schedules.values()))

    async def CreateSchedule(
        self, sch: pb.Schedule, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.Schedule:
        self._answer("CreateSchedule", sch, metadata)
        self.cluster.schedules[sch.name] = pb.Schedule(name=sch.name, cron=sch.cron, command=sch.command, enabled=True)
        return self.cluster.schedules[sch.name]

    def _schedule(self, ref: pb.ScheduleRef) -> pb.Schedule:
        if ref.name not in self.cluster.schedules:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, f"no schedule {ref.name!r}")
        return self.cluster.schedules[ref.name]

    async def PauseSchedule(
        self, ref: pb.ScheduleRef, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.Schedule:
        self._answer("PauseSchedule", ref, metadata)
        self._schedule(ref).enabled = False
        return self._schedule(ref)

    async def ResumeSchedule(
        self, ref: pb.ScheduleRef, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.Schedule:
        self._answer("ResumeSchedule", ref, metadata)
        self._schedule(ref).enabled = True
        return self._schedule(ref)

    async def DeleteSchedule(
        self, ref: pb.ScheduleRef, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.Schedule:
        self._answer("DeleteSchedule", ref, metadata)
        return self.cluster.schedules.pop(self._schedule(ref).name)

    async def RunScheduleNow(
        self, ref: pb.ScheduleRef, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.JobResponse:
        self._answer("RunScheduleNow", ref, metadata)
        return await self.SubmitJob(pb.Job(command=self._schedule(ref).command, name=ref.name))

    async def GetStats(self, req: pb.StatsRequest, timeout: float | None = None, metadata: Metadata = None) -> pb.Stats:
        self._answer("GetStats", req, metadata)
        return self.cluster.stats

    async def GetClusterInfo(
        self, req: pb.ClusterInfoRequest, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.ClusterInfo:
        self._answer("GetClusterInfo", req, metadata)
        return self.cluster.info


class FakeConnector:
    """A :class:`FakeServer` per address, in place of real grpc.aio channels."""

    def __init__(self, addresses: list[str]) -> None:
        self.cluster = Cluster()
        self.servers = {address: FakeServer(address, self.cluster) for address in addresses}
        self.closed = False

    def jobs(self, address: str) -> pb_grpc.JobServiceStub:
        # A FakeServer has the stub's methods; the cast lets it stand in where a stub is expected.
        return cast(pb_grpc.JobServiceStub, self.servers[address])

    async def health(self, address: str) -> str:
        return self.servers[address].health

    async def close(self) -> None:
        self.closed = True

    def down(self, *addresses: str) -> None:
        """These servers stop answering (UNAVAILABLE on every call); all of them when none is named."""
        for address in addresses or tuple(self.servers):
            self.servers[address].errors["*"] = rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused")


NOT_ANSWERING = "The server is not answering (connection refused). Try another server."


def ui_client(
    fake: FakeConnector, config: UIConfig | None = None, clock: Clock = time.monotonic, base_url: str = UI_URL
) -> Iterator[TestClient]:
    """The web UI on ``fake``'s servers, started and stopped (lifespan) around the test."""
    with TestClient(create_app(SERVERS, fake, config, clock), base_url=base_url, follow_redirects=False) as client:
        yield client


def csrf(client: TestClient) -> str:
    """The token a browser would have: the cookie the first page set."""
    client.get("/")
    return client.cookies["jobcluster_csrf"]


def post(client: TestClient, path: str, **fields: str) -> Response:
    """POST a form as the page would, with its CSRF token."""
    return client.post(path, data={"csrf": csrf(client), **fields})
