"""The web UI: one Starlette process that talks to the servers over gRPC only.

Pages: submit form (/), a job (/jobs/{id}, live through Server-Sent Events),
jobs (/jobs), dead letters (/dlq), schedules (/schedules), cluster (/cluster).
JSON for curl: /api/jobs, /api/jobs/{id}, /api/health, /api/leader, /api/cluster.

Safety: server addresses from the browser must be configured ones; every form
POST carries a CSRF token matching its cookie; the JSON API takes only
``application/json`` (a cross-site form cannot send that without a preflight);
Jinja escapes everything; a strict Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from jobcluster.durations import parse_duration
from jobcluster.pb import scheduler_pb2 as pb
from webui.grpc_pool import CALL_TIMEOUT, NotConfigured, Servers

log = logging.getLogger("webui")
HERE = Path(__file__).parent
CSRF_COOKIE = "jobcluster_csrf"
STATUSES = ("PENDING", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
PAGE_SIZE = 25
#: The jobs page's "Created" filter: label -> seconds back from now.
SINCE = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


class UserError(Exception):
    """Something the person can fix; shown on the page with this HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _when(ms: int) -> str:
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _duration(start_ms: int, end_ms: int) -> str:
    if not start_ms or not end_ms:
        return "-"
    d = (end_ms - start_ms) / 1000
    return f"{d * 1000:.0f} ms" if d < 1 else f"{d:.1f} s"


def _grpc_message(exc: grpc.aio.AioRpcError) -> tuple[str, int]:
    code = exc.code()
    status = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
              grpc.StatusCode.FAILED_PRECONDITION: 409}.get(code, 503)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return f"The server is not answering ({exc.details()}). Try another server.", status
    return exc.details() or code.name, status


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next):  # type: ignore[override]
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        token = request.scope.get("state", {}).get("csrf_token")
        if token and request.cookies.get(CSRF_COOKIE) != token:
            response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict")
        return response


def create_app(servers: list[str]) -> Starlette:
    pool = Servers(servers)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(when=_when, duration=_duration, statuses=STATUSES)

    def csrf_token(request: Request) -> str:
        token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "csrf_token", None)
        if not token:
            token = secrets.token_urlsafe(24)
        request.state.csrf_token = token
        return token

    def render(request: Request, name: str, code: int = 200, **ctx: Any) -> Response:
        ctx.setdefault("error", None)
        return templates.TemplateResponse(request, name, {"servers": pool.addresses, "csrf": csrf_token(request),
                                                          "page": name.split(".")[0], **ctx},
                                          status_code=code)

    async def form(request: Request) -> dict[str, str]:
        data = await request.form()
        sent = str(data.get("csrf", ""))
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not secrets.compare_digest(sent, cookie):
            raise UserError("This form is missing its security token (CSRF) or it is stale. "
                            "Reload the page and submit again.", 403)
        return {k: str(v) for k, v in data.items()}

    async def guarded(request: Request, page: str, handler, **ctx: Any) -> Response:
        """Run a handler; show user errors and gRPC errors on ``page`` as readable messages."""
        try:
            return await handler()
        except NotConfigured as exc:
            return render(request, page, 400, error=str(exc), **ctx)
        except UserError as exc:
            return render(request, page, exc.status, error=str(exc), **ctx)
        except grpc.aio.AioRpcError as exc:
            message, status = _grpc_message(exc)
            return render(request, page, status, error=message, **ctx)

    # --- submit -----------------------------------------------------------------------

    async def home(request: Request) -> Response:
        return render(request, "submit.html", values={})

    async def submit(request: Request) -> Response:
        values: dict[str, str] = {}

        async def go() -> Response:
            nonlocal values
            values = await form(request)
            submit_server = pool.check(values.get("submit_server"))
            status_server = pool.check(values.get("status_server"))
            job = pb.Job(command=values.get("command", ""), name=values.get("name", "").strip(),
                         idempotency_key=secrets.token_hex(16))
            if values.get("max_retries", "").strip():
                try:
                    job.max_retries = int(values["max_retries"])
                except ValueError:
                    raise UserError("Retries must be a whole number.") from None
            if values.get("timeout", "").strip():
                try:
                    job.timeout_seconds = parse_duration(values["timeout"].strip())
                except ValueError as exc:
                    raise UserError(f"Timeout: {exc}") from None
            resp = await pool.stub(submit_server).SubmitJob(job, timeout=CALL_TIMEOUT)
            return RedirectResponse(f"/jobs/{resp.job_id}?server={status_server}", status_code=303)

        return await guarded(request, "submit.html", go, values=values)

    # --- one job ----------------------------------------------------------------------

    async def job_page(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        server = request.query_params.get("server", "")

        async def go() -> Response:
            stub = pool.stub(pool.check(server))
            job = await stub.GetJobStatus(pb.JobId(id=job_id), timeout=CALL_TIMEOUT)
            in_dlq = False
            if job.status == "FAILED":
                dead = await stub.ListDeadLetters(pb.DeadLettersRequest(), timeout=CALL_TIMEOUT)
                in_dlq = any(d.id == job_id for d in dead.dead_letters)
            return render(request, "job.html", job=job, server=pool.check(server), in_dlq=in_dlq)

        return await guarded(request, "job.html", go, job=None, server=server, in_dlq=False)

    async def job_events(request: Request) -> Response:
        """Server-Sent Events: one ``job`` event per change, from WatchJob."""
        job_id = request.path_params["job_id"]
        try:
            stub = pool.stub(pool.check(request.query_params.get("server", "")))
        except NotConfigured as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

        async def events() -> AsyncIterator[str]:
            try:
                async for event in stub.WatchJob(pb.JobId(id=job_id)):
                    data = {"job": _job_json(event.job), "live_output": event.live_output, "final": event.final}
                    yield f"event: job\ndata: {json.dumps(data)}\n\n"
                    if event.final:
                        break
            except grpc.aio.AioRpcError as exc:
                message, _ = _grpc_message(exc)
                yield f"event: failure\ndata: {json.dumps({'error': message})}\n\n"
            yield "event: end\ndata: {}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def job_action(request: Request) -> Response:
        job_id, action = request.path_params["job_id"], request.path_params["action"]

        async def go() -> Response:
            values = await form(request)
            server = pool.check(values.get("server"))
            stub = pool.stub(server)
            if action == "cancel":
                await stub.CancelJob(pb.JobId(id=job_id), timeout=CALL_TIMEOUT)
            elif action == "retry":
                await stub.RetryDeadLetters(pb.DeadLettersRequest(ids=[job_id]), timeout=CALL_TIMEOUT)
            else:
                raise UserError(f"unknown action {action!r}", 404)
            return RedirectResponse(f"/jobs/{job_id}?server={server}", status_code=303)

        return await guarded(request, "job.html", go, job=None, server="", in_dlq=False)

    # --- lists ------------------------------------------------------------------------

    async def jobs_page(request: Request) -> Response:
        q = request.query_params
        status, text, token = q.get("status", ""), q.get("text", ""), q.get("page", "")
        schedule, since = q.get("schedule", ""), q.get("since", "")
        filters = {"status": status, "text": text, "schedule": schedule, "since": since}

        async def go() -> Response:
            if since and since not in SINCE:
                raise UserError(f"since must be one of {', '.join(SINCE)}")
            after = int((time.time() - SINCE[since]) * 1000) if since else 0
            req = pb.ListJobsRequest(status=status, text=text, page_size=PAGE_SIZE, page_token=token,
                                     include_output=False, with_counts=True, schedule=schedule,
                                     created_after_ms=after)
            resp, server = await pool.first_answer(lambda s: s.ListJobs(req, timeout=CALL_TIMEOUT))
            return render(request, "jobs.html", jobs=resp.jobs, counts=dict(resp.status_counts),
                          next_page=resp.next_page_token, server=server, **filters)

        return await guarded(request, "jobs.html", go, jobs=[], counts={}, next_page="", server="", **filters)

    async def dlq_page(request: Request) -> Response:
        async def go() -> Response:
            resp, server = await pool.first_answer(
                lambda s: s.ListDeadLetters(pb.DeadLettersRequest(), timeout=CALL_TIMEOUT))
            return render(request, "dlq.html", dead=resp.dead_letters, server=server)
        return await guarded(request, "dlq.html", go, dead=[], server="")

    async def dlq_action(request: Request) -> Response:
        action = request.path_params["action"]

        async def go() -> Response:
            values = await form(request)
            req = (pb.DeadLettersRequest(all=True) if values.get("id") == "all"
                   else pb.DeadLettersRequest(ids=[values.get("id", "")]))
            call = {"retry": "RetryDeadLetters", "purge": "PurgeDeadLetters"}.get(action)
            if call is None:
                raise UserError(f"unknown action {action!r}", 404)
            await pool.first_answer(lambda s: getattr(s, call)(req, timeout=CALL_TIMEOUT))
            return RedirectResponse("/dlq", status_code=303)
        return await guarded(request, "dlq.html", go, dead=[], server="")

    async def schedules_page(request: Request) -> Response:
        async def go() -> Response:
            resp, server = await pool.first_answer(
                lambda s: s.ListSchedules(pb.ListSchedulesRequest(), timeout=CALL_TIMEOUT))
            return render(request, "schedules.html", schedules=resp.schedules, values={})
        return await guarded(request, "schedules.html", go, schedules=[], values={})

    async def schedules_create(request: Request) -> Response:
        values: dict[str, str] = {}

        async def go() -> Response:
            nonlocal values
            values = await form(request)
            sch = pb.Schedule(name=values.get("name", ""), cron=values.get("cron", ""),
                              timezone=values.get("timezone", ""), command=values.get("command", ""),
                              catchup=values.get("catchup", ""), overlap=values.get("overlap", ""))
            await pool.first_answer(lambda s: s.CreateSchedule(sch, timeout=CALL_TIMEOUT))
            return RedirectResponse("/schedules", status_code=303)

        try:
            return await go()
        except (UserError, grpc.aio.AioRpcError) as exc:
            message, status = (str(exc), getattr(exc, "status", 400)) if isinstance(exc, UserError) \
                else _grpc_message(exc)
            try:
                listed, _ = await pool.first_answer(
                    lambda s: s.ListSchedules(pb.ListSchedulesRequest(), timeout=CALL_TIMEOUT))
                schedules = listed.schedules
            except grpc.aio.AioRpcError:
                schedules = []
            return render(request, "schedules.html", status, error=message, schedules=schedules, values=values)

    async def schedule_action(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]

        async def go() -> Response:
            await form(request)
            ref = pb.ScheduleRef(name=name)
            call = {"pause": "PauseSchedule", "resume": "ResumeSchedule", "delete": "DeleteSchedule",
                    "run": "RunScheduleNow"}.get(action)
            if call is None:
                raise UserError(f"unknown action {action!r}", 404)
            result, server = await pool.first_answer(lambda s: getattr(s, call)(ref, timeout=CALL_TIMEOUT))
            if action == "run":
                return RedirectResponse(f"/jobs/{result.job_id}?server={server}", status_code=303)
            return RedirectResponse("/schedules", status_code=303)
        return await guarded(request, "schedules.html", go, schedules=[], values={})

    async def cluster_page(request: Request) -> Response:
        async def go() -> Response:
            info, _ = await pool.first_answer(
                lambda s: s.GetClusterInfo(pb.ClusterInfoRequest(), timeout=CALL_TIMEOUT))
            return render(request, "cluster.html", info=info)
        return await guarded(request, "cluster.html", go, info=None)

    # --- JSON API -----------------------------------------------------------------------

    async def api_error(exc: Exception) -> JSONResponse:
        if isinstance(exc, grpc.aio.AioRpcError):
            message, status = _grpc_message(exc)
        elif isinstance(exc, UserError):
            message, status = str(exc), exc.status
        else:
            message, status = str(exc), 400
        return JSONResponse({"error": message}, status_code=status)

    async def api_submit(request: Request) -> Response:
        try:
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                raise UserError("send JSON with Content-Type: application/json", 415)
            try:
                body = await request.json()
            except ValueError:
                raise UserError("the body is not valid JSON") from None
            if not isinstance(body, dict):
                raise UserError("the body must be a JSON object with a \"command\"")
            job = pb.Job(command=str(body.get("command", "")), name=str(body.get("name", "")),
                         idempotency_key=str(body.get("idempotency_key") or secrets.token_hex(16)))
            if body.get("max_retries") is not None:
                job.max_retries = int(body["max_retries"])
            if body.get("timeout") is not None:
                job.timeout_seconds = parse_duration(body["timeout"])
            server = pool.check(body.get("server"))
            resp = await pool.stub(server).SubmitJob(job, timeout=CALL_TIMEOUT)
            return JSONResponse({"id": resp.job_id, "duplicate": resp.duplicate, "server": server}, status_code=201)
        except (grpc.aio.AioRpcError, UserError, NotConfigured, ValueError, TypeError) as exc:
            return await api_error(exc)

    async def api_job(request: Request) -> Response:
        try:
            job, _ = await pool.first_answer(
                lambda s: s.GetJobStatus(pb.JobId(id=request.path_params["job_id"]), timeout=CALL_TIMEOUT))
            return JSONResponse(_job_json(job))
        except grpc.aio.AioRpcError as exc:
            return await api_error(exc)

    async def api_jobs(request: Request) -> Response:
        q = request.query_params
        try:
            req = pb.ListJobsRequest(status=q.get("status", ""), text=q.get("text", ""),
                                     page_size=int(q.get("limit", "50")), page_token=q.get("page", ""))
            resp, _ = await pool.first_answer(lambda s: s.ListJobs(req, timeout=CALL_TIMEOUT))
            return JSONResponse({"jobs": [_job_json(j) for j in resp.jobs], "next_page": resp.next_page_token})
        except (grpc.aio.AioRpcError, ValueError) as exc:
            return await api_error(exc)

    async def api_health(request: Request) -> Response:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        async def check(address: str) -> str:
            try:
                async with grpc.aio.insecure_channel(address) as channel:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=2)
                return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                return f"UNREACHABLE ({exc.code().name})"
        states = await asyncio.gather(*(check(a) for a in pool.addresses))
        servers = dict(zip(pool.addresses, states))
        ok = any(s == "SERVING" for s in states)
        return JSONResponse({"status": "ok" if ok else "unavailable", "servers": servers},
                            status_code=200 if ok else 503)

    async def api_cluster(request: Request) -> Response:
        try:
            info, _ = await pool.first_answer(
                lambda s: s.GetClusterInfo(pb.ClusterInfoRequest(), timeout=CALL_TIMEOUT))
            return JSONResponse(MessageToDict(info, preserving_proto_field_name=True,
                                              always_print_fields_with_no_presence=True))
        except grpc.aio.AioRpcError as exc:
            return await api_error(exc)

    async def api_leader(request: Request) -> Response:
        try:
            info, _ = await pool.first_answer(
                lambda s: s.GetClusterInfo(pb.ClusterInfoRequest(), timeout=CALL_TIMEOUT))
            return JSONResponse({"leader": info.leader or None, "since_ms": info.leader_since_ms,
                                 "term": info.leader_term, "election": info.election})
        except grpc.aio.AioRpcError as exc:
            return await api_error(exc)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await pool.close()

    routes = [
        Route("/", home),
        Route("/submit", submit, methods=["POST"]),
        Route("/jobs", jobs_page),
        Route("/jobs/{job_id}", job_page),
        Route("/jobs/{job_id}/events", job_events),
        Route("/jobs/{job_id}/{action}", job_action, methods=["POST"]),
        Route("/dlq", dlq_page),
        Route("/dlq/{action}", dlq_action, methods=["POST"]),
        Route("/schedules", schedules_page),
        Route("/schedules", schedules_create, methods=["POST"]),
        Route("/schedules/{name}/{action}", schedule_action, methods=["POST"]),
        Route("/cluster", cluster_page),
        Route("/api/jobs", api_submit, methods=["POST"]),
        Route("/api/jobs", api_jobs),
        Route("/api/jobs/{job_id}", api_job),
        Route("/api/health", api_health),
        Route("/api/leader", api_leader),
        Route("/api/cluster", api_cluster),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)], lifespan=lifespan)


def _job_json(job: pb.JobStatus) -> dict[str, Any]:
    d = MessageToDict(job, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    d.pop("created_at", None)
    d.pop("updated_at", None)
    return d
