"""All configuration, read once from the environment (and ``.env``) by the entry points.

The real environment wins over ``.env``. Everything else in jobcluster receives
a :class:`Settings` (or the clients built from it) as an argument.
"""

from __future__ import annotations

import os
import sys
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from dotenv import dotenv_values

from jobcluster.durations import parse_duration


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _duration(env: Mapping[str, str], name: str, default: str) -> float:
    raw = env.get(name, "").strip() or default
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _size(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    units = {"k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "b": 1, "": 1}
    num = raw.rstrip("kmib")
    unit = raw[len(num):]
    try:
        value = int(num) * units[unit]
    except (ValueError, KeyError):
        raise ConfigError(f"{name} must be a size like 262144, 256k or 1m, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Every knob of every program; see ``.env.example`` for the meaning of each."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/jobcluster"
    redis_addr: str = "127.0.0.1:6379"
    etcd_endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    election_namespace: str = "/scheduler/v1"
    election_key: str = "leader"
    lease_ttl: float = 10.0
    worker_dead_after: float = 3.0
    reconcile_after: float = 5.0
    cron_misfire_grace: float = 30.0
    pg_max_conns: int = 10
    pg_min_conns: int = 1
    pg_max_conn_lifetime: float = 1800.0
    server_host: str = "127.0.0.1"
    server_port: int = 50051
    servers: tuple[str, ...] = ()
    submit_server: str = ""
    status_servers: tuple[str, ...] = ()
    webui_addr: str = "127.0.0.1:8080"
    worker_id: str = ""
    worker_concurrency: int = 4
    heartbeat_interval: float = 1.0
    worker_shutdown_grace: float = 30.0
    job_default_timeout: float = 3600.0
    job_default_max_retries: int = 3
    job_kill_grace: float = 5.0
    job_output_limit: int = 256 * 1024
    job_max_command_bytes: int = 64 * 1024
    job_env_passthrough: tuple[str, ...] = ()
    retry_backoff_base: float = 1.0
    retry_backoff_max: float = 300.0
    log_format: str = "text"
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, dotenv_path: str | None = ".env") -> "Settings":
        """Build settings from ``env`` (default: ``.env`` overlaid by the real environment)."""
        if env is None:
            merged: dict[str, str] = {}
            if dotenv_path and os.path.exists(dotenv_path):
                merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
            merged.update(os.environ)
            env = merged
        d = cls()
        etcd = env.get("ETCD_ENDPOINTS")
        log_format = env.get("LOG_FORMAT", d.log_format).strip().lower() or d.log_format
        if log_format not in ("text", "json"):
            raise ConfigError(f"LOG_FORMAT must be text or json, got {log_format!r}")
        settings = cls(
            database_url=env.get("DATABASE_URL", "").strip() or d.database_url,
            redis_addr=env.get("REDIS_ADDR", "").strip() or d.redis_addr,
            # ETCD_ENDPOINTS set to an empty string means: no etcd, no leader.
            etcd_endpoints=d.etcd_endpoints if etcd is None else _list(env, "ETCD_ENDPOINTS"),
            election_namespace=(env.get("ELECTION_NAMESPACE", "").strip() or d.election_namespace).rstrip("/"),
            election_key=env.get("ELECTION_KEY", "").strip() or d.election_key,
            lease_ttl=_duration(env, "LEASE_TTL", "10s"),
            worker_dead_after=_duration(env, "WORKER_DEAD_AFTER", "3s"),
            reconcile_after=_duration(env, "RECONCILE_AFTER", "5s"),
            cron_misfire_grace=_duration(env, "CRON_MISFIRE_GRACE", "30s"),
            pg_max_conns=_int(env, "PG_MAX_CONNS", d.pg_max_conns, minimum=1),
            pg_min_conns=_int(env, "PG_MIN_CONNS", d.pg_min_conns),
            pg_max_conn_lifetime=_duration(env, "PG_MAX_CONN_LIFETIME", "30m"),
            server_host=env.get("SERVER_HOST", "").strip() or d.server_host,
            server_port=_int(env, "SERVER_PORT", d.server_port, minimum=0),
            servers=_list(env, "SERVERS"),
            submit_server=env.get("SUBMIT_SERVER", "").strip(),
            status_servers=_list(env, "STATUS_SERVERS"),
            webui_addr=env.get("WEBUI_ADDR", "").strip() or d.webui_addr,
            worker_id=env.get("WORKER_ID", "").strip(),
            worker_concurrency=_int(env, "WORKER_CONCURRENCY", d.worker_concurrency, minimum=1),
            heartbeat_interval=_duration(env, "HEARTBEAT_INTERVAL", "1s"),
            worker_shutdown_grace=_duration(env, "WORKER_SHUTDOWN_GRACE", "30s"),
            job_default_timeout=_duration(env, "JOB_DEFAULT_TIMEOUT", "1h"),
            job_default_max_retries=_int(env, "JOB_DEFAULT_MAX_RETRIES", d.job_default_max_retries),
            job_kill_grace=_duration(env, "JOB_KILL_GRACE", "5s"),
            job_output_limit=_size(env, "JOB_OUTPUT_LIMIT", d.job_output_limit),
            job_max_command_bytes=_size(env, "JOB_MAX_COMMAND_BYTES", d.job_max_command_bytes),
            job_env_passthrough=_list(env, "JOB_ENV_PASSTHROUGH"),
            retry_backoff_base=_duration(env, "RETRY_BACKOFF_BASE", "1s"),
            retry_backoff_max=_duration(env, "RETRY_BACKOFF_MAX", "5m"),
            log_format=log_format,
            log_level=(env.get("LOG_LEVEL", "").strip() or d.log_level).upper(),
        )
        if settings.lease_ttl < 2:
            raise ConfigError(f"LEASE_TTL must be at least 2s (etcd's smallest lease), got {settings.lease_ttl:g}s")
        if settings.worker_dead_after <= settings.heartbeat_interval:
            raise ConfigError(f"WORKER_DEAD_AFTER ({settings.worker_dead_after:g}s) must exceed "
                              f"HEARTBEAT_INTERVAL ({settings.heartbeat_interval:g}s)")
        if settings.pg_min_conns > settings.pg_max_conns:
            raise ConfigError(
                f"PG_MIN_CONNS ({settings.pg_min_conns}) must not exceed PG_MAX_CONNS ({settings.pg_max_conns})"
            )
        return settings

    def effective_worker_id(self) -> str:
        """WORKER_ID, or ``<hostname>-<pid>`` when it is not set."""
        return self.worker_id or f"{socket.gethostname()}-{os.getpid()}"


def load_or_exit() -> Settings:
    """Settings for a program's ``main``: on a bad value, print it and exit with status 2."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
