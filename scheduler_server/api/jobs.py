"""RPCs of the job lifecycle: submit (one or a batch), status, list, watch, cancel."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from jobcluster.errors import REDIS_ERRORS
from jobcluster.limits import MAX_REPLY_BYTES
from jobcluster.model import MAX_NAME_CHARS, InvalidJob, JobSpec, Status, check_queue, check_time_ms
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.rows import Submitted
from scheduler_server import convert
from scheduler_server.api.base import Context, Servicer
from scheduler_server.batcher import Batcher
from scheduler_server.errors import Conflict, NotFound, rpc, rpc_stream
from scheduler_server.watch import WATCH_END_TRAILER

log = logging.getLogger("server")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: Longest text filter of ListJobs (characters).
MAX_FILTER_CHARS = 1000
MAX_BATCH = 10_000


def _accepted(s: Submitted) -> pb.JobResponse:
    if s.inserted:
        return pb.JobResponse(job_id=s.job_id, success=True, message=f"job accepted ({s.status.value})")
    return pb.JobResponse(
        job_id=s.job_id,
        success=True,
        duplicate=True,
        message=f"idempotency key already used by job {s.job_id} ({s.status.value})",
    )


def _job_id(raw: str) -> str:
    """A request's job id: empty is bad input, a malformed one names no job."""
    if not raw:
        raise InvalidJob("id is empty")
    try:
        uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no job with id {raw!r}") from None
    return raw


class JobRpcs(Servicer):
    """SubmitJob, SubmitJobs, GetJobStatus, ListJobs, WatchJob, CancelJob."""

    @functools.cached_property
    def submits(self) -> Batcher[JobSpec, Submitted]:
        """SubmitJob calls in flight together, stored and pushed as one group (:mod:`scheduler_server.batcher`)."""
        return Batcher(self.life.submissions.submit_group, name="submit")

    @rpc
    async def SubmitJob(self, request: pb.Job, context: Context) -> pb.JobResponse:
        spec = self.job_spec(request, run_at_ms=request.run_at_ms, idempotency_key=request.idempotency_key)
        s = await self.submits.submit(spec)
        if s.inserted:
            log.debug("job %s accepted (%s)", s.job_id, s.status.value)  # counted: jobcluster_jobs_submitted
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
                specs.append(self.job_spec(job, run_at_ms=job.run_at_ms, idempotency_key=job.idempotency_key))
            except InvalidJob as exc:
                label = f" ({job.name!r})" if job.name else ""
                raise InvalidJob(f"job {n}{label}: {exc}; nothing was stored") from None
        results = await self.life.submissions.submit_batch(specs)
        log.info("batch of %d job(s) accepted", len(results))
        return pb.JobBatchResponse(jobs=[_accepted(s) for s in results])

    @rpc
    async def GetJobStatus(self, request: pb.JobId, context: Context) -> pb.JobStatus:
        if not request.id:
            raise InvalidJob("id is empty")
        job = await self.job_row(request.id)
        reasons = await self.waiting_reasons([job])
        msg = convert.job_status(job, reasons.get(job.id, ""))
        if job.status is Status.RUNNING:
            msg.output = await self._live_tail(job.id, job.attempts)
        return msg

    async def _live_tail(self, job_id: str, attempt: int) -> str:
        """What the running attempt printed so far (its worker publishes the tail every 0.25 s); '' when
        Redis has none of this attempt's, or does not answer within a second (the status still answers)."""
        try:
            async with asyncio.timeout(1.0):
                live = await self.queue.live_output.read(job_id)
        except LIVE_READ_ERRORS:
            return ""
        live = live.of(attempt) if live else None
        return live.tail if live else ""

    @rpc
    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        size, query = _list_query(request)
        if query["schedule"] and await self.store.schedules.get(query["schedule"]) is None:
            raise NotFound(f"no schedule named {query['schedule']!r}")
        page = await self.store.job_queries.page(limit=size + 1, max_bytes=MAX_REPLY_BYTES, **query)
        more = page.cut or len(page.jobs) > size
        jobs = page.jobs[:size]
        token = convert.encode_page_token(jobs[-1].created_at_us, jobs[-1].id) if more else ""
        reasons = await self.waiting_reasons(jobs)
        resp = pb.ListJobsResponse(
            jobs=[convert.job_status(j, reasons.get(j.id, "")) for j in jobs], next_page_token=token
        )
        if request.with_counts:
            resp.status_counts.update({s.value: n for s, n in (await self.store.job_queries.status_counts()).items()})
        return resp

    @rpc_stream
    async def WatchJob(self, request: pb.JobId, context: Context) -> AsyncIterator[pb.JobEvent]:
        """Stream the job's changes until it ends (a final event), or until WATCH_MAX_LIFE: then the
        stream ends OK without a final event and the client watches again (scheduler_server/watch.py)."""
        job_id = _job_id(request.id)
        last: tuple[Status, int, str, int] | None = None
        async with self.watch_hub.watch(job_id) as watch:
            while (snapshot := await watch.next()) is not None:
                # The attempt and its worker count too: a rerun after a dead worker can go from RUNNING to
                # RUNNING between two looks, and print as many bytes as the dead attempt did.
                shown = (snapshot.job.status, snapshot.job.attempts, snapshot.job.worker_id, snapshot.live_bytes)
                if shown != last or snapshot.final:
                    yield snapshot.event
                    last = shown
                if snapshot.final:
                    return
            # Status OK without a final event; the trailer says why, for people reading the wire.
            context.set_trailing_metadata(((WATCH_END_TRAILER, watch.end_reason),))

    @rpc
    async def CancelJob(self, request: pb.JobId, context: Context) -> pb.JobStatus:
        job_id = _job_id(request.id)
        outcome = await self.life.cancel(job_id)
        if not outcome.found:
            raise NotFound(f"no job with id {job_id!r}")
        if not outcome.cancelled:
            status = outcome.status.value if outcome.status else "?"
            raise Conflict(f"job {job_id} has already ended ({status}); nothing to cancel")
        was = outcome.status.value if outcome.status else "?"
        log.info("job %s cancelled (was %s%s)", job_id, was, f" on {outcome.worker_id}" if outcome.worker_id else "")
        return convert.job_status(await self.job_row(job_id))


def check_filter(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidJob(f"{field} is {len(value)} characters, over the limit of {limit}")
    if "\x00" in value:
        raise InvalidJob(f"{field} contains a NUL byte")


def _list_query(request: pb.ListJobsRequest) -> tuple[int, dict[str, Any]]:
    """Check a ListJobs request: (page size, the store's filter arguments)."""
    raw = request.status.strip().upper()
    if raw and raw not in Status.__members__:
        raise InvalidJob(f"unknown status {request.status!r}; one of {', '.join(Status.__members__)}")
    if request.page_size < 0:
        raise InvalidJob("page_size must not be negative")
    if len(request.ids) > MAX_PAGE_SIZE:
        raise InvalidJob(f"at most {MAX_PAGE_SIZE} ids at once, got {len(request.ids)}")
    check_filter("text", request.text, MAX_FILTER_CHARS)
    check_filter("schedule", request.schedule, MAX_NAME_CHARS)
    for job_id in request.ids:
        try:
            uuid.UUID(job_id)
        except ValueError:
            raise InvalidJob(f"not a job id: {job_id!r}") from None
    try:
        after = convert.decode_page_token(request.page_token) if request.page_token else None
    except ValueError as exc:
        raise InvalidJob(str(exc)) from None
    check_time_ms("created_after_ms", request.created_after_ms)
    check_time_ms("created_before_ms", request.created_before_ms)
    size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    return size, {
        "status": Status(raw) if raw else None,
        "ids": list(request.ids) or None,
        "after": after,
        "include_output": request.include_output,
        "text": request.text.strip() or None,
        "schedule": request.schedule.strip() or None,
        "since_ms": request.created_after_ms,
        "until_ms": request.created_before_ms,
        "queue": check_queue(request.queue) if request.queue.strip() else None,
    }


#: Why a running job's live output may be missing from GetJobStatus: Redis slow or down.
LIVE_READ_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *REDIS_ERRORS)
