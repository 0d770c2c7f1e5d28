"""The cluster RPCs: leader, servers, workers and queue depths, as one server sees them; and the charts'
series (GetStats)."""

from __future__ import annotations

import bisect

from jobcluster.election import ETCD_ERRORS, read_leader
from jobcluster.model import MAX_NAME_CHARS, InvalidJob, Status, check_queue
from jobcluster.pb import scheduler_pb2 as pb
from scheduler_server import convert
from scheduler_server.api.base import Context, Servicer
from scheduler_server.api.jobs import MAX_FILTER_CHARS, check_filter
from scheduler_server.errors import rpc

#: GetStats: minutes of series by default and at most; finished jobs the duration histogram counts.
DEFAULT_MINUTES, MAX_MINUTES, DURATION_JOBS = 60, 1440, 1000
#: The duration histogram's buckets (seconds, each the most a job in it ran); one more for longer.
DURATION_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600)


def histogram(seconds: list[float]) -> list[pb.DurationBucket]:
    """Counts per DURATION_BUCKETS bucket (each: more than the one before, at most its bound), then longer."""
    counts = [0] * (len(DURATION_BUCKETS) + 1)
    for s in seconds:
        counts[bisect.bisect_left(DURATION_BUCKETS, s)] += 1
    return [pb.DurationBucket(up_to_seconds=float(bound), count=n) for bound, n in zip([*DURATION_BUCKETS, 0], counts)]


class ClusterRpcs(Servicer):
    """GetClusterInfo, GetStats."""

    @rpc
    async def GetStats(self, request: pb.StatsRequest, context: Context) -> pb.Stats:
        if not 0 <= request.minutes <= MAX_MINUTES:
            raise InvalidJob(f"minutes must be from 1 to {MAX_MINUTES} (0: {DEFAULT_MINUTES}), got {request.minutes}")
        status = request.status.strip().upper()
        if status and status not in (Status.SUCCEEDED.value, Status.FAILED.value, Status.CANCELLED.value):
            raise InvalidJob(
                f"status: the durations are of finished jobs: SUCCEEDED, FAILED or CANCELLED, got {request.status!r}"
            )
        check_filter("text", request.text, MAX_FILTER_CHARS)
        check_filter("schedule", request.schedule, MAX_NAME_CHARS)
        queue = check_queue(request.queue) if request.queue.strip() else None
        store = self.store
        out = pb.Stats()
        for m in await store.stats.minutes(request.minutes or DEFAULT_MINUTES):
            minute = out.minutes.add(
                minute_ms=int(m.start.timestamp() * 1000),
                finished=[pb.StatusCount(status=s, count=n) for s, n in sorted(m.finished.items())],
            )
            if m.depths is not None:
                minute.has_depths = True
                minute.pending, minute.processing = m.depths["pending"], m.depths["processing"]
                minute.delayed, minute.dlq = m.depths["delayed"], m.depths["dlq"]
        seconds = await store.stats.durations(
            status=status or None,
            text=request.text.strip() or None,
            schedule=request.schedule.strip() or None,
            queue=queue,
            limit=DURATION_JOBS,
        )
        out.durations.extend(histogram(seconds))
        out.durations_of = len(seconds)
        return out

    @rpc
    async def GetClusterInfo(self, request: pb.ClusterInfoRequest, context: Context) -> pb.ClusterInfo:
        leader = None
        election = "off"
        if self.settings.etcd_endpoints:
            election = "etcd"
            try:
                leader = await read_leader(
                    self.settings.etcd_endpoints,
                    self.settings.election_namespace,
                    self.settings.election_key,
                    auth=self.election.auth if self.election is not None else None,
                    tls=self.election.tls if self.election is not None else None,
                )
            except ETCD_ERRORS as exc:
                election = f"etcd unreachable: {exc or type(exc).__name__}"
        liveness = self.queue.liveness
        return convert.cluster_info(
            leader=leader,
            election=election,
            servers=await liveness.servers(),
            workers=await liveness.worker_infos(),
            gone=await liveness.gone_workers(),
            depths=await self.queue.jobs.depths(),
            dead_after_ms=int(self.settings.worker_dead_after * 1000),
            answered_by=self.address,
        )
