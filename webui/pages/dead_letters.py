"""Dead letters (/dlq): the jobs in dlq_tasks, with Retry and Purge, one or all."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from jobcluster.failover import CALL_TIMEOUT
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.wording import plural
from webui.errors import context, on_error_render
from webui.web import UserError, pool_of, read_form, render

#: The buttons: action in the URL -> JobService call.
ACTIONS = {"retry": "RetryDeadLetters", "purge": "PurgeDeadLetters"}


@on_error_render("dlq.html", context(dead=[], server=""))
async def dlq_page(request: Request) -> Response:
    resp, server = await pool_of(request).call(
        lambda s: s.ListDeadLetters(pb.DeadLettersRequest(), timeout=CALL_TIMEOUT)
    )
    return render(
        request,
        "dlq.html",
        dead=resp.dead_letters,
        total=resp.total,
        server=server,
        done=_done(request.query_params.get("retried"), request.query_params.get("purged")),
    )


def _done(retried: str | None, purged: str | None) -> str:
    """What the last Retry or Purge did, from the redirect's query: a line for the page."""
    if retried and retried.isdigit():
        n = int(retried)
        return f"{plural(n, 'job')} sent back to the queue." if n else "Nothing was retried: no job was FAILED."
    if purged and purged.isdigit():
        return f"{plural(int(purged), 'id')} removed from dlq_tasks (the jobs stay FAILED)."
    return ""


@on_error_render("dlq.html", context(dead=[], server=""))
async def dlq_action(request: Request) -> Response:
    values = await read_form(request)
    req = (
        pb.DeadLettersRequest(all=True)
        if values.get("id") == "all"
        else pb.DeadLettersRequest(ids=[values.get("id", "")])
    )
    call = ACTIONS.get(request.path_params["action"])
    if call is None:
        raise UserError(f"unknown action {request.path_params['action']!r}", 404)
    result, _ = await pool_of(request).call(lambda s: getattr(s, call)(req, timeout=CALL_TIMEOUT))
    done = "retried" if call == "RetryDeadLetters" else "purged"
    return RedirectResponse(f"/dlq?{done}={result.count}", status_code=303)


routes = [
    Route("/dlq", dlq_page),
    Route("/dlq/{action}", dlq_action, methods=["POST"]),
]
