"""The submit form (/): one job to a chosen server, then its page on a chosen status server."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from jobcluster.durations import parse_duration
from jobcluster.failover import CALL_TIMEOUT
from jobcluster.pb import scheduler_pb2 as pb
from webui.errors import on_error_render
from webui.web import UserError, form_values, pool_of, read_form, render, routing_fields


async def home(request: Request) -> Response:
    return render(request, "submit.html", values={})


def job_from_form(values: dict[str, str]) -> pb.Job:
    """The job the form describes; :class:`UserError` naming a field that does not parse."""
    job = pb.Job(
        command=values.get("command", ""),
        name=values.get("name", "").strip(),
        idempotency_key=secrets.token_hex(16),
        **routing_fields(values),
    )
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
    return job


async def typed_values(request: Request) -> dict[str, Any]:
    """A refused submission shows the form again as it was filled in."""
    return {"values": form_values(request)}


@on_error_render("submit.html", typed_values)
async def submit(request: Request) -> Response:
    values = await read_form(request)
    pool = pool_of(request)
    submit_server = pool.check(values.get("submit_server"))
    status_server = pool.check(values.get("status_server"))
    job = job_from_form(values)
    resp = await pool.stub(submit_server).SubmitJob(job, timeout=CALL_TIMEOUT)
    return RedirectResponse(f"/jobs/{resp.job_id}?server={status_server}", status_code=303)


routes = [
    Route("/", home),
    Route("/submit", submit, methods=["POST"]),
]
