"""The Redis, PostgreSQL and etcd of ``make start``: where their data lives, their passwords, and the
settings the programs need to log in (written to ``.env``, so every program started here finds them).

Passwords are generated once into ``.run/secrets/`` (directory 0700, files 0600) and given to the
programs as ``*_FILE`` settings: no password is on a command line or in a program's environment.
etcd also lets in only clients with a certificate of its own CA (``.run/etcd-tls/``, keys 0600 in a
0700 directory), given to the programs as ETCD_CA, ETCD_CERT and ETCD_KEY.
PostgreSQL keeps its data in ``.run/pg`` when the ``postgres`` user can reach it; below a private
(0700) directory it gets one of its own, ``/var/lib/jobcluster/<hash of the checkout path>/pg``.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import redis
from dotenv import set_key
from redis.backoff import NoBackoff
from redis.retry import Retry

from devtools import lockdown
from devtools import services as svc
from devtools.tls import ETCD_CLIENT, DevTls
from jobcluster.credentials import etcd_auth, optional_secret
from jobcluster.settings import ConfigError, Settings, read_env

ROOT = Path.cwd()
RUN = ROOT / ".run"
LOG = ROOT / "log"
SECRETS = RUN / "secrets"
OUTSIDE = Path("/var/lib/jobcluster")
APP_USER = "jobcluster"
ETCD_AUTH_MARK = RUN / "etcd.auth"  # written once etcd has its users and auth is on
ETCD_TLS = RUN / "etcd-tls"  # etcd's private CA, its certificate and the programs' (tls.ensure_etcd_tls)
SOCKET_PATH_MAX = 107  # sun_path, less its NUL


class DevServices:
    """The logins of make start's services, and the settings that tell the programs about them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env: dict[str, str] = {}  # settings to write to .env where they are empty
        self.pg_why = ""  # why PostgreSQL's data is outside the checkout, once it is

    # --- logins: the setting's value when set, else ours (remembered in .env) ---------------

    def _file(self, setting: str, value: str, default: str, url_password: str | None) -> Path:
        path = ROOT / (value or f".run/secrets/{default}")
        if url_password is not None:  # the password in the URL is the one: keep it where we can read it
            lockdown.secret_file(path, url_password)
        elif not value:
            self.env[setting] = f".run/secrets/{default}"
        return path

    def postgres_login(self) -> svc.Login:
        url = urlsplit(self.settings.database_url)
        file = self._file(
            "DATABASE_PASSWORD_FILE", self.settings.database_password_file, "postgres_password", url.password
        )
        return svc.Login(url.username or getpass.getuser(), file)

    def redis_login(self) -> svc.Login:
        url = urlsplit(self.settings.redis_addr) if "://" in self.settings.redis_addr else None
        user = self.settings.redis_user or (url.username if url else None)
        if not user:
            user = "default" if url and url.password else APP_USER
            if user == APP_USER:
                self.env["REDIS_USER"] = APP_USER
        file = self._file(
            "REDIS_PASSWORD_FILE", self.settings.redis_password_file, "redis_password", url.password if url else None
        )
        return svc.Login(user, file)

    def etcd_users(self) -> svc.EtcdUsers:
        if not self.settings.etcd_user:
            self.env["ETCD_USER"] = APP_USER
        file = self._file("ETCD_PASSWORD_FILE", self.settings.etcd_password_file, "etcd_password", None)
        for setting, path in zip(("ETCD_CA", "ETCD_CERT", "ETCD_KEY"), _etcd_client_files()):
            if not getattr(self.settings, setting.lower()):
                self.env[setting] = str(path.relative_to(ROOT))
        return svc.EtcdUsers(
            SECRETS / "etcd_root_password",
            svc.Login(self.settings.etcd_user or APP_USER, file),
            self.settings.election_namespace.rstrip("/") + "/",
            ETCD_TLS,
        )

    # --- starting ---------------------------------------------------------------------------

    def start_redis(self, port: int) -> svc.Service:
        return svc.start_redis(
            RUN / "redis", port, LOG / "redis.log", persist=True, detach=True, login=self.redis_login()
        )

    def start_postgres(self, port: int) -> svc.Service:
        database = urlsplit(self.settings.database_url).path.lstrip("/") or "jobcluster"
        login = self.postgres_login()
        if login.user == lockdown.PG_SUPERUSER:  # before anything starts: ensure_pg_role says the same
            raise lockdown.LockError(lockdown.superuser_refused(port, database))
        data, self.pg_why = pg_data_dir()
        return svc.start_postgres(data, port, LOG / "postgres.log", detach=True, database=database, login=login)

    def start_etcd(self, port: int) -> svc.Service:
        users = self.etcd_users()
        try:
            service = svc.start_etcd(RUN / "etcd", port, port + 1, LOG / "etcd.log", detach=True, users=users)
        except lockdown.LockError as exc:
            raise lockdown.LockError(
                f"{exc}. Its root password should be in {users.root_password_file}; if that file is lost, "
                f"move .run/etcd away (etcd holds only the leader key) and run make start again"
            ) from None
        ETCD_AUTH_MARK.touch()
        return service

    def where(self, service: svc.Service) -> str:
        """Where a service keeps its data, for make start's output."""
        data = service.data_dir
        if service.tls is not None:  # etcd (in .run/etcd): where the certificates are that etcdctl needs
            return f"{data.relative_to(ROOT)}; TLS, client certificates only: {ETCD_TLS.relative_to(ROOT)}"
        if data.is_relative_to(ROOT):
            return str(data.relative_to(ROOT))
        return f"{data}, outside the checkout: {self.pg_why}" if self.pg_why else str(data)

    def check_running(self, name: str, pid: int) -> None:
        """A service of ours already running: fine when it has passwords; else say how to upgrade it."""
        locked = {
            "redis": lambda: (RUN / "redis" / svc.REDIS_CONF).exists(),
            "postgres": lambda: lockdown.PG_AUTH_MARK in _read(_pg_data_dir_now() / "pg_hba.conf"),
            "etcd": ETCD_AUTH_MARK.exists,
        }[name]
        if not locked():
            raise SystemExit(
                f"{name} (pid {pid}) was started by an older `make start`, without passwords. Run `make stop`, "
                f"then `make start`: it restarts {name} with a password and keeps its data."
            )
        if name == "etcd" and "--client-cert-auth" not in _cmdline(pid):
            raise SystemExit(
                f"etcd (pid {pid}) was started by an older `make start`: its ports are open to every local user, "
                f"who can renew the leader's lease with no password. Run `make stop`, then `make start`: it "
                f"restarts etcd with TLS and client certificates (.run/etcd-tls) and keeps its data."
            )
        {"redis": self.redis_login, "postgres": self.postgres_login, "etcd": self.etcd_users}[name]()

    def write_env(self) -> list[str]:
        """Write the remembered settings to .env where neither it nor the environment sets them."""
        current = read_env(str(ROOT / ".env"))
        written = []
        for key, value in self.env.items():
            if not current.get(key, "").strip():
                set_key(ROOT / ".env", key, value, quote_mode="never")
                written.append(f"{key}={value}")
        return written


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _etcd_client_files() -> tuple[Path, Path, Path]:
    """Where make start's etcd TLS files are (ETCD_CA, ETCD_CERT, ETCD_KEY); made when etcd starts."""
    tls = DevTls(ETCD_TLS)
    return (tls.ca, *tls.client_files(ETCD_CLIENT))


# --- where PostgreSQL's data lives ------------------------------------------------------------


def outside_dir() -> Path:
    """This checkout's directory under /var/lib/jobcluster (named by a hash of the checkout's path)."""
    return OUTSIDE / hashlib.sha256(str(ROOT.resolve()).encode()).hexdigest()[:16]


def pg_data_dir() -> tuple[Path, str]:
    """PostgreSQL's data directory, and why it is outside the checkout ("" when it is not)."""
    inside = RUN / "pg"
    why = _unreachable(inside) if os.geteuid() == 0 else ""
    if not why:
        return inside, ""
    if (inside / "PG_VERSION").exists():
        raise SystemExit(
            f"PostgreSQL's data is in {inside}, but {why}. Make the directories above it "
            f"enterable (chmod o+x), or move the data: `make stop; mkdir -p {outside_dir()}; "
            f"mv {inside} {outside_dir()}/pg`"
        )
    home = outside_dir()
    home.mkdir(mode=0o755, parents=True, exist_ok=True)
    (home / "checkout").write_text(f"{ROOT}\n")
    return home / "pg", why


def _pg_data_dir_now() -> Path:
    """Where the data of a running PostgreSQL of ours is (nothing is created)."""
    outside = outside_dir() / "pg"
    return outside if (outside / "PG_VERSION").exists() and not (RUN / "pg" / "PG_VERSION").exists() else RUN / "pg"


def _unreachable(data_dir: Path) -> str:
    """Why the postgres user could not run a data directory here ("" when it can)."""
    if len(str(data_dir / ".s.PGSQL.65535")) > SOCKET_PATH_MAX:
        return "its socket path would be longer than the system allows"
    data_dir.parent.mkdir(exist_ok=True)
    for d in [*reversed(data_dir.parent.parents), data_dir.parent]:
        if subprocess.run(["test", "-x", str(d)], user="postgres", group="postgres", extra_groups=[]).returncode:
            return f"the postgres user cannot enter {d}"
    return ""


def remove_outside_data() -> str | None:
    """`make clean`: delete this checkout's directory under /var/lib/jobcluster; says what it removed."""
    home = outside_dir()
    if _read(home / "checkout").strip() != str(ROOT):
        return None
    shutil.rmtree(home)
    return str(home)


# --- can the programs log in? ------------------------------------------------------------------


def redis_client(settings: Settings) -> redis.Redis:
    """A blocking client for make status and the login check, logged in as the programs are."""
    url = settings.redis_addr if "://" in settings.redis_addr else f"redis://{settings.redis_addr}"
    # No retries: redis-py would retry a refused login for about 3 s before saying so.
    return redis.Redis.from_url(
        url,
        username=settings.redis_user or None,
        socket_timeout=2,
        password=optional_secret("REDIS_PASSWORD_FILE", settings.redis_password_file),
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def login_problems(settings: Settings) -> dict[str, str]:
    """Log in to each service as the programs will: service -> what went wrong (nothing when all is well)."""
    from jobcluster.election import ETCD_ERRORS, read_leader
    from jobcluster.etcd_client import etcd_tls
    from jobcluster.store.migrations import CONNECT_TIMEOUT, login

    problems: dict[str, str] = {}
    try:
        redis_client(settings).ping()
    except redis.AuthenticationError as exc:
        problems["redis"] = f"refused the login ({exc}); check REDIS_USER and REDIS_PASSWORD_FILE"
    except (redis.RedisError, ConfigError) as exc:
        problems["redis"] = f"{exc}; check REDIS_ADDR"

    async def pg() -> None:
        password = optional_secret("DATABASE_PASSWORD_FILE", settings.database_password_file)
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await (await login(settings.database_url, password)).close()

    try:
        asyncio.run(pg())
    except Exception as exc:  # noqa: BLE001 - any failure is worth saying before the programs start
        if type(exc).__name__ != "InvalidCatalogNameError":  # the programs create the database
            text = str(exc) or type(exc).__name__
            problems["postgres"] = text if "DATABASE_" in text else f"{text}; check DATABASE_URL"
    if settings.etcd_endpoints:
        try:
            asyncio.run(
                read_leader(
                    settings.etcd_endpoints,
                    settings.election_namespace,
                    settings.election_key,
                    auth=etcd_auth(settings),
                    tls=etcd_tls(settings),
                )
            )
        except ETCD_ERRORS + (ConfigError,) as exc:
            problems["etcd"] = (
                f"{exc or type(exc).__name__}; check ETCD_ENDPOINTS, ETCD_USER, ETCD_PASSWORD_FILE, "
                f"ETCD_CA, ETCD_CERT and ETCD_KEY"
            )
    return problems
