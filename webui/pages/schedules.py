"""Schedules (/schedules): the cron schedules, a form for a new one, and Pause/Resume/Run now/Delete (and
Force run for an overlap=forbid schedule: RunScheduleNow with force, which needs an admin token)."""

from __future__ import annotations

from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from jobcluster.failover import CALL_TIMEOUT, ServerDown
from jobcluster.pb import scheduler_pb2 as pb
from webui.errors import context, on_error_render
from webui.web import UserError, form_values, pool_of, read_form, render, routing_fields

#: The buttons: action in the URL -> JobService call.
ACTIONS = {"pause": "PauseSchedule", "resume": "ResumeSchedule", "delete": "DeleteSchedule", "run": "RunScheduleNow"}


async def _list(request: Request) -> list[pb.Schedule]:
    resp, _ = await pool_of(request).call(lambda s: s.ListSchedules(pb.ListSchedulesRequest(), timeout=CALL_TIMEOUT))
    return list(resp.schedules)


@on_error_render("schedules.html", context(schedules=[], values={}))
async def schedules_page(request: Request) -> Response:
    return render(request, "schedules.html", schedules=await _list(request), values={})


async def _relisted(request: Request) -> dict[str, Any]:
    """A refused schedule shows the list as it is (when a server answers) and the form as it was filled in."""
    try:
        schedules = await _list(request)
    except (grpc.aio.AioRpcError, ServerDown):
        schedules = []
    return {"schedules": schedules, "values": form_values(request)}


@on_error_render("schedules.html", _relisted)
async def schedules_create(request: Request) -> Response:
    values = await read_form(request)
    sch = pb.Schedule(
        name=values.get("name", ""),
        cron=values.get("cron", ""),
        timezone=values.get("timezone", ""),
        command=values.get("command", ""),
        catchup=values.get("catchup", ""),
        overlap=values.get("overlap", ""),
        **routing_fields(values),
    )
    await pool_of(request).call(lambda s: s.CreateSchedule(sch, timeout=CALL_TIMEOUT))
    return RedirectResponse("/schedules", status_code=303)


@on_error_render("schedules.html", context(schedules=[], values={}))
async def schedule_action(request: Request) -> Response:
    name, action = request.path_params["name"], request.path_params["action"]
    values = await read_form(request)
    call = ACTIONS.get(action)
    if call is None:
        raise UserError(f"unknown action {action!r}", 404)
    ref = pb.ScheduleRef(name=name, force=action == "run" and values.get("force") == "1")
    result, server = await pool_of(request).call(lambda s: getattr(s, call)(ref, timeout=CALL_TIMEOUT))
    if action == "run":
        return RedirectResponse(f"/jobs/{result.job_id}?server={server}", status_code=303)
    return RedirectResponse("/schedules", status_code=303)


routes = [
    Route("/schedules", schedules_page),
    Route("/schedules", schedules_create, methods=["POST"]),
    Route("/schedules/{name}/{action}", schedule_action, methods=["POST"]),
]
