"""What every group of RPCs shares: settings, the store and queue, validation of a job's fields."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeAlias

import grpc

from jobcluster.election import Election
from jobcluster.lifecycle import Lifecycle
from jobcluster.model import JobSpec, validate_job
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from jobcluster.queue import Queue
from jobcluster.rows import JobRow
from jobcluster.settings import Settings
from jobcluster.store import Store
from scheduler_server.errors import Forbidden, NotFound, NotReady
from scheduler_server.tokens import Role, Tokens, bearer
from scheduler_server.waiting import waiting_reasons
from scheduler_server.watch import WatchHub

Context: TypeAlias = grpc.aio.ServicerContext


class Servicer(pb_grpc.JobServiceServicer):
    """The state of a server's API; stateless across servers, so any number can run side by side."""

    def __init__(self, settings: Settings, queue: Queue, address: str, tokens: Tokens) -> None:
        self.settings = settings
        self.queue = queue
        self.address = address
        self.tokens = tokens  # the ones the auth interceptor checks: for what needs more than the RPC's role
        self._store: Store | None = None
        self._life: Lifecycle | None = None
        self.election: Election | None = None  # set by the server when it campaigns (GetClusterInfo)
        self.watch_hub = WatchHub(
            lambda: self.store,
            queue.live_output,
            max_streams=settings.watch_max_streams,
            max_life=settings.watch_max_life,
            server=address,
        )

    def attach_store(self, store: Store) -> None:
        self._store = store
        self._life = Lifecycle(self.settings, store, self.queue, address=self.address, log=logging.getLogger("server"))

    @property
    def life(self) -> Lifecycle:
        """Every job transition (jobcluster/lifecycle); NotReady (UNAVAILABLE) until PostgreSQL was reached."""
        if self._life is None:
            raise NotReady()
        return self._life

    @property
    def store(self) -> Store:
        """The store; NotReady (UNAVAILABLE) until the server has reached PostgreSQL."""
        if self._store is None:
            raise NotReady()
        return self._store

    def require_role(self, context: Context, need: Role, what: str) -> None:
        """Forbidden (PERMISSION_DENIED) unless the caller's token has role ``need``; the auth interceptor has
        already checked the RPC's own role (scheduler_server/auth.py). With no tokens configured, anyone may."""
        if not self.tokens.required:
            return
        presented = bearer(context.invocation_metadata())
        token = self.tokens.find(presented) if presented else None
        if token is None or token.role < need:
            who = f"the token of {token.name} has role {token.role.name.lower()}" if token else "no token"
            raise Forbidden(f"{who}; {what} needs role {need.name.lower()}")

    def job_spec(self, request: pb.Job | pb.Schedule, **extra: Any) -> JobSpec:
        """Validate a job's fields (of a job, or of a schedule's jobs), with the server's defaults."""
        return validate_job(
            command=request.command,
            name=request.name,
            description=request.description,
            max_retries=request.max_retries if request.HasField("max_retries") else None,
            timeout_seconds=request.timeout_seconds if request.HasField("timeout_seconds") else None,
            queue=request.queue,
            priority=request.priority,
            constraints=request.constraints,
            concurrency_key=request.concurrency_key,
            max_concurrency=request.max_concurrency,
            default_max_retries=self.settings.job_default_max_retries,
            default_timeout=self.settings.job_default_timeout,
            max_command_bytes=self.settings.job_max_command_bytes,
            **extra,
        )

    async def waiting_reasons(self, jobs: Sequence[JobRow]) -> dict[str, str]:
        """Job id -> why it waits, for the QUEUED ones that cannot start (scheduler_server/waiting.py)."""
        return await waiting_reasons(
            jobs,
            self.queue,
            self.store,
            limit_of=self.concurrency_limit,
            dead_after_ms=int(self.settings.worker_dead_after * 1000),
        )

    def concurrency_limit(self, job: JobRow) -> int:
        """How many jobs of this job's concurrency key may run at once: its max_concurrency, else the key's
        CONCURRENCY_LIMITS entry, else 1 (as claim_job in sql/jobs.sql decides, with the workers' settings)."""
        return job.max_concurrency or dict(self.settings.concurrency_limits).get(job.concurrency_key, 1)

    async def job_row(self, job_id: str) -> JobRow:
        """The job, or NotFound."""
        job = await self.store.job_queries.get(job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}")
        return job
