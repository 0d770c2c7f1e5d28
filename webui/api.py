"""The JSON API for curl and scripts: /api/jobs, /api/jobs/{id}, /api/schedules, /api/dlq, /api/health,
/api/leader, /api/cluster (docs/api.md lists each with its fields).

It takes only ``application/json`` bodies: a cross-site form cannot send that
without a preflight, so the API needs no CSRF token. A body or query with a
field it does not know is refused (400) rather than ignored; integers in
replies are JSON numbers (jobcluster/pbjson.py).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobcluster.durations import parse_duration
from jobcluster.failover import CALL_TIMEOUT
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pbjson import to_dict
from webui.errors import on_error_json
from webui.web import UserError, job_json, pool_of, routing_fields


async def _json_object(request: Request, what: str = 'a JSON object with a "command"') -> dict[str, Any]:
    """The body as a JSON object: 415 unless it is sent as JSON, 400 unless it parses to an object."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise UserError("send JSON with Content-Type: application/json", 415)
    try:
        body = await request.json()
    except ValueError:
        raise UserError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise UserError(f"the body must be {what}")
    return body


#: What a POST /api/jobs body may hold.
JOB_FIELDS = (
    "command",
    "name",
    "idempotency_key",
    "max_retries",
    "timeout",
    "server",
    "queue",
    "priority",
    "constraints",
    "concurrency_key",
    "max_concurrency",
)
#: What GET /api/jobs takes.
LIST_PARAMS = ("status", "text", "queue", "limit", "page")
#: GET /api/jobs: jobs per page, by default and at most.
DEFAULT_LIMIT, MAX_LIMIT = 50, 1000
#: Fields people send that mean something else here.
_INSTEAD = {
    "cron": "schedules are made with POST /api/schedules",
    "retries": "did you mean max_retries?",
    "timeout_seconds": 'did you mean timeout? ("30s", "5m" or seconds)',
    "cmd": "did you mean command?",
}


def _only(fields: Any, allowed: tuple[str, ...], what: str) -> None:
    """UserError (400) naming any field not in ``allowed``."""
    unknown = [f for f in fields if f not in allowed]
    if unknown:
        hints = "; ".join(f"{f}: {_INSTEAD[f]}" for f in unknown if f in _INSTEAD)
        raise UserError(
            f"unknown {what} {', '.join(map(repr, unknown))}{' (' + hints + ')' if hints else ''}; "
            f"known: {', '.join(allowed)}"
        )


def job_from_json(body: dict[str, Any]) -> pb.Job:
    """The job a POST /api/jobs body describes (ValueError/TypeError for fields that do not convert)."""
    _only(body, JOB_FIELDS, "field(s)")
    job = pb.Job(
        command=str(body.get("command", "")),
        name=str(body.get("name", "")),
        idempotency_key=str(body.get("idempotency_key") or secrets.token_hex(16)),
        **routing_fields(body),
    )
    if body.get("max_retries") is not None:
        job.max_retries = int(body["max_retries"])
    if body.get("timeout") is not None:
        job.timeout_seconds = parse_duration(body["timeout"])
    return job


@on_error_json
async def api_submit(request: Request) -> Response:
    body = await _json_object(request)
    job = job_from_json(body)
    pool = pool_of(request)
    server = pool.check(body.get("server"))
    resp = await pool.stub(server).SubmitJob(job, timeout=CALL_TIMEOUT)
    return JSONResponse({"id": resp.job_id, "duplicate": resp.duplicate, "server": server}, status_code=201)


@on_error_json
async def api_job(request: Request) -> Response:
    job_id = pb.JobId(id=request.path_params["job_id"])
    job, _ = await pool_of(request).call(lambda s: s.GetJobStatus(job_id, timeout=CALL_TIMEOUT))
    return JSONResponse(job_json(job))


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise UserError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {raw!r}")
    return int(raw)


@on_error_json
async def api_jobs(request: Request) -> Response:
    """GET /api/jobs?status=&text=&queue=&limit=50&page=<next_page of the page before>."""
    q = request.query_params
    _only(q.keys(), LIST_PARAMS, "query parameter(s)")
    req = pb.ListJobsRequest(
        status=q.get("status", ""),
        text=q.get("text", ""),
        queue=q.get("queue", ""),
        page_size=_limit(q.get("limit")),
        page_token=q.get("page", ""),
    )
    resp, _ = await pool_of(request).call(lambda s: s.ListJobs(req, timeout=CALL_TIMEOUT))
    return JSONResponse({"jobs": [job_json(j) for j in resp.jobs], "next_page": resp.next_page_token})


async def api_health(request: Request) -> Response:
    """Each server's health: ``ok`` (200) when every one is SERVING; ``degraded`` (200: the UI still works
    through those that answer) when some are not; ``unavailable`` (503) when none is."""
    pool = pool_of(request)
    states = await asyncio.gather(*(pool.health(a) for a in pool.addresses))
    serving = sum(s == "SERVING" for s in states)
    status = "ok" if serving == len(states) else "degraded" if serving else "unavailable"
    return JSONResponse(
        {"status": status, "servers": dict(zip(pool.addresses, states)), "serving": serving, "configured": len(states)},
        status_code=503 if status == "unavailable" else 200,
    )


#: What a POST /api/schedules body may hold (the fields of a jobs file's cron entry).
SCHEDULE_FIELDS = (
    "name",
    "cron",
    "timezone",
    "command",
    "description",
    "catchup",
    "overlap",
    "max_retries",
    "timeout",
    "queue",
    "priority",
    "constraints",
    "concurrency_key",
    "max_concurrency",
)
#: POST /api/schedules/{name}/{action} -> JobService call (DELETE /api/schedules/{name} deletes).
SCHEDULE_ACTIONS = {"pause": "PauseSchedule", "resume": "ResumeSchedule", "run": "RunScheduleNow"}


@on_error_json
async def api_schedules(request: Request) -> Response:
    """GET /api/schedules: every cron schedule."""
    _only(request.query_params.keys(), (), "query parameter(s)")
    resp, _ = await pool_of(request).call(lambda s: s.ListSchedules(pb.ListSchedulesRequest(), timeout=CALL_TIMEOUT))
    return JSONResponse({"schedules": [to_dict(sch) for sch in resp.schedules]})


@on_error_json
async def api_schedule_create(request: Request) -> Response:
    """POST /api/schedules: create or replace a schedule (CreateSchedule); 201 with it."""
    body = await _json_object(request)
    _only(body, SCHEDULE_FIELDS, "field(s)")
    text = {
        k: str(body.get(k, "")) for k in ("name", "cron", "timezone", "command", "description", "catchup", "overlap")
    }
    sch = pb.Schedule(
        name=text["name"],
        cron=text["cron"],
        timezone=text["timezone"],
        command=text["command"],
        description=text["description"],
        catchup=text["catchup"],
        overlap=text["overlap"],
        **routing_fields(body),
    )
    if body.get("max_retries") is not None:
        sch.max_retries = int(body["max_retries"])
    if body.get("timeout") is not None:
        sch.timeout_seconds = parse_duration(body["timeout"])
    saved, _ = await pool_of(request).call(lambda s: s.CreateSchedule(sch, timeout=CALL_TIMEOUT))
    return JSONResponse(to_dict(saved), status_code=201)


@on_error_json
async def api_schedule_action(request: Request) -> Response:
    """POST /api/schedules/{name}/pause|resume|run (a JSON body, ``{}``; run also ``{"force": true}``, which
    needs an admin token); DELETE /api/schedules/{name}."""
    ref = pb.ScheduleRef(name=request.path_params["name"])
    if request.method == "DELETE":
        deleted, _ = await pool_of(request).call(lambda s: s.DeleteSchedule(ref, timeout=CALL_TIMEOUT))
        return JSONResponse(to_dict(deleted))
    body = await _json_object(request, what="{}")
    call = SCHEDULE_ACTIONS.get(request.path_params["action"])
    if call is None:
        raise UserError(f"unknown action {request.path_params['action']!r}; one of {', '.join(SCHEDULE_ACTIONS)}", 404)
    _only(body, ("force",) if call == "RunScheduleNow" else (), "field(s)")
    if not isinstance(body.get("force", False), bool):
        raise UserError('"force" must be true or false')
    ref.force = body.get("force", False)
    result, server = await pool_of(request).call(lambda s: getattr(s, call)(ref, timeout=CALL_TIMEOUT))
    if call == "RunScheduleNow":
        return JSONResponse({"id": result.job_id, "server": server}, status_code=201)
    return JSONResponse(to_dict(result))


@on_error_json
async def api_dlq(request: Request) -> Response:
    """GET /api/dlq?limit=50&page=<next_page>: dead letters, newest first (ListDeadLetters)."""
    q = request.query_params
    _only(q.keys(), ("limit", "page"), "query parameter(s)")
    req = pb.DeadLettersRequest(page_size=_limit(q.get("limit")), page_token=q.get("page", ""))
    resp, _ = await pool_of(request).call(lambda s: s.ListDeadLetters(req, timeout=CALL_TIMEOUT))
    return JSONResponse(
        {
            "dead_letters": [to_dict(d) for d in resp.dead_letters],
            "total": resp.total,
            "next_page": resp.next_page_token,
        }
    )


@on_error_json
async def api_dlq_action(request: Request) -> Response:
    """POST /api/dlq/retry or /api/dlq/purge with ``{"ids": [...]}`` or ``{"all": true}``."""
    body = await _json_object(request, what='{"ids": [...]} or {"all": true}')
    _only(body, ("ids", "all"), "field(s)")
    ids, everything = body.get("ids") or [], body.get("all") is True
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise UserError("ids must be a list of job ids")
    if everything == bool(ids):
        raise UserError('give either "ids" or "all": true')
    call = {"retry": "RetryDeadLetters", "purge": "PurgeDeadLetters"}.get(request.path_params["action"])
    if call is None:
        raise UserError(f"unknown action {request.path_params['action']!r}; one of retry, purge", 404)
    req = pb.DeadLettersRequest(ids=ids, all=everything)
    result, _ = await pool_of(request).call(lambda s: getattr(s, call)(req, timeout=CALL_TIMEOUT))
    return JSONResponse(to_dict(result))


async def _cluster_info(request: Request) -> pb.ClusterInfo:
    info, _ = await pool_of(request).call(lambda s: s.GetClusterInfo(pb.ClusterInfoRequest(), timeout=CALL_TIMEOUT))
    return info


@on_error_json
async def api_cluster(request: Request) -> Response:
    info = await _cluster_info(request)
    return JSONResponse(to_dict(info))


@on_error_json
async def api_leader(request: Request) -> Response:
    info = await _cluster_info(request)
    return JSONResponse(
        {
            "leader": info.leader or None,
            "since_ms": info.leader_since_ms,
            "term": info.leader_term,
            "election": info.election,
        }
    )


routes = [
    Route("/api/jobs", api_submit, methods=["POST"]),
    Route("/api/jobs", api_jobs),
    Route("/api/jobs/{job_id}", api_job),
    Route("/api/schedules", api_schedules),
    Route("/api/schedules", api_schedule_create, methods=["POST"]),
    Route("/api/schedules/{name}", api_schedule_action, methods=["DELETE"]),
    Route("/api/schedules/{name}/{action}", api_schedule_action, methods=["POST"]),
    Route("/api/dlq", api_dlq),
    Route("/api/dlq/{action}", api_dlq_action, methods=["POST"]),
    Route("/api/health", api_health),
    Route("/api/leader", api_leader),
    Route("/api/cluster", api_cluster),
]
