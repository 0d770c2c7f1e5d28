"""The PostgreSQL record of every job (asyncpg), one module per concern.

:class:`Store` owns the pool and gives each concern its object:

=================  ==========================  ===============================================
attribute          module                      concern
=================  ==========================  ===============================================
``jobs``           :mod:`.jobs`                job lifecycle: submit, claim, settle, cancel
``job_queries``    :mod:`.job_queries`         reading jobs: one, a page, counts
``schedules``      :mod:`.schedules`           cron schedules and their ticks' jobs
``fencing``        :mod:`.fencing`             leader terms that fence a deposed leader
``liveness``       :mod:`.liveness`            running workers; taking back a gone one's jobs
``dead_letters``   :mod:`.dead_letters`        FAILED jobs: DLQ listing and retry
``reconcile``      :mod:`.reconcile`           jobs that should be waiting in Redis
``watchers``       :mod:`.watchers`            watched jobs notify (WatchJob by push)
``retention``      :mod:`.retention`           deleting finished jobs past JOB_RETENTION
(schema)           :mod:`.migrations`          CREATE DATABASE and migrations
=================  ==========================  ===============================================

Each module's SQL is the ``.sql`` file of the same name in ``jobcluster/sql``.
"""

from __future__ import annotations

import asyncpg

from jobcluster.credentials import optional_secret
from jobcluster.settings import Settings
from jobcluster.store.dead_letters import DeadLetters
from jobcluster.store.fencing import Fenced, Fencing
from jobcluster.store.job_queries import JobQueries
from jobcluster.store.jobs import Jobs
from jobcluster.store.liveness import Liveness
from jobcluster.store.migrations import CONNECT_TIMEOUT, ensure_database, migrate, refused
from jobcluster.store.reconcile import Reconcile
from jobcluster.store.retention import Retention
from jobcluster.store.schedules import Schedules
from jobcluster.store.stats import Stats
from jobcluster.store.watchers import Watchers

__all__ = ["IDLE_IN_TRANSACTION_TIMEOUT", "Fenced", "Store"]

COMMAND_TIMEOUT = 15.0
#: PostgreSQL ends a session of ours that sits this long (seconds) inside a transaction without a word: a
#: process cut off by a partition mid-transaction would otherwise hold its locks until TCP keepalive notices
#: (hours) - a deposed leader's share lock on the fence row blocked the next leader (found by make multihost).
IDLE_IN_TRANSACTION_TIMEOUT = 5.0


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing sent to PostgreSQL.

    asyncpg's default reset (also what ``reset=None`` means) sends ``SELECT pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL;`` on every release: a second round trip for each pooled statement.
    We keep no session state to undo: advisory locks are transaction-scoped (``pg_advisory_xact_lock``),
    no cursor outlives its transaction, nothing runs SET, prepared statements are asyncpg's own cache,
    and the watch hub UNLISTENs before it gives its connection back (store/watchers.py). An open
    transaction is still rolled back by the pool before this runs.
    """


class Store:
    """An asyncpg pool and the concerns that use it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.jobs = Jobs(pool)
        self.job_queries = JobQueries(pool)
        self.schedules = Schedules(pool)
        self.fencing = Fencing(pool)
        self.liveness = Liveness(pool)
        self.dead_letters = DeadLetters(pool)
        self.reconcile = Reconcile(pool)
        self.watchers = Watchers(pool)
        self.retention = Retention(pool)
        self.stats = Stats(pool)

    @classmethod
    async def connect(cls, settings: Settings, *, migrate: bool = True) -> Store:
        """Open the pool (creating the database if it does not exist) and migrate the schema.

        The password comes from DATABASE_PASSWORD_FILE (read on each call, so a corrected file is
        picked up by the next try) or from DATABASE_URL.
        """
        password = optional_secret("DATABASE_PASSWORD_FILE", settings.database_password_file)
        await ensure_database(settings.database_url, password)
        try:
            pool = await asyncpg.create_pool(
                settings.database_url,
                password=password,
                min_size=settings.pg_min_conns,
                max_size=settings.pg_max_conns,
                # asyncpg has no maximum connection age; the closest is closing idle ones.
                max_inactive_connection_lifetime=settings.pg_max_conn_lifetime,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                server_settings={"idle_in_transaction_session_timeout": str(int(IDLE_IN_TRANSACTION_TIMEOUT * 1000))},
                reset=keep_session,
            )
        except asyncpg.InvalidAuthorizationSpecificationError as exc:  # the password changed since
            raise refused(settings.database_url, exc) from None
        store = cls(pool)
        if migrate:
            await store.migrate()
        return store

    async def migrate(self) -> list[str]:
        """Apply the migrations not yet applied (see :mod:`.migrations`)."""
        return await migrate(self.pool)

    async def close(self) -> None:
        await self.pool.close()
