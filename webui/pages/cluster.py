"""Cluster (/cluster): the leader, the servers, the workers and the queue depths, with charts of the last
hour (jobs finished per minute by status, queue depths: GetStats, webui/charts.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobcluster.failover import CALL_TIMEOUT
from jobcluster.pb import scheduler_pb2 as pb
from webui import charts
from webui.errors import context, on_error_render
from webui.web import pool_of, render


@on_error_render("cluster.html", context(info=None))
async def cluster_page(request: Request) -> Response:
    pool = pool_of(request)
    info, _ = await pool.call(lambda s: s.GetClusterInfo(pb.ClusterInfoRequest(), timeout=CALL_TIMEOUT))
    stats, _ = await pool.call(lambda s: s.GetStats(pb.StatsRequest(minutes=60), timeout=CALL_TIMEOUT))
    return render(
        request,
        "cluster.html",
        info=info,
        finished_chart=charts.finished_per_minute(stats.minutes),
        depth_chart=charts.queue_depths(stats.minutes),
    )


routes = [Route("/cluster", cluster_page)]
