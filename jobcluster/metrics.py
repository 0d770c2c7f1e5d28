"""Prometheus metrics of the programs (prometheus-client), and the endpoint that serves them.

Every metric is defined here, named ``jobcluster_*``, so docs/operations.md's table and
docs/grafana-dashboard.json have one place to match (a test checks both). Each program counts what it
does itself: a server its calls and submissions, a worker its attempts, the leader its cron ticks; sum
them across targets. Queue depths are read from Redis by every server alike: take their ``max``.

A server or worker serves ``/metrics`` on METRICS_ADDR (``host:port``) or METRICS_PORT (on 127.0.0.1)
when one is set (``make start`` sets one per program and lists them in ``.metrics``); the web UI serves
it on its own address.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from jobcluster.settings import ConfigError, Settings

log = logging.getLogger("metrics")

#: Attempts last from milliseconds (``true``) to the default timeout (an hour).
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Submit -> start: about a millisecond when a worker is free, up to minutes behind a backlog.
_DELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

# --- servers ----------------------------------------------------------------------------------------
JOBS_SUBMITTED = Counter(
    "jobcluster_jobs_submitted",
    "Jobs stored by this server (SubmitJob, SubmitJobs, RunScheduleNow; not a repeat of an idempotency key), by queue.",
    ["queue"],
)
GRPC_REQUESTS = Counter(
    "jobcluster_grpc_requests", "gRPC calls this server ended, by method and status code.", ["method", "code"]
)
GRPC_SECONDS = Histogram(
    "jobcluster_grpc_request_duration_seconds",
    "How long this server took per gRPC call (WatchJob: the whole stream), by method.",
    ["method"],
    buckets=_CALL_BUCKETS,
)
QUEUE_DEPTH = Gauge(
    "jobcluster_queue_depth",
    "Ids in Redis by list: pending (every lane), processing, delayed, "
    "dlq; read every 5 s by each server (the same on every server: take the max).",
    ["list"],
)
LEADER = Gauge("jobcluster_leader", "1 while this server is the leader (cron, cleanup, reconciliation), else 0.")
LEADER_TERM = Gauge("jobcluster_leader_term", "The election term this server last led in (0: never).")
CRON_TICKS = Counter(
    "jobcluster_cron_ticks",
    "Cron ticks the leader handled, by result: fired (a job was made), "
    "missed (ticks older than CRON_MISFIRE_GRACE left out by catchup=skip: counted once per "
    "schedule and round), skipped (overlap=forbid and its last job still running).",
    ["result"],
)

# --- workers ----------------------------------------------------------------------------------------
JOBS_STARTED = Counter("jobcluster_jobs_started", "Attempts this worker started, by queue.", ["queue"])
JOBS_FINISHED = Counter(
    "jobcluster_jobs_finished",
    "Attempts this worker ended, by the job's status after it "
    "(SUCCEEDED; FAILED: dead-lettered; RETRYING: will run again; CANCELLED), by queue.",
    ["status", "queue"],
)
ATTEMPT_SECONDS = Histogram(
    "jobcluster_attempt_duration_seconds",
    "How long each attempt ran on this worker, by queue.",
    ["queue"],
    buckets=_DURATION_BUCKETS,
)
START_DELAY = Histogram(
    "jobcluster_start_delay_seconds",
    "From when a job was due (submitted, its run_at, or its retry's backoff) to its attempt's start, by queue.",
    ["queue"],
    buckets=_DELAY_BUCKETS,
)
WORKER_SLOTS = Gauge("jobcluster_worker_slots", "Job slots of this worker (WORKER_CONCURRENCY).")
WORKER_BUSY = Gauge("jobcluster_worker_slots_busy", "Slots of this worker running a job now.")

# --- every program ------------------------------------------------------------------------------------
STORE_ERRORS = Counter(
    "jobcluster_store_errors",
    "Calls to Redis or PostgreSQL that failed as an outage (each try counts), by engine.",
    ["engine"],
)

# --- the web UI -------------------------------------------------------------------------------------
WEBUI_REQUESTS = Counter(
    "jobcluster_webui_requests", "HTTP requests the web UI answered, by method and status code.", ["method", "code"]
)
WEBUI_SECONDS = Histogram(
    "jobcluster_webui_request_duration_seconds",
    "How long the web UI took to answer a request (to its headers: an SSE stream's life is not counted).",
    ["method"],
    buckets=_CALL_BUCKETS,
)


def metrics_address(settings: Settings) -> tuple[str, int] | None:
    """Where to serve /metrics: METRICS_ADDR, else METRICS_PORT on 127.0.0.1, else None (not served)."""
    if settings.metrics_addr:
        host, sep, port = settings.metrics_addr.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"METRICS_ADDR={settings.metrics_addr}: give host:port, e.g. 127.0.0.1:9101")
        return host.strip("[]") or "0.0.0.0", int(port)
    if settings.metrics_port:
        if not 0 < settings.metrics_port < 65536:
            raise ConfigError(f"METRICS_PORT={settings.metrics_port}: give a port from 1 to 65535")
        return "127.0.0.1", settings.metrics_port
    return None


def serve(settings: Settings, program: str) -> str:
    """Serve /metrics (in a thread of this process) where the settings say; returns ``host:port``, or ''
    when none is set. ConfigError when the address is wrong or taken."""
    where = metrics_address(settings)
    if where is None:
        return ""
    host, port = where
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        raise ConfigError(
            f"{program}: cannot serve metrics on {host}:{port} ({exc.strerror}): set METRICS_PORT "
            f"or METRICS_ADDR to a free port"
        ) from None
    log.info("%s: Prometheus metrics on http://%s:%d/metrics", program, host, port)
    return f"{host}:{port}"
