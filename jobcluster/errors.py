"""Which exceptions mean "a backing service is not there right now", as opposed to a bug.

Everything that retries through an outage, or maps one to UNAVAILABLE, uses
these tuples; nothing else spells them out.
"""

from __future__ import annotations

import asyncio

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: Redis did not answer (our own operation bound raises RedisTimeoutError too).
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError)

#: PostgreSQL did not answer, or refused a connection for now.
POSTGRES_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    # a pooled connection left mid-operation by a restart ("cannot switch to state 12; another operation
    # is in progress"; seen by make chaos): not retried, it left a job RUNNING on a live worker for good
    asyncpg.InternalClientError,
)

#: Either backend is unavailable.
UNAVAILABLE: tuple[type[BaseException], ...] = REDIS_ERRORS + POSTGRES_ERRORS


def which(exc: BaseException) -> str:
    """The backend an unavailability error came from, for messages."""
    return "Redis" if isinstance(exc, REDIS_ERRORS) else "PostgreSQL"
