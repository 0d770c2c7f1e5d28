"""The Redis side: job ids only (PostgreSQL is the record), one module per concern.

:class:`Queue` holds one client and gives each concern its object:

================  =====================  ==================================================
attribute         module                 concern
================  =====================  ==================================================
``jobs``          :mod:`.jobs`           the queue protocol: enqueue, dequeue, ack, back off,
                                         requeue, dead-letter, promote delayed ids
``liveness``      :mod:`.liveness`       heartbeats of workers and servers; a gone worker's
                                         processing list
``live_output``   :mod:`.live_output`    running jobs' output so far (WatchJob)
``dead_letters``  :mod:`.dead_letters`   ``dlq_tasks``: list, retry, purge
``reconcile``     :mod:`.reconcile`      ids Redis holds; putting back lost ones
================  =====================  ==================================================

Key names live in :mod:`jobcluster.keys`; every operation is bounded by
``OP_TIMEOUT`` (see :mod:`.base` for why not redis-py's socket timeout).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from jobcluster.credentials import optional_secret
from jobcluster.queue.base import OP_TIMEOUT
from jobcluster.queue.dead_letters import DeadLetters
from jobcluster.queue.jobs import Jobs
from jobcluster.queue.live_output import LiveOutput
from jobcluster.queue.liveness import Liveness
from jobcluster.queue.reconcile import Reconcile
from jobcluster.queue.sentinel import connect_primary
from jobcluster.settings import Settings

__all__ = ["OP_TIMEOUT", "Queue", "connect", "connect_from"]


#: Options of every Redis client. No socket_timeout: see OP_TIMEOUT; every operation is bounded by Queue.
_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 3.0,
    "socket_timeout": None,
    "socket_keepalive": True,
    "decode_responses": True,
}


def connect(addr: str, **kwargs: Any) -> aioredis.Redis:
    """A client for REDIS_ADDR (``host:port`` or a ``redis://`` URL), with bounded timeouts."""
    url = addr if "://" in addr else f"redis://{addr}"
    client: aioredis.Redis = aioredis.Redis.from_url(url, **{**_OPTIONS, **kwargs})
    return client


def connect_from(settings: Settings, **kwargs: Any) -> aioredis.Redis:
    """A client for REDIS_ADDR, or for the primary the sentinels in REDIS_SENTINELS name, logged in as
    REDIS_USER with the password in REDIS_PASSWORD_FILE.

    The files are read here, once. Without REDIS_USER the password is the default user's
    (``requirepass``); a password in a ``redis://`` REDIS_ADDR works too. Redis refusing the
    login raises redis-py's AuthenticationError, a ConnectionError, so it is retried and logged
    like an outage. With REDIS_SENTINELS, REDIS_ADDR is not used: each new connection goes to the
    primary of REDIS_SENTINEL_MASTER, and a failover is an outage of a few seconds (:mod:`.sentinel`).
    """
    password = optional_secret("REDIS_PASSWORD_FILE", settings.redis_password_file)
    if password is not None:
        kwargs.setdefault("password", password)
    if settings.redis_user:
        kwargs.setdefault("username", settings.redis_user)
    if settings.redis_sentinels:
        return connect_primary(
            settings.redis_sentinels,
            settings.redis_sentinel_master,
            sentinel_password=optional_secret("REDIS_SENTINEL_PASSWORD_FILE", settings.redis_sentinel_password_file),
            **{**_OPTIONS, **kwargs},
        )
    return connect(settings.redis_addr, **kwargs)


class Queue:
    """One Redis client and the concerns that use it."""

    def __init__(self, redis: aioredis.Redis, op_timeout: float = OP_TIMEOUT) -> None:
        self.redis = redis
        self.jobs = Jobs(redis, op_timeout)
        self.liveness = Liveness(redis, op_timeout)
        self.live_output = LiveOutput(redis, op_timeout)
        self.dead_letters = DeadLetters(redis, op_timeout)
        self.reconcile = Reconcile(redis, op_timeout)
