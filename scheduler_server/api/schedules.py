"""RPCs of cron schedules: create, list, delete, pause, resume, run now."""

from __future__ import annotations

import logging

from jobcluster import cron, model
from jobcluster.cron import InvalidSchedule
from jobcluster.model import MAX_NAME_CHARS, ScheduleSpec
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.rows import ScheduleRow
from jobcluster.store.schedules import ScheduleBusy
from scheduler_server import convert
from scheduler_server.api.base import Context, Servicer
from scheduler_server.errors import Conflict, Exhausted, NotFound, rpc
from scheduler_server.tokens import Role

log = logging.getLogger("server")


class ScheduleRpcs(Servicer):
    """CreateSchedule, ListSchedules, DeleteSchedule, PauseSchedule, ResumeSchedule, RunScheduleNow."""

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
        cron.validate(request.cron, timezone, catchup, overlap, min_interval=self.settings.cron_min_interval)
        job = self.job_spec(request)
        spec = ScheduleSpec(
            name=name,
            cron=request.cron.strip(),
            timezone=timezone,
            command=job.command,
            description=job.description,
            max_retries=job.max_retries,
            timeout_seconds=job.timeout_seconds,
            catchup=catchup,
            overlap=overlap,
            **job.routing(),
        )
        next_run = cron.next_tick(spec.cron, timezone, model.utcnow())
        enabled = request.enabled if request.HasField("enabled") else None
        saved = await self.store.schedules.upsert(spec, next_run, self.settings.max_schedules, enabled)
        if saved is None:
            raise Exhausted(
                f"there are {self.settings.max_schedules} schedules already (MAX_SCHEDULES); "
                "delete one, or update an existing one by its name"
            )
        log.info(
            "schedule %s saved: %r (%s), %s",
            name,
            spec.cron,
            timezone,
            f"next run {next_run.isoformat()}" if saved.enabled else "paused",
        )
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
        """One job of the schedule now. overlap=forbid holds as for its ticks, unless an admin forces it."""
        if request.force:
            self.require_role(context, Role.ADMIN, "RunScheduleNow with force")
        sch = await self._schedule(request)
        try:
            job_id = await self.life.submissions.run_now(sch, force=request.force)
        except ScheduleBusy as busy:
            raise Conflict(
                f"schedule {sch.name!r} has overlap=forbid and its job {busy.job.job_id} is still "
                f"{busy.job.status.value}; wait for it to end, or an admin can run it anyway with "
                f"force (jobcluster schedules run {sch.name} -force)"
            ) from None
        if job_id is None:  # deleted meanwhile
            raise NotFound(f"no schedule named {(request.name or request.id)!r}")
        forced = " (forced)" if request.force else ""
        log.info("schedule %s run now: job %s%s", sch.name, job_id, forced)
        return pb.JobResponse(job_id=job_id, success=True, message=f"job of schedule {sch.name} queued{forced}")


def _ref(ref: pb.ScheduleRef) -> str:
    key = (ref.name or ref.id).strip()
    if not key:
        raise InvalidSchedule("give the schedule's name (or id)")
    if len(key) > MAX_NAME_CHARS or "\x00" in key:
        raise InvalidSchedule(f"a schedule's name is at most {MAX_NAME_CHARS} characters, without NUL")
    return key
