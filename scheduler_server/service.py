"""JobService: the gRPC API, assembled from one module per concern under :mod:`scheduler_server.api`.

Every RPC validates its input, writes PostgreSQL first and Redis second, and
raises; :mod:`scheduler_server.errors` turns errors into status codes.
"""

from __future__ import annotations

from scheduler_server.api.cluster import ClusterRpcs
from scheduler_server.api.dead_letters import DeadLetterRpcs
from scheduler_server.api.jobs import JobRpcs
from scheduler_server.api.schedules import ScheduleRpcs


class JobService(JobRpcs, DeadLetterRpcs, ScheduleRpcs, ClusterRpcs):
    """Every RPC of ``scheduler.JobService``; stateless, so any number of servers can run side by side."""
