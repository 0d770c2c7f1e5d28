"""JobService: validation, storage, queueing, and the one place errors become gRPC status codes."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from jobcluster import cron, model, queue, store
from jobcluster.cron import InvalidSchedule
from jobcluster.election import ETCD_ERRORS, read_leader
from jobcluster.model import InvalidJob, JobSpec, Status, validate_job
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
MAX_BATCH = 10_000
WATCH_INTERVAL = 0.2
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
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

    def _spec(self, request: pb.Job) -> JobSpec:
        return validate_job(
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

    @rpc
    async def SubmitJob(self, request: pb.Job, context: grpc.aio.ServicerContext) -> pb.JobResponse:
        spec = self._spec(request)
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
        if request.created_after_ms < 0 or request.created_before_ms < 0:
            raise InvalidJob("created_after_ms and created_before_ms must not be negative")
        jobs = await self.store.list_jobs(status=status, ids=list(request.ids) or None, after=after,
                                          limit=size + 1, include_output=request.include_output,
                                          text=request.text.strip() or None,
                                          schedule=request.schedule.strip() or None,
                                          since_ms=request.created_after_ms, until_ms=request.created_before_ms)
        more = len(jobs) > size
        jobs = jobs[:size]
        token = encode_page_token(jobs[-1]["created_at_us"], jobs[-1]["id"]) if more else ""
        resp = pb.ListJobsResponse(jobs=[job_status(j) for j in jobs], next_page_token=token)
        if request.with_counts:
            resp.status_counts.update(await self.store.status_counts())
        return resp

    @rpc
    async def SubmitJobs(self, request: pb.JobBatch, context: grpc.aio.ServicerContext) -> pb.JobBatchResponse:
        if not request.jobs:
            raise InvalidJob("the batch has no jobs")
        if len(request.jobs) > MAX_BATCH:
            raise InvalidJob(f"the batch has {len(request.jobs)} jobs, over the limit of {MAX_BATCH}")
        specs = []
        for n, job in enumerate(request.jobs, start=1):
            try:
                specs.append(self._spec(job))
            except InvalidJob as exc:
                label = f" ({job.name!r})" if job.name else ""
                raise InvalidJob(f"job {n}{label}: {exc}; nothing was stored") from None
        results = await self.store.insert_jobs(specs, self.address)
        try:
            fresh = [(job_id, due_ms if status is Status.PENDING else 0)
                     for job_id, inserted, status, due_ms in results if inserted]
            if fresh:
                await self.queue.enqueue_many(fresh)
            for job_id, inserted, status, _ in results:
                if not inserted and status is Status.QUEUED:
                    # A retried batch: the first try may have died between INSERT and push.
                    await self.queue.ensure_queued(job_id)
        except queue.UNAVAILABLE_ERRORS[:2] as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"{len(results)} jobs are stored but Redis is unavailable ({exc}); submit the "
                                "batch again with the same idempotency keys, or the leader will queue them")
        log.info("batch of %d job(s) accepted", len(results))
        return pb.JobBatchResponse(jobs=[
            pb.JobResponse(job_id=job_id, success=True, duplicate=not inserted,
                           message=f"job accepted ({status.value})" if inserted
                           else f"idempotency key already used by job {job_id} ({status.value})")
            for job_id, inserted, status, _ in results])

    async def WatchJob(self, request: pb.JobId, context: grpc.aio.ServicerContext):
        """Stream the job's changes; not under @rpc (a generator), so errors are mapped here."""
        try:
            if not request.id:
                raise InvalidJob("id is empty")
            last_status, last_bytes = None, -1
            while True:
                job = await self.store.get_job(request.id)
                if job is None:
                    await context.abort(grpc.StatusCode.NOT_FOUND, f"no job with id {request.id!r}")
                final = job["status"] in TERMINAL
                live = None if final or job["status"] != "RUNNING" else await self.queue.live_output(request.id)
                live_bytes = live[0] if live else 0
                if job["status"] != last_status or final or (live and live_bytes != last_bytes):
                    event = pb.JobEvent(job=job_status(job), final=final)
                    if live:
                        event.live_output, event.live_output_bytes = live[1], live_bytes
                    yield event
                    last_status, last_bytes = job["status"], live_bytes
                if final:
                    return
                await asyncio.sleep(WATCH_INTERVAL)
        except (InvalidJob, NotReady, *queue.UNAVAILABLE_ERRORS[:2], *store.UNAVAILABLE_ERRORS) as exc:
            code = grpc.StatusCode.INVALID_ARGUMENT if isinstance(exc, InvalidJob) else grpc.StatusCode.UNAVAILABLE
            await context.abort(code, str(exc) or "server is starting: PostgreSQL is not reachable yet")

    @rpc
    async def CancelJob(self, request: pb.JobId, context: grpc.aio.ServicerContext) -> pb.JobStatus:
        if not request.id:
            raise InvalidJob("id is empty")
        try:
            uuid.UUID(request.id)
        except ValueError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job with id {request.id!r}")
        outcome = await self.store.cancel_job(request.id, "cancelled")
        if outcome is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job with id {request.id!r}")
        if isinstance(outcome, str):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"job {request.id} has already ended ({outcome}); nothing to cancel")
        was, worker_id, _ = outcome  # type: ignore[misc]
        if was in ("QUEUED", "PENDING"):
            await self.queue.withdraw(request.id)
        log.info("job %s cancelled (was %s%s)", request.id, was, f" on {worker_id}" if worker_id else "")
        job = await self.store.get_job(request.id)
        return job_status(job)  # type: ignore[arg-type]

    # --- dead letters -----------------------------------------------------------------

    async def _dead_ids(self, request: pb.DeadLettersRequest) -> list[str]:
        in_dlq = await self.queue.dead_letters()
        if request.all:
            return in_dlq
        if not request.ids:
            raise InvalidJob("give ids, or all")
        missing = [i for i in request.ids if i not in set(in_dlq)]
        if missing:
            raise InvalidJob(f"not in dlq_tasks: {', '.join(missing[:5])}")
        return list(request.ids)

    @rpc
    async def ListDeadLetters(self, request: pb.DeadLettersRequest,
                              context: grpc.aio.ServicerContext) -> pb.DeadLetters:
        ids = await self.queue.dead_letters()
        rows = await self.store.dead_jobs(ids) if ids else {}
        out = pb.DeadLetters()
        for job_id in ids:
            r = rows.get(job_id)
            if r is None:
                out.dead_letters.add(id=job_id, reason="no such job in PostgreSQL")
                continue
            reason = ("worker lost on its last attempt" if r["last_error"].startswith("worker lost")
                      else "timed out on its last attempt" if r["last_error"].startswith("timed out")
                      else f"retries used up ({r['attempts']} attempts, max_retries {r['max_retries']})")
            dl = out.dead_letters.add(id=job_id, name=r["name"], command=r["command"], attempts=r["attempts"],
                                      max_retries=r["max_retries"], reason=reason, last_error=r["last_error"],
                                      finished_at_ms=r["finished_at_ms"], status=r["status"])
            if r["exit_code"] is not None:
                dl.exit_code = r["exit_code"]
        return out

    @rpc
    async def RetryDeadLetters(self, request: pb.DeadLettersRequest,
                               context: grpc.aio.ServicerContext) -> pb.DeadLettersResult:
        ids = await self._dead_ids(request)
        retried = await self.store.retry_dead_jobs(ids) if ids else []
        await self.queue.retry_dead(retried)
        log.info("%d dead-lettered job(s) retried", len(retried))
        return pb.DeadLettersResult(count=len(retried), ids=retried)

    @rpc
    async def PurgeDeadLetters(self, request: pb.DeadLettersRequest,
                               context: grpc.aio.ServicerContext) -> pb.DeadLettersResult:
        if request.all:
            n = await self.queue.purge_dead(None)
            log.info("dlq_tasks purged: %d id(s)", n)
            return pb.DeadLettersResult(count=n)
        ids = await self._dead_ids(request)
        n = await self.queue.purge_dead(ids)
        return pb.DeadLettersResult(count=n, ids=ids)

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
