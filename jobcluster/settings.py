"""All configuration, read once from the environment (and ``.env``) by the entry points.

The real environment wins over ``.env``. Everything else in jobcluster receives
a :class:`Settings` (or the clients built from it) as an argument.

Each setting is one field below: its environment variable is the field's name
in upper case, its kind says how the value is read (see :func:`setting`), and
``.env.example`` documents it (tests/unit/test_docs.py checks both ways).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from jobcluster.durations import parse_duration

#: Upper bound of JOB_OUTPUT_LIMIT: one job must fit in one gRPC reply.
MAX_JOB_OUTPUT_LIMIT = 8 * 2**20
#: Upper bound of JOB_MAX_COMMAND_BYTES: Linux passes at most 128 KiB, its NUL included, in one argument
#: (MAX_ARG_STRLEN), and the command is the argument of ``sh -c``: a longer one could never start.
MAX_COMMAND_LIMIT = 128 * 1024 - 1


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _text(name: str, raw: str, meta: Mapping[str, Any]) -> str:
    choices: tuple[str, ...] = meta.get("choices", ())
    value = raw.lower() if choices else raw
    if choices and value not in choices:
        raise ConfigError(f"{name} must be {' or '.join(choices)}, got {raw!r}")
    return value


def _integer(name: str, raw: str, meta: Mapping[str, Any]) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    minimum: int = meta.get("minimum", 0)
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _seconds(name: str, raw: str, meta: Mapping[str, Any]) -> float:
    if meta.get("off") and raw.strip().lower() == "off":  # a duration that may be turned off: 0
        return 0.0
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


_UNITS = {"k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "b": 1, "": 1}


def _size(name: str, raw: str, meta: Mapping[str, Any]) -> int:
    num = raw.lower().rstrip("kmib")
    try:
        value = int(num) * _UNITS[raw.lower()[len(num) :]]
    except (ValueError, KeyError):
        raise ConfigError(f"{name} must be a size like 262144, 256k or 1m, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _items(name: str, raw: str, meta: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _flag(name: str, raw: str, meta: Mapping[str, Any]) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false (1/0, yes/no), got {raw!r}")


def _limits(name: str, raw: str, meta: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    """``key=N,key=N``: a number per key (a key may hold ``=``, not ``,``)."""
    found: dict[str, int] = {}
    for part in _items(name, raw, meta):
        key, sep, number = part.rpartition("=")
        if not sep or not key.strip() or not number.strip().isdigit() or int(number) < 1:
            raise ConfigError(f"{name} must be key=N,key=N with each N at least 1, got {part!r}")
        found[key.strip()] = int(number)
    return tuple(found.items())


Reader = Callable[[str, str, Mapping[str, Any]], Any]
KINDS: dict[str, Reader] = {
    "text": _text,
    "int": _integer,
    "duration": _seconds,
    "size": _size,
    "list": _items,
    "bool": _flag,
    "limits": _limits,
}


def setting(default: Any, kind: str = "text", **meta: Any) -> Any:
    """A field read from the variable of its name: ``kind`` is text, int, duration, size, list, bool or
    limits (``key=N,...``).

    ``meta``: ``minimum`` (int), ``choices`` (text, lower-cased), ``off`` (duration: ``off`` reads as 0),
    ``empty_means_none`` (list: set but empty gives ``()`` rather than the default), ``secret`` (left out of
    the repr, so printing the settings never shows it).
    """
    return dataclasses.field(default=default, repr=not meta.get("secret", False), metadata={"kind": kind, **meta})


@dataclass(frozen=True)
class Settings:
    """Every knob of every program; see ``.env.example`` for the meaning of each."""

    database_url: str = setting("postgresql://jobcluster@127.0.0.1:5432/jobcluster")
    redis_addr: str = setting("127.0.0.1:6379")
    # ETCD_ENDPOINTS set to an empty string means: no etcd, no leader.
    etcd_endpoints: tuple[str, ...] = setting(("127.0.0.1:2379",), "list", empty_means_none=True)
    # The services' passwords are read from files (jobcluster/credentials.py), never from the environment.
    database_password_file: str = setting("")
    redis_user: str = setting("")
    redis_password_file: str = setting("")
    # Follow the Redis primary through Sentinel (jobcluster/queue/sentinel.py); REDIS_ADDR is then unused.
    redis_sentinels: tuple[str, ...] = setting((), "list")
    redis_sentinel_master: str = setting("jobcluster")
    redis_sentinel_password_file: str = setting("")
    etcd_user: str = setting("")
    etcd_password_file: str = setting("")
    # TLS to etcd (jobcluster/etcd_client.py): its CA, and the client certificate it asks for (--client-cert-auth).
    etcd_ca: str = setting("")
    etcd_cert: str = setting("")
    etcd_key: str = setting("")
    election_namespace: str = setting("/scheduler/v1")
    election_key: str = setting("leader")
    lease_ttl: float = setting(10.0, "duration")
    worker_dead_after: float = setting(3.0, "duration")
    reconcile_after: float = setting(5.0, "duration")
    cron_misfire_grace: float = setting(30.0, "duration")
    cron_min_interval: float = setting(10.0, "duration")
    max_schedules: int = setting(1000, "int", minimum=1)
    pg_max_conns: int = setting(10, "int", minimum=1)
    pg_min_conns: int = setting(1, "int")
    pg_max_conn_lifetime: float = setting(1800.0, "duration")
    watch_max_streams: int = setting(1000, "int", minimum=1)
    watch_max_life: float = setting(1800.0, "duration")
    # Finished jobs are deleted this long after they ended (scheduler_server/retention.py); 0 or off: kept.
    job_retention: float = setting(7 * 86400.0, "duration", off=True)
    server_host: str = setting("127.0.0.1")
    server_port: int = setting(50051, "int")
    # Who may call the servers, and TLS (scheduler_server/auth.py; clients: jobcluster/failover.py).
    auth_token: str = setting("", secret=True)
    auth_tokens_file: str = setting("")
    tls_cert: str = setting("")
    tls_key: str = setting("")
    tls_client_ca: str = setting("")
    tls_ca: str = setting("")
    tls_client_cert: str = setting("")
    tls_client_key: str = setting("")
    servers: tuple[str, ...] = setting((), "list")
    submit_server: str = setting("")
    status_servers: tuple[str, ...] = setting((), "list")
    webui_addr: str = setting("127.0.0.1:8080")
    webui_hosts: tuple[str, ...] = setting((), "list")
    webui_password_file: str = setting("")
    webui_session_ttl: float = setting(12 * 3600.0, "duration")
    # Proxies (addresses, CIDR networks) whose X-Forwarded-For the web UI believes; empty: none (webui/config.py).
    webui_trusted_proxies: tuple[str, ...] = setting((), "list")
    worker_id: str = setting("")
    worker_concurrency: int = setting(4, "int", minimum=1)
    # Routing (jobcluster/queue/lanes.py): the queues a worker takes from, in order, and its tags.
    worker_queues: tuple[str, ...] = setting(("default",), "list")
    worker_tags: tuple[str, ...] = setting((), "list")
    # Jobs sharing a concurrency_key run at most this many at once (a job's max_concurrency wins; else 1).
    concurrency_limits: tuple[tuple[str, int], ...] = setting((), "limits")
    heartbeat_interval: float = setting(1.0, "duration")
    # Tests only: run this program as if its host's clock were this far off (jobcluster/clock.py).
    test_clock_skew_ms: int = setting(0, "int", minimum=-86_400_000)
    worker_shutdown_grace: float = setting(30.0, "duration")
    job_default_timeout: float = setting(3600.0, "duration")
    job_default_max_retries: int = setting(3, "int")
    job_kill_grace: float = setting(5.0, "duration")
    job_output_limit: int = setting(256 * 1024, "size")
    job_max_command_bytes: int = setting(64 * 1024, "size")
    job_env_passthrough: tuple[str, ...] = setting((), "list")
    # Who jobs run as and where (worker/sandbox.py): a root worker needs JOB_USER.
    job_user: str = setting("")
    job_workdir_root: str = setting("")
    job_keep_workdir: bool = setting(False, "bool")
    retry_backoff_base: float = setting(1.0, "duration")
    retry_backoff_max: float = setting(300.0, "duration")
    # Prometheus /metrics of a server or worker (jobcluster/metrics.py): host:port, or a port on 127.0.0.1.
    metrics_addr: str = setting("")
    metrics_port: int = setting(0, "int", minimum=0)
    log_format: str = setting("text", choices=("text", "json"))
    log_level: str = setting("INFO")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, dotenv_path: str | None = ".env") -> Settings:
        """Build settings from ``env`` (default: ``.env`` overlaid by the real environment)."""
        if env is None:
            env = read_env(dotenv_path)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name, meta = f.name.upper(), f.metadata
            raw = env.get(name)
            if raw is None or not raw.strip():
                if raw is not None and meta.get("empty_means_none"):
                    values[f.name] = ()
                continue
            values[f.name] = KINDS[meta["kind"]](name, raw.strip(), meta)
        return _checked(cls(**values))

    def effective_worker_id(self) -> str:
        """WORKER_ID, or ``<hostname>-<pid>`` when it is not set."""
        return self.worker_id or f"{socket.gethostname()}-{os.getpid()}"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` (brackets allowed); 0.0.0.0, any other name or
    address is not."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_port(addr: str) -> tuple[str, int]:
    """``host:port`` (an IPv6 host in brackets) as (host, port); ValueError when it is not one."""
    host, sep, port = addr.strip().rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{addr!r} is not host:port")
    return host.strip("[]"), int(port)


def read_env(dotenv_path: str | None = ".env") -> dict[str, str]:
    """``.env`` (when there is one) overlaid by the real environment."""
    merged: dict[str, str] = {}
    if dotenv_path and os.path.exists(dotenv_path):
        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(os.environ)
    return merged


def _checked(s: Settings) -> Settings:
    """Normalise, and refuse combinations that cannot work."""
    s = dataclasses.replace(s, election_namespace=s.election_namespace.rstrip("/"), log_level=s.log_level.upper())
    if s.lease_ttl < 2:
        raise ConfigError(f"LEASE_TTL must be at least 2s (etcd's smallest lease), got {s.lease_ttl:g}s")
    if s.worker_dead_after <= s.heartbeat_interval:
        raise ConfigError(
            f"WORKER_DEAD_AFTER ({s.worker_dead_after:g}s) must exceed HEARTBEAT_INTERVAL ({s.heartbeat_interval:g}s)"
        )
    if s.job_output_limit > MAX_JOB_OUTPUT_LIMIT:
        raise ConfigError(
            f"JOB_OUTPUT_LIMIT must be at most {MAX_JOB_OUTPUT_LIMIT // 2**20}m, so that a job's "
            f"output fits in one reply; got {s.job_output_limit}"
        )
    if s.job_max_command_bytes > MAX_COMMAND_LIMIT:
        raise ConfigError(
            f"JOB_MAX_COMMAND_BYTES must be at most {MAX_COMMAND_LIMIT} bytes (Linux passes at most 128 KiB "
            f"in one argument, and the command is the argument of sh -c); got {s.job_max_command_bytes}"
        )
    if s.watch_max_life < 1:
        raise ConfigError(f"WATCH_MAX_LIFE must be at least 1s, got {s.watch_max_life:g}s")
    if s.pg_min_conns > s.pg_max_conns:
        raise ConfigError(f"PG_MIN_CONNS ({s.pg_min_conns}) must not exceed PG_MAX_CONNS ({s.pg_max_conns})")
    for one, other in (("tls_cert", "tls_key"), ("tls_client_cert", "tls_client_key"), ("etcd_cert", "etcd_key")):
        if bool(getattr(s, one)) != bool(getattr(s, other)):
            raise ConfigError(f"{one.upper()} and {other.upper()} go together: set both or neither")
    if s.tls_client_ca and not s.tls_cert:
        raise ConfigError("TLS_CLIENT_CA (require client certificates) needs TLS_CERT and TLS_KEY")
    _check_credentials(s)
    return s


def _check_credentials(s: Settings) -> None:
    """A user without a password (or a password given twice) is a mistake; the files are read at connect."""
    if bool(s.etcd_user) != bool(s.etcd_password_file):
        raise ConfigError("ETCD_USER and ETCD_PASSWORD_FILE go together: set both or neither")
    if s.redis_user and not (s.redis_password_file or urlsplit(s.redis_addr).password):
        raise ConfigError("REDIS_USER needs a password: set REDIS_PASSWORD_FILE")
    for addr in s.redis_sentinels:
        try:
            host_port(addr)
        except ValueError as exc:
            raise ConfigError(f"REDIS_SENTINELS must be host:port,host:port,...; {exc}") from None
    for url, name, file_setting in (
        (s.database_url, "DATABASE_URL", "DATABASE_PASSWORD_FILE"),
        (s.redis_addr, "REDIS_ADDR", "REDIS_PASSWORD_FILE"),
    ):
        if getattr(s, file_setting.lower()) and "://" in url and urlsplit(url).password:
            raise ConfigError(f"{name} holds a password and {file_setting} is set: use one of them")


def load_or_exit() -> Settings:
    """Settings for a program's ``main``: on a bad value, print it and exit with status 2."""
    from jobcluster.credentials import check_password_files  # it imports this module

    try:
        settings = Settings.from_env()
        check_password_files(settings)  # a missing password file stops the program now, not at connect
        return settings
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
