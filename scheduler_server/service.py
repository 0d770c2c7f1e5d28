"""JobService: validation, storage, queueing. Errors become status codes in :mod:`.errors`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc

from jobcluster import cron, model
from jobcluster.cron import InvalidSchedule
from jobcluster.election import ETCD_ERRORS, Election, read_leader
from jobcluster.errors import REDIS_ERRORS
from jobcluster.model import TERMINAL, InvalidJob, JobSpec, ScheduleSpec, Status, validate_job
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from jobcluster.queue import Queue
from jobcluster.rows import JobRow, ScheduleRow, Submitted
from jobcluster.settings import Settings
from jobcluster.store import Store
from scheduler_server import convert
from scheduler_server.errors import Conflict, NotFound, NotReady, StoredNotQueued, rpc, rpc_stream

log = logging.getLogger("server")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_BATCH = 10_000
WATCH_INTERVAL = 0.2
Context: TypeAlias = grpc.aio.ServicerContext


@contextlib.asynccontextmanager
async def queueing(stored: str, remedy: str) -> AsyncIterator[None]:
    """Tell Redis about jobs PostgreSQL already holds; if Redis is down, say they are stored and how they heal."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise StoredNotQueued(f"{stored} stored but Redis is unavailable ({exc}); {remedy}") from exc


def _accepted(s: Submitted) -> pb.JobResponse:
    if s.inserted:
        return pb.JobResponse(job_id=s.job_id, success=True, message=f"job accepted ({s.status.value})")
    return pb.JobResponse(job_id=s.job_id, success=True, duplicate=True,
                          message=f"idempotency key already used by job {s.job_id} ({s.status.value})")


def _job_id(raw: str) -> str:
    """A request's job id: empty is bad input, a malformed one names no job."""
    if not raw:
        raise InvalidJob("id is empty")
    try:
        uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no job with id {raw!r}") from None
    return raw


class JobService(pb_grpc.JobServiceServicer):
    """The gRPC API; stateless, so any number of servers can run side by side."""

    def __init__(self, settings: Settings, queue: Queue, address: str) -> None:
        self.settings = settings
        self.queue = queue
        self.address = address
        self._store: Store | None = None
        self.election: Election | None = None  # set by the server when it campaigns (GetClusterInfo)

    def attach_store(self, store: Store) -> None:
        self._store = store

    @property
    def store(self) -> Store:
        if self._store is None:
            raise NotReady()
        return self._store

    def _spec(self, request: pb.Job | pb.Schedule, **extra: Any) -> JobSpec:
        return validate_job(
            command=request.command, name=request.name, description=request.description,
            max_retries=request.max_retries if request.HasField("max_retries") else None,
            timeout_seconds=request.timeout_seconds if request.HasField("timeout_seconds") else None,
            default_max_retries=self.settings.job_default_max_retries,
            default_timeout=self.settings.job_default_timeout,
            max_command_bytes=self.settings.job_max_command_bytes, **extra,
        )

    async def _job(self, job_id: str) -> JobRow:
        job = await self.store.job_queries.get(job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}")
        return job

    # --- jobs -------------------------------------------------------------------------

    @rpc
    async def SubmitJob(self, request: pb.Job, context: Context) -> pb.JobResponse:
        spec = self._spec(request, run_at_ms=request.run_at_ms, idempotency_key=request.idempotency_key)
        s = await self.store.jobs.insert(spec, self.address)
        async with queueing(f"job {s.job_id} is", "submit again with the same idempotency key to queue it"):
            if s.inserted:
                await self.queue.jobs.enqueue(s.job_id, s.due_ms if s.status is Status.PENDING else 0)
            elif s.status is Status.QUEUED:
                # A retried submit: the first try may have died between INSERT and push.
                await self.queue.jobs.ensure_queued(s.job_id)
        if s.inserted:
            log.info("job %s accepted (%s)", s.job_id, s.status.value)
        return _accepted(s)

    @rpc
    async def SubmitJobs(self, request: pb.JobBatch, context: Context) -> pb.JobBatchResponse:
        if not request.jobs:
            raise InvalidJob("the batch has no jobs")
        if len(request.jobs) > MAX_BATCH:
            raise InvalidJob(f"the batch has {len(request.jobs)} jobs, over the limit of {MAX_BATCH}")
        specs = []
        for n, job in enumerate(request.jobs, start=1):
            try:
                specs.append(self._spec(job, run_at_ms=job.run_at_ms, idempotency_key=job.idempotency_key))
            except InvalidJob as exc:
                label = f" ({job.name!r})" if job.name else ""
                raise InvalidJob(f"job {n}{label}: {exc}; nothing was stored") from None
        results = await self.store.jobs.insert_many(specs, self.address)
        async with queueing(f"{len(results)} jobs are", "submit the batch again with the same idempotency "
                                                        "keys, or the leader will queue them"):
            fresh = [(s.job_id, s.due_ms if s.status is Status.PENDING else 0) for s in results if s.inserted]
            if fresh:
                await self.queue.jobs.enqueue_many(fresh)
            for s in results:
                if not s.inserted and s.status is Status.QUEUED:
                    # A retried batch: the first try may have died between INSERT and push.
                    await self.queue.jobs.ensure_queued(s.job_id)
        log.info("batch of %d job(s) accepted", len(results))
        return pb.JobBatchResponse(jobs=[_accepted(s) for s in results])

    @rpc
    async def GetJobStatus(self, request: pb.JobId, context: Context) -> pb.JobStatus:
        if not request.id:
            raise InvalidJob("id is empty")
        return convert.job_status(await self._job(request.id))

    @rpc
    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        size, query = _list_query(request)
        jobs = await self.store.job_queries.page(limit=size + 1, **query)
        more = len(jobs) > size
        jobs = jobs[:size]
        token = convert.encode_page_token(jobs[-1].created_at_us, jobs[-1].id) if more else ""
        resp = pb.ListJobsResponse(jobs=[convert.job_status(j) for j in jobs], next_page_token=token)
        if request.with_counts:
            resp.status_counts.update({s.value: n for s, n in (await self.store.job_queries.status_counts()).items()})
        return resp

    @rpc_stream
    async def WatchJob(self, request: pb.JobId, context: Context) -> AsyncIterator[pb.JobEvent]:
        """Stream the job's changes until it ends."""
        if not request.id:
            raise InvalidJob("id is empty")
        last_status: Status | None = None
        last_bytes = -1
        while True:
            job = await self._job(request.id)
            final = job.status in TERMINAL
            live = await self.queue.live_output.read(request.id) if job.status is Status.RUNNING else None
            live_bytes = live[0] if live else 0
            if job.status is not last_status or final or (live and live_bytes != last_bytes):
                event = pb.JobEvent(job=convert.job_status(job), final=final)
                if live:
                    event.live_output, event.live_output_bytes = live[1], live_bytes
                yield event
                last_status, last_bytes = job.status, live_bytes
            if final:
                return
            await asyncio.sleep(WATCH_INTERVAL)

    @rpc
    async def CancelJob(self, request: pb.JobId, context: Context) -> pb.JobStatus:
        job_id = _job_id(request.id)
        outcome = await self.store.jobs.cancel(job_id, "cancelled")
        if not outcome.found:
            raise NotFound(f"no job with id {job_id!r}")
        if not outcome.cancelled:
            status = outcome.status.value if outcome.status else "?"
            raise Conflict(f"job {job_id} has already ended ({status}); nothing to cancel")
        if outcome.status in (Status.QUEUED, Status.PENDING):
            await self.queue.jobs.withdraw(job_id)
        was = outcome.status.value if outcome.status else "?"
        log.info("job %s cancelled (was %s%s)", job_id, was, f" on {outcome.worker_id}" if outcome.worker_id else "")
        return convert.job_status(await self._job(job_id))

    # --- dead letters -----------------------------------------------------------------

    async def _dead_ids(self, request: pb.DeadLettersRequest) -> list[str]:
        in_dlq = await self.queue.dead_letters.ids()
        if request.all:
            return in_dlq
        if not request.ids:
            raise InvalidJob("give ids, or all")
        known = set(in_dlq)
        missing = [i for i in request.ids if i not in known]
        if missing:
            raise InvalidJob(f"not in dlq_tasks: {', '.join(missing[:5])}")
        return list(request.ids)

    @rpc
    async def ListDeadLetters(self, request: pb.DeadLettersRequest, context: Context) -> pb.DeadLetters:
        ids = await self.queue.dead_letters.ids()
        rows = await self.store.dead_letters.jobs(ids) if ids else {}
        return convert.dead_letters(ids, rows)

    @rpc
    async def RetryDeadLetters(self, request: pb.DeadLettersRequest, context: Context) -> pb.DeadLettersResult:
        ids = await self._dead_ids(request)
        retried = await self.store.dead_letters.retry(ids) if ids else []
        await self.queue.dead_letters.retry(retried)
        log.info("%d dead-lettered job(s) retried", len(retried))
        return pb.DeadLettersResult(count=len(retried), ids=retried)

    @rpc
    async def PurgeDeadLetters(self, request: pb.DeadLettersRequest, context: Context) -> pb.DeadLettersResult:
        if request.all:
            n = await self.queue.dead_letters.purge(None)
            log.info("dlq_tasks purged: %d id(s)", n)
            return pb.DeadLettersResult(count=n)
        ids = await self._dead_ids(request)
        n = await self.queue.dead_letters.purge(ids)
        return pb.DeadLettersResult(count=n, ids=ids)

    # --- cron schedules ---------------------------------------------------------------

    async def _schedule(self, ref: pb.ScheduleRef) -> ScheduleRow:
        found = await self.store.schedules.get(_ref(ref))
        if found is None:
            raise NotFound(f"no schedule named {(ref.name or ref.id)!r}")
        return found

    @rpc
    async def CreateSchedule(self, request: pb.Schedule, context: Context) -> pb.Schedule:
        name = request.name.strip()
        if not name:
            raise InvalidSchedule("a schedule needs a name")
        timezone = request.timezone.strip() or "UTC"
        catchup = request.catchup.strip().lower() or "skip"
        overlap = request.overlap.strip().lower() or "allow"
        cron.validate(request.cron, timezone, catchup, overlap)
        job = self._spec(request)
        spec = ScheduleSpec(name=name, cron=request.cron.strip(), timezone=timezone, command=job.command,
                            description=job.description, max_retries=job.max_retries,
                            timeout_seconds=job.timeout_seconds, catchup=catchup, overlap=overlap)
        next_run = cron.next_tick(spec.cron, timezone, model.utcnow())
        saved = await self.store.schedules.upsert(spec, next_run)
        log.info("schedule %s saved: %r (%s), next run %s", name, spec.cron, timezone, next_run.isoformat())
        return convert.schedule_msg(saved)

    @rpc
    async def ListSchedules(self, request: pb.ListSchedulesRequest, context: Context) -> pb.ListSchedulesResponse:
        return pb.ListSchedulesResponse(schedules=[convert.schedule_msg(s) for s in await self.store.schedules.all()])

    @rpc
    async def DeleteSchedule(self, request: pb.ScheduleRef, context: Context) -> pb.Schedule:
        gone = await self.store.schedules.delete(_ref(request))
        if gone is None:
            raise NotFound(f"no schedule named {(request.name or request.id)!r}")
        log.info("schedule %s deleted", gone.name)
        return convert.schedule_msg(gone)

    async def _set_enabled(self, request: pb.ScheduleRef, enabled: bool) -> pb.Schedule:
        current = await self._schedule(request)
        next_run = cron.next_tick(current.cron, current.timezone, model.utcnow())
        updated = await self.store.schedules.set_enabled(_ref(request), enabled, next_run)
        if updated is None:  # deleted meanwhile
            raise NotFound(f"no schedule named {(request.name or request.id)!r}")
        return convert.schedule_msg(updated)

    @rpc
    async def PauseSchedule(self, request: pb.ScheduleRef, context: Context) -> pb.Schedule:
        return await self._set_enabled(request, False)

    @rpc
    async def ResumeSchedule(self, request: pb.ScheduleRef, context: Context) -> pb.Schedule:
        return await self._set_enabled(request, True)

    @rpc
    async def RunScheduleNow(self, request: pb.ScheduleRef, context: Context) -> pb.JobResponse:
        sch = await self._schedule(request)
        job_id = await self.store.schedules.insert_job(None, sch, None, self.address, f"manual:{uuid.uuid4()}")
        assert job_id is not None  # a fresh key always inserts
        async with queueing(f"job {job_id} is", "the leader's reconciliation will queue it"):
            await self.queue.jobs.enqueue(job_id)
        log.info("schedule %s run now: job %s", sch.name, job_id)
        return pb.JobResponse(job_id=job_id, success=True, message=f"job of schedule {sch.name} queued")

    # --- the cluster ------------------------------------------------------------------

    @rpc
    async def GetClusterInfo(self, request: pb.ClusterInfoRequest, context: Context) -> pb.ClusterInfo:
        leader = None
        election = "off"
        if self.settings.etcd_endpoints:
            election = "etcd"
            try:
                leader = await read_leader(self.settings.etcd_endpoints, self.settings.election_namespace,
                                           self.settings.election_key)
            except ETCD_ERRORS as exc:
                election = f"etcd unreachable: {exc or type(exc).__name__}"
        liveness = self.queue.liveness
        return convert.cluster_info(
            leader=leader, election=election, servers=await liveness.servers(),
            workers=await liveness.worker_infos(), depths=await self.queue.jobs.depths(),
            dead_after_ms=int(self.settings.worker_dead_after * 1000), answered_by=self.address)


def _ref(ref: pb.ScheduleRef) -> str:
    key = (ref.name or ref.id).strip()
    if not key:
        raise InvalidSchedule("give the schedule's name (or id)")
    return key


def _list_query(request: pb.ListJobsRequest) -> tuple[int, dict[str, Any]]:
    """Check a ListJobs request: (page size, the store's filter arguments)."""
    raw = request.status.strip().upper()
    if raw and raw not in Status.__members__:
        raise InvalidJob(f"unknown status {request.status!r}; one of {', '.join(Status.__members__)}")
    if request.page_size < 0:
        raise InvalidJob("page_size must not be negative")
    for job_id in request.ids:
        try:
            uuid.UUID(job_id)
        except ValueError:
            raise InvalidJob(f"not a job id: {job_id!r}") from None
    try:
        after = convert.decode_page_token(request.page_token) if request.page_token else None
    except ValueError as exc:
        raise InvalidJob(str(exc)) from None
    if request.created_after_ms < 0 or request.created_before_ms < 0:
        raise InvalidJob("created_after_ms and created_before_ms must not be negative")
    size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    return size, {"status": Status(raw) if raw else None, "ids": list(request.ids) or None, "after": after,
                  "include_output": request.include_output, "text": request.text.strip() or None,
                  "schedule": request.schedule.strip() or None, "since_ms": request.created_after_ms,
                  "until_ms": request.created_before_ms}
