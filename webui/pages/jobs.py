"""Jobs: the list (/jobs), one job's page (/jobs/{id}), its live events, and its Cancel/Retry buttons."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from jobcluster.failover import CALL_TIMEOUT
from jobcluster.model import Status
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from webui import charts
from webui.errors import context, describe, on_error_json, on_error_render
from webui.web import UserError, job_json, pool_of, read_form, render

PAGE_SIZE = 25
#: The jobs page's "Created" filter: label -> seconds back from now.
SINCE = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}


def _filters(request: Request) -> dict[str, str]:
    q = request.query_params
    return {name: q.get(name, "") for name in ("status", "text", "schedule", "since", "queue")}


async def _empty_list(request: Request) -> dict[str, Any]:
    return {"jobs": [], "counts": {}, "next_page": "", "server": "", **_filters(request)}


@on_error_render("jobs.html", _empty_list)
async def jobs_page(request: Request) -> Response:
    filters = _filters(request)
    since = filters["since"]
    if since and since not in SINCE:
        raise UserError(f"since must be one of {', '.join(SINCE)}")
    after = int((time.time() - SINCE[since]) * 1000) if since else 0
    req = pb.ListJobsRequest(
        status=filters["status"],
        text=filters["text"],
        page_size=PAGE_SIZE,
        page_token=request.query_params.get("page", ""),
        include_output=False,
        with_counts=True,
        schedule=filters["schedule"],
        created_after_ms=after,
        queue=filters["queue"],
    )
    resp, server = await pool_of(request).call(lambda s: s.ListJobs(req, timeout=CALL_TIMEOUT))
    finished = filters["status"] if filters["status"] in ("SUCCEEDED", "FAILED", "CANCELLED") else ""
    stats_req = pb.StatsRequest(
        minutes=1, status=finished, text=filters["text"], schedule=filters["schedule"], queue=filters["queue"]
    )
    stats, _ = await pool_of(request).call(lambda s: s.GetStats(stats_req, timeout=CALL_TIMEOUT))
    return render(
        request,
        "jobs.html",
        200,
        jobs=resp.jobs,
        counts=dict(resp.status_counts),
        next_page=resp.next_page_token,
        server=server,
        durations_chart=charts.durations(stats.durations),
        durations_of=stats.durations_of,
        **filters,
    )


async def _no_job(request: Request) -> dict[str, Any]:
    return {"job": None, "server": request.query_params.get("server", ""), "in_dlq": False}


@on_error_render("job.html", _no_job)
async def job_page(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    pool = pool_of(request)
    server = pool.check(request.query_params.get("server", ""))
    stub = pool.stub(server)
    job = await stub.GetJobStatus(pb.JobId(id=job_id), timeout=CALL_TIMEOUT)
    in_dlq = False
    if job.status == Status.FAILED:
        dead = await stub.ListDeadLetters(pb.DeadLettersRequest(ids=[job_id]), timeout=CALL_TIMEOUT)
        in_dlq = any(d.id == job_id for d in dead.dead_letters)
    return render(request, "job.html", job=job, server=server, in_dlq=in_dlq)


async def _watch(stub: pb_grpc.JobServiceStub, job_id: str) -> AsyncIterator[str]:
    """One ``job`` event per change until the job ends, then ``end``; ``failure`` if the call fails."""
    try:
        async for event in stub.WatchJob(pb.JobId(id=job_id)):
            data = {"job": job_json(event.job), "live_output": event.live_output, "final": event.final}
            yield f"event: job\ndata: {json.dumps(data)}\n\n"
            if event.final:
                break
    except grpc.aio.AioRpcError as exc:
        # The response has started: the error can only be an event of its own.
        message, _ = describe(exc)
        yield f"event: failure\ndata: {json.dumps({'error': message})}\n\n"
    yield "event: end\ndata: {}\n\n"


@on_error_json
async def job_events(request: Request) -> Response:
    """Server-Sent Events for the job page, from WatchJob on the chosen server."""
    pool = pool_of(request)
    stub = pool.stub(pool.check(request.query_params.get("server", "")))
    return StreamingResponse(
        _watch(stub, request.path_params["job_id"]),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@on_error_render("job.html", context(job=None, server="", in_dlq=False))
async def job_action(request: Request) -> Response:
    """The Cancel and Retry buttons of a job's page."""
    job_id, action = request.path_params["job_id"], request.path_params["action"]
    values = await read_form(request)
    pool = pool_of(request)
    server = pool.check(values.get("server"))
    stub = pool.stub(server)
    if action == "cancel":
        await stub.CancelJob(pb.JobId(id=job_id), timeout=CALL_TIMEOUT)
    elif action == "retry":
        await stub.RetryDeadLetters(pb.DeadLettersRequest(ids=[job_id]), timeout=CALL_TIMEOUT)
    else:
        raise UserError(f"unknown action {action!r}", 404)
    return RedirectResponse(f"/jobs/{job_id}?server={server}", status_code=303)


routes = [
    Route("/jobs", jobs_page),
    Route("/jobs/{job_id}", job_page),
    Route("/jobs/{job_id}/events", job_events),
    Route("/jobs/{job_id}/{action}", job_action, methods=["POST"]),
]
