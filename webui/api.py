"""The JSON API for curl and scripts: /api/jobs, /api/jobs/{id}, /api/health, /api/leader, /api/cluster.

It takes only ``application/json`` bodies: a cross-site form cannot send that
without a preflight, so the API needs no CSRF token.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from google.protobuf.json_format import MessageToDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobcluster.durations import parse_duration
from jobcluster.failover import CALL_TIMEOUT
from jobcluster.pb import scheduler_pb2 as pb
from webui.errors import on_error_json
from webui.web import UserError, job_json, pool_of, routing_fields


async def _json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object: 415 unless it is sent as JSON, 400 unless it parses to an object."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise UserError("send JSON with Content-Type: application/json", 415)
    try:
        body = await request.json()
    except ValueError:
        raise UserError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise UserError("the body must be a JSON object with a \"command\"")
    return body


def job_from_json(body: dict[str, Any]) -> pb.Job:
    """The job a POST /api/jobs body describes (ValueError/TypeError for fields that do not convert)."""
    job = pb.Job(command=str(body.get("command", "")), name=str(body.get("name", "")),
                 idempotency_key=str(body.get("idempotency_key") or secrets.token_hex(16)), **routing_fields(body))
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


@on_error_json
async def api_jobs(request: Request) -> Response:
    q = request.query_params
    req = pb.ListJobsRequest(status=q.get("status", ""), text=q.get("text", ""), queue=q.get("queue", ""),
                             page_size=int(q.get("limit", "50")), page_token=q.get("page", ""))
    resp, _ = await pool_of(request).call(lambda s: s.ListJobs(req, timeout=CALL_TIMEOUT))
    return JSONResponse({"jobs": [job_json(j) for j in resp.jobs], "next_page": resp.next_page_token})


async def api_health(request: Request) -> Response:
    """Each server's health; 200 when at least one is SERVING, else 503."""
    pool = pool_of(request)
    states = await asyncio.gather(*(pool.health(a) for a in pool.addresses))
    ok = any(s == "SERVING" for s in states)
    return JSONResponse({"status": "ok" if ok else "unavailable", "servers": dict(zip(pool.addresses, states))},
                        status_code=200 if ok else 503)


async def _cluster_info(request: Request) -> pb.ClusterInfo:
    info, _ = await pool_of(request).call(lambda s: s.GetClusterInfo(pb.ClusterInfoRequest(), timeout=CALL_TIMEOUT))
    return info


@on_error_json
async def api_cluster(request: Request) -> Response:
    info = await _cluster_info(request)
    return JSONResponse(MessageToDict(info, preserving_proto_field_name=True,
                                      always_print_fields_with_no_presence=True))


@on_error_json
async def api_leader(request: Request) -> Response:
    info = await _cluster_info(request)
    return JSONResponse({"leader": info.leader or None, "since_ms": info.leader_since_ms,
                         "term": info.leader_term, "election": info.election})


routes = [
    Route("/api/jobs", api_submit, methods=["POST"]),
    Route("/api/jobs", api_jobs),
    Route("/api/jobs/{job_id}", api_job),
    Route("/api/health", api_health),
    Route("/api/leader", api_leader),
    Route("/api/cluster", api_cluster),
]
