"""Cluster (/cluster): the leader, the servers, the workers and the queue depths."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobcluster.failover import CALL_TIMEOUT
from jobcluster.pb import scheduler_pb2 as pb
from webui.errors import context, on_error_render
from webui.web import pool_of, render


@on_error_render("cluster.html", context(info=None))
async def cluster_page(request: Request) -> Response:
    info, _ = await pool_of(request).call(lambda s: s.GetClusterInfo(pb.ClusterInfoRequest(), timeout=CALL_TIMEOUT))
    return render(request, "cluster.html", info=info)


routes = [Route("/cluster", cluster_page)]
