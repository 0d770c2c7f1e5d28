"""JobService: validation, storage, queueing, and the one place errors become gRPC status codes."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from jobcluster import cron, model, queue, store
from jobcluster.cron import InvalidSchedule
from jobcluster.model import InvalidJob, Status, validate_job
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from jobcluster.queue import Queue
from jobcluster.settings import Settings
from jobcluster.store import Store
from scheduler_server.convert import cluster_info, decode_page_token, encode_page_token, job_status, schedule_msg

log = logging.getLogger("server")

R = TypeVar("R")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class NotReady(Exception):
    """The server has not reached PostgreSQL yet."""


def rpc(handler: Handler[R]) -> Handler[R]:
    """Map exceptions to status codes: bad input, missing dependencies, bugs."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await handler(self, request, context)
        except (InvalidJob, InvalidSchedule) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotReady:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "server is starting: PostgreSQL is not reachable yet, try another server")
        except queue.UNAVAILABLE_ERRORS[:2] as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"Redis unavailable: {exc}")
        except store.UNAVAILABLE_ERRORS as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"PostgreSQL unavailable: {exc}")
        raise AssertionError("unreachable")  # context.abort raises

    return wrapper


class JobService(pb_grpc.JobServiceServicer):
    """The gRPC API; stateless, so any number of servers can run side by side."""

    def __init__(self, settings: Settings, queue: Queue, address: str) -> None:
        self.settings = settings
        self.queue = queue
        self.address = address
        self._store: Store | None = None
        self.election = None  # set by the server when it campaigns (GetClusterInfo)

    def attach_store(self, store: Store) -> None:
        self._store = store

    @property
    def store(self) -> Store:
        if self._store is None:
            raise NotReady()
        return self._store

    @rpc
    async def SubmitJob(self, request: pb.Job, context: grpc.aio.ServicerContext) -> pb.JobResponse:
        spec = validate_job(
            command=request.command,
            name=request.name,
            description=request.description,
            max_retries=request.max_retries if request.HasField("max_retries") else None,
            timeout_seconds=request.timeout_seconds if request.HasField("timeout_seconds") else None,
            run_at_ms=request.run_at_ms,
            idempotency_key=request.idempotency_key,
            default_max_retries=self.settings.job_default_max_retries,
            default_timeout=self.settings.job_default_timeout,
            max_command_bytes=self.settings.job_max_command_bytes,
        )
        job_id, inserted, status, due_ms = await self.store.insert_job(spec, self.address)
        try:
            if inserted:
                await self.queue.enqueue(job_id, due_ms if status is Status.PENDING else 0)
            elif status is Status.QUEUED:
                # A retried submit: the first try may have died between INSERT and push.
                await self.queue.ensure_queued(job_id)
        except queue.UNAVAILABLE_ERRORS[:2] as exc:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"job {job_id} is stored but Redis is unavailable ({exc}); "
                "submit again with the same idempotency key to queue it",
            )
        if inserted:
            log.info("job %s accepted (%s)", job_id, status.value)
            return pb.JobResponse(job_id=job_id, success=True, message=f"job accepted ({status.value})")
        return pb.JobResponse(job_id=job_id, success=True, duplicate=True,
                              message=f"idempotency key already used by job {job_id} ({status.value})")

    @rpc
    async def GetJobStatus(self, request: pb.JobId, context: grpc.aio.ServicerContext) -> pb.JobStatus:
        if not request.id:
            raise InvalidJob("id is empty")
        job = await self.store.get_job(request.id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job with id {request.id!r}")
        return job_status(job)

    @rpc
    async def ListJobs(self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext) -> pb.ListJobsResponse:
        status = request.status.strip().upper() or None
        if status is not None and status not in Status.__members__:
            raise InvalidJob(f"unknown status {request.status!r}; one of {', '.join(Status.__members__)}")
        if request.page_size < 0:
            raise InvalidJob("page_size must not be negative")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        for job_id in request.ids:
            try:
                uuid.UUID(job_id)
            except ValueError:
                raise InvalidJob(f"not a job id: {job_id!r}") from None
        try:
            after = decode_page_token(request.page_token) if request.page_token else None
        except ValueError as exc:
            raise InvalidJob(str(exc)) from None
        jobs = await self.store.list_jobs(status=status, ids=list(request.ids) or None, after=after,
                                          limit=size + 1, include_output=request.include_output)
        more = len(jobs) > size
        jobs = jobs[:size]
        token = encode_page_token(jobs[-1]["created_at_us"], jobs[-1]["id"]) if more else ""
        return pb.ListJobsResponse(jobs=[job_status(j) for j in jobs], next_page_token=token)

    # --- cron schedules ---------------------------------------------------------------

    async def _schedule_or_404(self, ref: pb.ScheduleRef, context: grpc.aio.ServicerContext,
                               found: dict[str, Any] | None) -> dict[str, Any]:
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no schedule named {(ref.name or ref.id)!r}")
        return found  # type: ignore[return-value]

    @staticmethod
    def _ref(ref: pb.ScheduleRef) -> str:
        key = (ref.name or ref.id).strip()
        if not key:
            raise InvalidSchedule("give the schedule's name (or id)")
        return key

    @rpc
    async def CreateSchedule(self, request: pb.Schedule, context: grpc.aio.ServicerContext) -> pb.Schedule:
        name = request.name.strip()
        if not name:
            raise InvalidSchedule("a schedule needs a name")
        timezone = request.timezone.strip() or "UTC"
        catchup = request.catchup.strip().lower() or "skip"
        overlap = request.overlap.strip().lower() or "allow"
        cron.validate(request.cron, timezone, catchup, overlap)
        spec = validate_job(
            command=request.command, name=name, description=request.description,
            max_retries=request.max_retries if request.HasField("max_retries") else None,
            timeout_seconds=request.timeout_seconds if request.HasField("timeout_seconds") else None,
            default_max_retries=self.settings.job_default_max_retries,
            default_timeout=self.settings.job_default_timeout,
            max_command_bytes=self.settings.job_max_command_bytes,
        )
        sch = {"name": name, "cron": request.cron.strip(), "timezone": timezone, "command": spec.command,
               "description": spec.description, "max_retries": spec.max_retries,
               "timeout_seconds": spec.timeout_seconds, "catchup": catchup, "overlap": overlap}
        next_run = cron.next_tick(sch["cron"], timezone, model.utcnow())
        saved = await self.store.upsert_schedule(sch, next_run)
        log.info("schedule %s saved: %r (%s), next run %s", name, sch["cron"], timezone, next_run.isoformat())
        return schedule_msg(saved)

    @rpc
    async def ListSchedules(self, request: pb.ListSchedulesRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListSchedulesResponse:
        return pb.ListSchedulesResponse(schedules=[schedule_msg(s) for s in await self.store.list_schedules()])

    @rpc
    async def DeleteSchedule(self, request: pb.ScheduleRef, context: grpc.aio.ServicerContext) -> pb.Schedule:
        gone = await self._schedule_or_404(request, context, await self.store.delete_schedule(self._ref(request)))
        log.info("schedule %s deleted", gone["name"])
        return schedule_msg(gone)

    async def _set_enabled(self, request: pb.ScheduleRef, context: grpc.aio.ServicerContext,
                           enabled: bool) -> pb.Schedule:
        key = self._ref(request)
        current = await self._schedule_or_404(request, context, await self.store.get_schedule(key))
        next_run = cron.next_tick(current["cron"], current["timezone"], model.utcnow())
        updated = await self.store.set_schedule_enabled(key, enabled, next_run)
        return schedule_msg(await self._schedule_or_404(request, context, updated))

    @rpc
    async def PauseSchedule(self, request: pb.ScheduleRef, context: grpc.aio.ServicerContext) -> pb.Schedule:
        return await self._set_enabled(request, context, False)

    @rpc
    async def ResumeSchedule(self, request: pb.ScheduleRef, context: grpc.aio.ServicerContext) -> pb.Schedule:
        return await self._set_enabled(request, context, True)

    @rpc
    async def RunScheduleNow(self, request: pb.ScheduleRef, context: grpc.aio.ServicerContext) -> pb.JobResponse:
        sch = await self._schedule_or_404(request, context, await self.store.get_schedule(self._ref(request)))
        job_id = await self.store.insert_cron_job(None, sch, None, self.address, f"manual:{uuid.uuid4()}")
        assert job_id is not None  # a fresh key always inserts
        try:
            await self.queue.enqueue(job_id)
        except queue.UNAVAILABLE_ERRORS[:2] as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"job {job_id} is stored but Redis is unavailable ({exc}); "
                                "the leader's reconciliation will queue it")
        log.info("schedule %s run now: job %s", sch["name"], job_id)
        return pb.JobResponse(job_id=job_id, success=True, message=f"job of schedule {sch['name']} queued")

    # --- the cluster ------------------------------------------------------------------

    @rpc
    async def GetClusterInfo(self, request: pb.ClusterInfoRequest,
                             context: grpc.aio.ServicerContext) -> pb.ClusterInfo:
        from jobcluster.election import ETCD_ERRORS, read_leader
        leader = None
        election = "off"
        if self.settings.etcd_endpoints:
            election = "etcd"
            try:
                leader = await read_leader(self.settings.etcd_endpoints, self.settings.election_namespace,
                                           self.settings.election_key)
            except ETCD_ERRORS as exc:
                election = f"etcd unreachable: {exc or type(exc).__name__}"
        return cluster_info(
            leader=leader, election=election, servers=await self.queue.servers(),
            workers=await self.queue.worker_infos(), depths=await self.queue.depths(),
            dead_after_ms=int(self.settings.worker_dead_after * 1000), answered_by=self.address)
