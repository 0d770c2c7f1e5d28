"""Build, run and stop one gRPC server: JobService + health + reflection, behind tokens and TLS."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from jobcluster import metrics
from jobcluster import queue as queue_mod
from jobcluster.aio import retrying
from jobcluster.credentials import etcd_auth
from jobcluster.election import Election
from jobcluster.errors import POSTGRES_ERRORS, UNAVAILABLE
from jobcluster.etcd_client import etcd_tls
from jobcluster.limits import GRPC_OPTIONS
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from jobcluster.queue import Queue
from jobcluster.settings import Settings
from jobcluster.store import Store
from scheduler_server import auth, telemetry, tokens
from scheduler_server.leader import Leader
from scheduler_server.service import JobService

log = logging.getLogger("server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["JobService"].full_name
STOP_GRACE = 5.0


class SchedulerServer:
    """One stateless server process. :meth:`start`, then :meth:`stop` on SIGTERM."""

    def __init__(self, settings: Settings) -> None:
        """Raises :class:`tokens.AuthConfigError` when the token or TLS settings cannot be used."""
        self.settings = settings
        self.address = f"{settings.server_host}:{settings.server_port}"
        self.tokens = tokens.load_tokens(settings)
        self.credentials = auth.server_credentials(settings)
        auth.check_exposure(settings.server_host, self.tokens, tls=self.credentials is not None)
        self.redis = queue_mod.connect_from(settings)
        self.service = JobService(settings, Queue(self.redis), self.address, tokens.Tokens(self.tokens))
        self.health = HealthServicer()
        # so_reuseport off: a second server on a taken port must fail, not share it.
        self.grpc = grpc.aio.server(
            interceptors=[telemetry.MetricsInterceptor(), auth.AuthInterceptor(tokens.Tokens(self.tokens))],
            options=[("grpc.so_reuseport", 0), *GRPC_OPTIONS],
        )
        self.store: Store | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.election: Election | None = None
        self.leader: Leader | None = None
        if settings.etcd_endpoints:
            self.election = Election(
                settings.etcd_endpoints,
                settings.election_namespace,
                settings.election_key,
                settings.lease_ttl,
                identity=self.address,
                address=self.address,
                auth=etcd_auth(settings),
                tls=etcd_tls(settings),
            )
        self.service.election = self.election

    async def start(self) -> None:
        pb_grpc.add_JobServiceServicer_to_server(self.service, self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.grpc,
        )
        if self.credentials is None:
            port = self.grpc.add_insecure_port(self.address)
        else:
            port = self.grpc.add_secure_port(self.address, self.credentials)
        if port == 0:
            raise OSError(f"cannot listen on {self.address}")
        await self._set_health(False)
        await self.grpc.start()
        log.info("listening on %s (%s, %s)", self.address, self._tls_label(), self._token_label())
        self._connect_task = asyncio.create_task(self._connect_store(), name="connect-postgres")
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="server-heartbeat"))
        metrics.serve(self.settings, f"server {self.address}")  # ConfigError: address taken
        self._tasks.append(asyncio.create_task(telemetry.gauges(self.service.queue, self.election), name="gauges"))
        if self.election is None:
            log.warning(
                "ETCD_ENDPOINTS is empty: running without a leader. Cron schedules, cleanup after "
                "dead workers and reconciliation are OFF on this server (it still queues its own "
                "submissions that Redis missed)"
            )

    def _tls_label(self) -> str:
        if self.credentials is None:
            return "plaintext"
        return "TLS, client certificates required" if self.settings.tls_client_ca else "TLS"

    def _token_label(self) -> str:
        if not self.tokens:
            return "no token: every caller may do everything"
        source = "AUTH_TOKENS_FILE" if self.settings.auth_tokens_file else "AUTH_TOKEN"
        return f"{len(self.tokens)} token(s) from {source}"

    async def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)

    async def _connect_store(self) -> None:
        """Reach PostgreSQL (retrying while it is down), migrate, then report SERVING."""
        self.store = await retrying(
            lambda: Store.connect(self.settings),
            what="connect to DATABASE_URL",
            errors=POSTGRES_ERRORS,
            first_delay=0.5,
            log=log,
        )
        self.service.attach_store(self.store)
        # Its own submissions stored but not pushed (Redis down, or its last run died) heal without a leader.
        self._tasks.append(
            asyncio.create_task(
                self.service.life.unpushed.run(self.store, self.service.queue, self.address), name="heal-unpushed"
            )
        )
        await self._set_health(True)
        log.info("ready: PostgreSQL connected, schema current")
        if self.election is not None:
            self.leader = Leader(self.settings, self.store, self.service.queue, self.election, address=self.address)
            self.election.start()
            self._tasks.append(asyncio.create_task(self.leader.run(), name="leader"))

    async def _heartbeat_loop(self) -> None:
        """Tell the cluster (GetClusterInfo, make status) that this server is alive."""
        info: dict[str, str | int | float] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_ms": int(time.time() * 1000),
        }
        failing = False
        while True:
            try:
                await self.service.queue.liveness.server_heartbeat(self.address, info, ttl=10.0)
                failing = False
            except UNAVAILABLE as exc:
                if not failing:
                    log.error("server heartbeat: Redis unavailable (%s)", exc)
                failing = True
            await asyncio.sleep(1.0)

    async def wait(self) -> None:
        await self.grpc.wait_for_termination()

    async def stop(self) -> None:
        """NOT_SERVING, finish in-flight calls (up to STOP_GRACE), close the pools."""
        log.info("stopping: finishing in-flight calls")
        await self.health.enter_graceful_shutdown()
        if self.election is not None:
            await self.election.resign()  # first: a follower takes over while we finish
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            async with asyncio.timeout(2):
                await self.service.queue.liveness.remove_server(self.address)
        except UNAVAILABLE:  # TimeoutError is one of them
            pass
        self.service.watch_hub.close()  # watchers go to another server now, not after STOP_GRACE
        await self.grpc.stop(STOP_GRACE)
        if self._connect_task is not None:
            self._connect_task.cancel()
            await asyncio.gather(self._connect_task, return_exceptions=True)
        if self.store is not None:
            await self.store.close()
        await self.redis.aclose()
        log.info("stopped")
