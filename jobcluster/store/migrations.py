"""The schema: create the database when it is missing, and apply ``sql/migrations`` in order."""

from __future__ import annotations

import logging
import zlib
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from jobcluster.credentials import LoginRefused
from jobcluster.sqlfile import migrations

log = logging.getLogger(__name__)

_MIGRATION_LOCK = zlib.crc32(b"jobcluster.migrate")
CONNECT_TIMEOUT = 5.0


async def ensure_database(dsn: str, password: str | None = None) -> None:
    """Create the database DATABASE_URL names if it does not exist (connecting to ``postgres`` to do it).

    ``password`` (from DATABASE_PASSWORD_FILE) wins over one in ``dsn``. A refused login
    raises :class:`LoginRefused`, which connecting retries like an outage.
    """
    try:
        conn = await login(dsn, password)
    except asyncpg.InvalidCatalogNameError:
        await _create_database(dsn, password)
    else:
        await conn.close()


async def login(dsn: str, password: str | None) -> asyncpg.Connection:
    """One connection; a refused user or password becomes :class:`LoginRefused` naming the settings."""
    try:
        return await asyncpg.connect(dsn, password=password, timeout=CONNECT_TIMEOUT)
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        raise refused(dsn, exc) from None


def refused(dsn: str, exc: Exception) -> LoginRefused:
    """The error for a login PostgreSQL refused, naming the settings to check."""
    parts = urlsplit(dsn)
    return LoginRefused(
        f"PostgreSQL at {parts.hostname}:{parts.port or 5432} refused user "
        f"{parts.username or '(none)'}: {exc}; check DATABASE_URL and DATABASE_PASSWORD_FILE"
    )


async def _create_database(dsn: str, password: str | None) -> None:
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    conn = await login(admin, password)
    try:
        await conn.execute(f'CREATE DATABASE "{name.replace(chr(34), "")}"')
        log.info("created database %s", name)
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):  # another process won the race
        pass
    finally:
        await conn.close()


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the migrations not yet applied; safe when several processes start at once."""
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migrations():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
    if applied:
        log.info("schema migrated: %s", ", ".join(applied))
    return applied
