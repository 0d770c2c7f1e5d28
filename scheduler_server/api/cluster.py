"""The cluster RPC: leader, servers, workers and queue depths, as one server sees them."""

from __future__ import annotations

from jobcluster.election import ETCD_ERRORS, read_leader
from jobcluster.pb import scheduler_pb2 as pb
from scheduler_server import convert
from scheduler_server.api.base import Context, Servicer
from scheduler_server.errors import rpc


class ClusterRpcs(Servicer):
    """GetClusterInfo."""

    @rpc
    async def GetClusterInfo(self, request: pb.ClusterInfoRequest, context: Context) -> pb.ClusterInfo:
        leader = None
        election = "off"
        if self.settings.etcd_endpoints:
            election = "etcd"
            try:
                leader = await read_leader(self.settings.etcd_endpoints, self.settings.election_namespace,
                                           self.settings.election_key,
                                           auth=self.election.auth if self.election is not None else None)
            except ETCD_ERRORS as exc:
                election = f"etcd unreachable: {exc or type(exc).__name__}"
        liveness = self.queue.liveness
        return convert.cluster_info(
            leader=leader, election=election, servers=await liveness.servers(),
            workers=await liveness.worker_infos(), depths=await self.queue.jobs.depths(),
            dead_after_ms=int(self.settings.worker_dead_after * 1000), answered_by=self.address)
