"""JOB_RETENTION in PostgreSQL: delete finished jobs and their attempts, one small batch a statement.

SQL in ``sql/retention.sql`` (what is deleted and what is kept is written there);
the leader runs it (``scheduler_server/retention.py``), each batch in its fenced
transaction.
"""

from __future__ import annotations

import asyncpg

from jobcluster.sqlfile import load_queries

Q = load_queries("retention.sql")


class Retention:
    """Deleting expired jobs."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def delete_expired(self, conn: asyncpg.Connection, older_than: float, limit: int) -> int:
        """Delete up to ``limit`` jobs that finished more than ``older_than`` seconds ago, on ``conn``
        (the leader's fenced transaction); how many went."""
        return int(await conn.fetchval(Q["delete_expired_jobs"], older_than, limit))
