"""Passwords for the Redis, PostgreSQL and etcd that ``make start`` (or a locked test) runs.

- **PostgreSQL**: TCP only from 127.0.0.1 with scram-sha-256, the socket (in the
  data directory) by peer for the superuser ``postgres`` only. The programs log
  in as their own role (no superuser, no CREATEDB/CREATEROLE) that owns the
  database, so even its password cannot ``COPY ... TO PROGRAM``. The role's
  password is set as a scram verifier computed here: the server, its logs and
  ``pg_stat_activity`` never see it.
- **Redis**: an ACL user that may not run dangerous commands (CONFIG, MODULE,
  DEBUG, FLUSHALL, KEYS, ...), written in the config file as a SHA-256 hash.
  Without a password (the default user) anyone on the machine may only read
  the queue lists (``redis-cli LRANGE dlq_tasks 0 -1``); that rule is applied
  once the append-only file has loaded, before Redis opens its TCP port.
- **etcd**: a ``root`` user (needed before ``auth enable``) and a user whose
  role may read and write only keys under ELECTION_NAMESPACE, set up through
  etcd's gRPC Auth API, so no password is on a command line. etcd 3.4 checks
  no password on leases, so both its ports also take only clients with a
  certificate of its private CA (``services.start_etcd``, ``tls.ensure_etcd_tls``).

Secret files are created mode 0600 in a directory of mode 0700.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from jobcluster.etcd_client import EtcdTls

PG_SUPERUSER = "postgres"
PG_AUTH_MARK = "# jobcluster: passwords on"


class LockError(RuntimeError):
    """A service could not be given its users and passwords; the message says what to do."""


def secret_file(path: Path, value: str | None = None) -> str:
    """The secret in ``path``: ``value`` when given, else what the file holds, else a new random one.

    A file written here has mode 0600 in a directory created with mode 0700.
    """
    if value is None and path.exists():
        return path.read_text().strip()
    if path.exists() and path.read_text().strip() == value:
        return value
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = value or secrets.token_urlsafe(32)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


# --- PostgreSQL ------------------------------------------------------------------------------


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a scram-sha-256 password (RFC 5802/7677), computed on our side."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}$"
        f"{b64(hashlib.sha256(client_key).digest()).decode()}:{b64(server_key).decode()}"
    )


def write_pg_auth(data_dir: Path, admins: Iterable[str]) -> None:
    """pg_hba.conf and pg_ident.conf: scram from 127.0.0.1, peer on the socket for ``admins`` as postgres."""
    (data_dir / "pg_hba.conf").write_text(
        f"{PG_AUTH_MARK} (written by jobcluster's make start; edits are overwritten)\n"
        "# the socket (in the data directory): only these OS users, as the superuser\n"
        f"local  all  {PG_SUPERUSER}  peer  map=jobcluster\n"
        "# TCP: 127.0.0.1 only, scram-sha-256 passwords\n"
        "host   all  all  127.0.0.1/32  scram-sha-256\n"
    )
    (data_dir / "pg_ident.conf").write_text(
        "".join(f"jobcluster  {user}  {PG_SUPERUSER}\n" for user in sorted(set(admins)))
    )


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _as_superuser(socket_dir: Path, port: int, database: str, timeout: float = 60.0) -> asyncpg.Connection:
    """The superuser's connection over the socket, waiting while PostgreSQL is still starting up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncpg.connect(
                host=str(socket_dir), port=port, user=PG_SUPERUSER, database=database, timeout=5
            )
        except (asyncpg.CannotConnectNowError, OSError):  # "starting up", or no socket yet
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def superuser_refused(port: int, database: str) -> str:
    return (
        f"DATABASE_URL logs in as {PG_SUPERUSER}, the superuser of the PostgreSQL make start runs, which "
        f"takes no password over TCP. Use the default role: "
        f"DATABASE_URL=postgresql://jobcluster@127.0.0.1:{port}/{database}"
    )


async def ensure_pg_role(socket_dir: Path, port: int, user: str, password: str, database: str) -> None:
    """The role ``user`` (login, no superuser) with ``password``, owning ``database`` and what is in it.

    Run as the superuser over the socket. Idempotent; on a database made by an older
    ``make start`` (everything owned by postgres) it hands the objects to ``user``.
    """
    if user == PG_SUPERUSER:
        raise LockError(superuser_refused(port, database))
    conn = await _as_superuser(socket_dir, port, "postgres")
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user)
        verb = "ALTER" if exists else "CREATE"
        # The verifier is base64, '$' and ':' only: safe inside a literal.
        await conn.execute(
            f"{verb} ROLE {quote_ident(user)} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
            f"NOREPLICATION NOBYPASSRLS PASSWORD '{scram_verifier(password)}'"
        )
        owner = await conn.fetchval("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", database)
        if owner is None:
            await conn.execute(f"CREATE DATABASE {quote_ident(database)} OWNER {quote_ident(user)}")
        elif owner != user:
            await conn.execute(f"ALTER DATABASE {quote_ident(database)} OWNER TO {quote_ident(user)}")
    finally:
        await conn.close()
    await _hand_over_objects(socket_dir, port, user, database)


# Tables, views, standalone sequences, functions and types in schema public, to the role.
_HAND_OVER = """
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT format('ALTER %s %s OWNER TO %I',
                         CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                        WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                         c.oid::regclass, $1) AS stmt
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
             AND c.relowner <> $1::regrole
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                             AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
           UNION ALL
           SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, $1)
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'public' AND p.proowner <> $1::regrole
           UNION ALL
           SELECT format('ALTER TYPE %s OWNER TO %I', t.oid::regtype, $1)
           FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd') AND t.typowner <> $1::regrole
  LOOP
    EXECUTE r.stmt;
  END LOOP;
END $$;
"""


async def _hand_over_objects(socket_dir: Path, port: int, user: str, database: str) -> None:
    conn = await _as_superuser(socket_dir, port, database)
    try:
        # DO takes no parameters: the role name goes in as a quoted literal.
        literal = "'" + user.replace("'", "''") + "'"
        await conn.execute(_HAND_OVER.replace("$1", literal))
    finally:
        await conn.close()


# --- Redis -----------------------------------------------------------------------------------


def _redis_rules(password: str) -> str:
    return f"on #{hashlib.sha256(password.encode()).hexdigest()} ~* &* +@all -@dangerous"


def redis_acl(user: str, password: str) -> list[str]:
    """Config lines: ``user`` on, all keys, no dangerous commands; any other user (default) off.

    For a Redis without an append-only file: Redis 7.0.15 replays that file as the default user, and
    drops every MULTI/EXEC block in it when that user is off or restricted (see :func:`redis_acl_loading`).
    """
    rules = _redis_rules(password)
    # "default" is the user of a password without a user name (requirepass style).
    return [f"user default {rules}"] if user == "default" else ["user default off", f"user {user} {rules}"]


#: What anyone on the machine may do without a password, once Redis has loaded its data: read the queue
#: lists the mission's ``redis-cli LRANGE dlq_tasks 0 -1`` reads (``%R~``: read-only key patterns), and
#: nothing else: no write, no other key, no KEYS, SCAN, CONFIG, EVAL, INFO, CLIENT or pub/sub.
REDIS_READER_RULES = (
    "reset",
    "on",
    "nopass",
    "resetchannels",
    "%R~pending_jobs",
    "%R~pending_jobs:*",
    "%R~dlq_tasks",
    "%R~processing_jobs",
    "%R~processing_jobs:*",
    "+lrange",
    "+llen",
    "+lindex",
    "+ping",
)


def redis_acl_loading(user: str, password: str) -> list[str]:
    """Config lines for a Redis that replays an append-only file: the default user unrestricted while it
    loads (Redis 7.0.15 replays the file as that user and drops every MULTI/EXEC block, so every
    multi-write script, when it is off or restricted: redis/redis#14541), and ``user`` as in
    :func:`redis_acl`. Such a Redis must listen only on a socket root alone can reach until
    :func:`redis_acl_loaded` has been applied (:func:`devtools.services.start_redis`)."""
    lines = ["user default on nopass ~* &* +@all"]
    return lines if user == "default" else [*lines, f"user {user} {_redis_rules(password)}"]


def redis_acl_loaded(user: str, password: str) -> tuple[str, ...]:
    """``ACL SETUSER default`` rules once the data is loaded: the password-less reader of the queue lists
    (:data:`REDIS_READER_RULES`), or the programs' rules when they log in as the default user (then
    nothing is readable without the password)."""
    if user == "default":
        return ("reset", *_redis_rules(password).split())
    return REDIS_READER_RULES


# --- etcd ------------------------------------------------------------------------------------


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with ``prefix`` (etcd's ``--prefix``)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def lock_etcd(
    endpoint: str, root_password: str, user: str, password: str, prefix: str, tls: EtcdTls | None = None
) -> bool:
    """Give etcd a root user and ``user`` (read/write under ``prefix`` only), then turn auth on.

    Idempotent: on an etcd with auth already on it logs in as root and makes sure the user,
    its password and its permission are right. True when auth was turned on just now.
    ``tls``: etcd speaks TLS and wants this client certificate.
    """
    return asyncio.run(_lock_etcd(endpoint, root_password, user, password, prefix.encode(), tls))


async def _lock_etcd(
    endpoint: str, root_password: str, user: str, password: str, prefix: bytes, tls: EtcdTls | None
) -> bool:
    from aetcd import rpc

    channel = rpc.secure_channel(endpoint, tls.credentials()) if tls else rpc.insecure_channel(endpoint)
    try:
        stub = rpc.AuthStub(channel)
        try:
            reply = await stub.Authenticate(rpc.AuthenticateRequest(name="root", password=root_password), timeout=5)
        except rpc.AioRpcError as exc:
            if exc.code() in (rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED):
                raise LockError(
                    f"etcd at {endpoint} did not answer{' over TLS' if tls else ''} ({exc.details()})"
                ) from None
            if "not enabled" not in (exc.details() or ""):
                raise LockError(
                    f"etcd at {endpoint} has auth on and refuses our root password ({exc.details()})"
                ) from None
            await _users(stub, (), root_password, user, password, prefix)
            await stub.AuthEnable(rpc.AuthEnableRequest(), timeout=5)
            return True
        await _users(stub, (("token", reply.token),), root_password, user, password, prefix)
        return False
    finally:
        await channel.close()


async def _users(
    stub: Any, md: tuple[tuple[str, str], ...], root_password: str, user: str, password: str, prefix: bytes
) -> None:
    """Create (or correct) root, ``user`` and its role; each step tolerates "already exists"."""
    from aetcd import rpc

    async def call(method: str, request: object) -> bool:
        """False when it was there already."""
        try:
            await getattr(stub, method)(request, metadata=md or None, timeout=5)
        except rpc.AioRpcError as exc:
            if "already" not in (exc.details() or ""):
                raise
            return False
        return True

    # Each step is a raft write (and each password a bcrypt hash): skip what is already right.
    perm = rpc.Permission(permType=rpc.Permission.READWRITE, key=prefix, range_end=prefix_end(prefix))
    if not md:  # auth is off: root may be left from an attempt that stopped before `auth enable`
        if not await call("UserAdd", rpc.AuthUserAddRequest(name="root", password=root_password)):
            await call("UserChangePassword", rpc.AuthUserChangePasswordRequest(name="root", password=root_password))
        await call("UserGrantRole", rpc.AuthUserGrantRoleRequest(user="root", role="root"))
    await call("RoleAdd", rpc.AuthRoleAddRequest(name=user))
    await call("RoleGrantPermission", rpc.AuthRoleGrantPermissionRequest(name=user, perm=perm))
    if not await call("UserAdd", rpc.AuthUserAddRequest(name=user, password=password)):
        await call("UserChangePassword", rpc.AuthUserChangePasswordRequest(name=user, password=password))
    await call("UserGrantRole", rpc.AuthUserGrantRoleRequest(user=user, role=user))
