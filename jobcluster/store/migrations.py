"""The schema: create the database when it is missing, and apply ``sql/migrations`` in order."""

from __future__ import annotations

import logging
import zlib
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from jobcluster.sqlfile import migrations

log = logging.getLogger(__name__)

_MIGRATION_LOCK = zlib.crc32(b"jobcluster.migrate")
CONNECT_TIMEOUT = 5.0


async def ensure_database(dsn: str) -> None:
    """Create the database DATABASE_URL names if it does not exist (connecting to ``postgres`` to do it)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    except asyncpg.InvalidCatalogNameError:
        await _create_database(dsn)
    else:
        await conn.close()


async def _create_database(dsn: str) -> None:
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin, timeout=CONNECT_TIMEOUT)
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
