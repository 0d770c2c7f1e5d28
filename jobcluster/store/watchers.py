"""The jobs a server watches, and the connection that hears when they change (WatchJob by push).

SQL in ``sql/watchers.sql``; the trigger that sends ``NOTIFY job_events, '<job id>'`` for a
watched job is migration 0010 (it explains why only watched jobs notify).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

import asyncpg

from jobcluster.sqlfile import load_queries

Q = load_queries("watchers.sql")

#: The channel the trigger notifies on; the payload is the job id.
CHANNEL = "job_events"


class Listener:
    """One pooled connection that LISTENs on :data:`CHANNEL` until :meth:`close`, or until it breaks."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        conn: asyncpg.Connection,
        on_change: Callable[[str], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._conn = conn
        self._on_change = on_change
        self._on_lost = on_lost
        self._lost = False
        conn.add_termination_listener(self._terminated)

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_change(payload)

    def _terminated(self, _conn: object) -> None:
        self._lost = True
        self._on_lost()

    @property
    def alive(self) -> bool:
        """False once the connection broke (PostgreSQL restarted): notifications may have been missed."""
        return not self._lost and not self._conn.is_closed()

    async def close(self) -> None:
        """Stop listening and give the connection back (a broken one is replaced by the pool)."""
        try:
            if self.alive:
                await self._conn.remove_listener(CHANNEL, self._heard)  # UNLISTEN, even with a pool without reset
        finally:
            await self._pool.release(self._conn)


class Watchers:
    """Register watched jobs (so they notify) and listen for their changes."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def listen(self, on_change: Callable[[str], None], on_lost: Callable[[], None]) -> Listener:
        """Hold a connection that calls ``on_change(job_id)`` for each change of a watched job, and
        ``on_lost()`` if it breaks (changes may have been missed since)."""
        conn = await self.pool.acquire()
        try:
            listener = Listener(self.pool, conn, on_change, on_lost)
            await conn.add_listener(CHANNEL, listener._heard)
        except BaseException:
            await self.pool.release(conn)
            raise
        return listener

    async def register(self, job_ids: Iterable[str], server: str, for_seconds: float) -> None:
        """These jobs notify when they change, for ``for_seconds`` (or until :meth:`unregister`)."""
        await self.pool.execute(Q["register"], [uuid.UUID(i) for i in job_ids], server, for_seconds)

    async def unregister(self, job_ids: Iterable[str], server: str) -> None:
        await self.pool.execute(Q["unregister"], [uuid.UUID(i) for i in job_ids], server)

    async def unregister_server(self, server: str) -> None:
        """Forget every job ``server`` watched (its hub starts afresh)."""
        await self.pool.execute(Q["unregister_server"], server)
