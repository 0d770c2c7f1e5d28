"""Leader terms in PostgreSQL: the record of the newest term fences a deposed leader's writes.

SQL in ``sql/fencing.sql``. The etcd election (:mod:`jobcluster.election`)
hands each term a token (its key's create revision); a leader records it with
:meth:`Fencing.take` and writes only inside :meth:`Fencing.fenced`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from jobcluster.sqlfile import load_queries

Q = load_queries("fencing.sql")


class Fenced(RuntimeError):
    """A leader write refused because a newer leader term has begun."""


class Fencing:
    """Take a term; run a leader's writes fenced by it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def take(self, token: int, holder: str) -> bool:
        """Record a new leader term; False when PostgreSQL already saw a newer one."""
        return await self.pool.fetchval(Q["take_fence"], token, holder) is not None

    @contextlib.asynccontextmanager
    async def fenced(self, token: int) -> AsyncIterator[asyncpg.Connection]:
        """A transaction that commits only if ``token`` is still the newest leader term.

        The fence row is share-locked, so a new leader's :meth:`take` waits for
        this transaction, and every later fenced transaction of the old term
        raises :class:`Fenced`.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(Q["check_fence"])
            if row["token"] != token:
                raise Fenced(f"leader term {token} is over: term {row['token']} ({row['holder']}) leads")
            yield conn
