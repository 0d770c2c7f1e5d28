"""A client that follows the Redis primary through Sentinel (``REDIS_SENTINELS``).

redis-py's :class:`~redis.asyncio.sentinel.SentinelConnectionPool` asks the
sentinels for the primary's address each time it opens a connection, and turns
a ``READONLY`` reply (the server we talk to was demoted) into a
ConnectionError. What we add:

- replies that also mean "this server is no longer the primary" end the
  connection and raise a ConnectionError as well, so the next try asks the
  sentinels again: ``UNBLOCKED`` (Redis ends a blocked BLMOVE when its server
  turns into a replica; redis-py 8.2 and later already turn it into "The
  previous master is now a slave"), ``MASTERDOWN`` and ``NOREPLICAS``;
- every sentinel is asked at once, each within :data:`SENTINEL_TIMEOUT` (our
  connections have no socket timeout, see :mod:`.base`, and one sentinel cut off
  by a partition must not hold up the answer), and the healthy answer with the
  highest ``config-epoch`` wins: a sentinel that has not yet heard of a failover
  names the demoted primary for seconds;
- the pool asks the sentinels again every :data:`RECHECK_INTERVAL` while it is
  used: a primary demoted alive (a manual failover, a healed partition) keeps
  taking writes for up to ~10 s, until the sentinels turn it into a replica,
  and redis-py only asks when it opens a connection;
- a connection open to any server but the primary the sentinels last named is
  closed when it is handed out or released, never used: redis-py's asyncio
  pool checks neither (see ``PrimaryPool._astray``);
- closing the client closes the sentinel connections too.

Every error here is a redis ConnectionError (MasterNotFoundError is one), so
the programs count a failover as a Redis outage (:mod:`jobcluster.errors`) and
retry through it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobcluster.settings import host_port

log = logging.getLogger("queue.sentinel")

#: Bound on one question to one sentinel (seconds).
SENTINEL_TIMEOUT = 1.0
#: How often a pool in use asks the sentinels whether the primary moved (seconds): the longest our writes
#: go on to a primary demoted alive after the sentinels' switch (lost writes), against one SENTINEL
#: MASTERS to each sentinel per interval.
RECHECK_INTERVAL = 0.5
#: Error codes that mean the server we are connected to is not (or no longer) a usable primary.
NOT_PRIMARY = frozenset({"READONLY", "UNBLOCKED", "MASTERDOWN", "NOREPLICAS"})


class PrimaryConnection(SentinelManagedConnection):
    """A connection to the server the sentinels name as primary; a reply saying it is not one ends it."""

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ResponseError as exc:
            code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
            if code not in NOT_PRIMARY:
                raise
            # Disconnect: the next use of this connection asks the sentinels for the primary again.
            await self.disconnect()
            raise RedisConnectionError(f"Redis {self.host}:{self.port} is not the primary any more: {exc}") from exc


# redis-py's sentinel module has no annotations: hence the type: ignore[no-untyped-call] below.
class PrimaryPool(SentinelConnectionPool):
    """redis-py's sentinel pool, plus: the sentinels are asked again every :data:`RECHECK_INTERVAL` while
    the pool is used (in a task of its own, so an unreachable sentinel delays no operation), and a
    connection open to any server but the primary they last named is closed when it is handed out or
    released, never used. Closing the pool closes the sentinel clients too."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._next_check = 0.0
        self._check: asyncio.Task[None] | None = None

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self.is_master and self.master_address is not None:
            self._check_soon()
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]

    async def get_master_address(self) -> tuple[str, int]:
        before = self.master_address
        # redis-py closes the connections idle when the address changed; _astray catches the others
        address: tuple[str, int] = await super().get_master_address()  # type: ignore[no-untyped-call]
        if before is not None and address != before:
            log.warning(
                "Redis primary %r is now %s:%s (was %s:%s), as the sentinels say; reconnecting",
                self.service_name,
                *address,
                *before,
            )
        return address

    async def ensure_connection(self, connection: Any) -> None:
        if self._astray(connection):
            await connection.disconnect()  # connect() then asks the sentinels
        await super().ensure_connection(connection)

    async def release(self, connection: Any) -> None:
        if self._astray(connection):
            connection.mark_for_reconnect()  # redis-py's release then closes it, under the pool's lock
        await super().release(connection)

    def _astray(self, connection: Any) -> bool:
        """Whether ``connection`` is open to a server other than the primary the sentinels last named.

        redis-py's asyncio pool asks this nowhere (its ``owns_connection`` is never called): when it
        learns of a new primary it closes only the connections idle at that moment, and puts one then in
        use back into the pool open, to be handed out again and again. Marking those in use for
        reconnection once the idle ones were closed (as we did) left a gap: one released in between
        stayed open, and writes went on to a primary demoted alive until the sentinels turned it into a
        replica, about 10 s later."""
        return bool(
            self.is_master
            and self.master_address is not None
            and connection.is_connected
            and (connection.host, connection.port) != self.master_address
        )

    def _check_soon(self) -> None:
        now = time.monotonic()
        if now < self._next_check or (self._check is not None and not self._check.done()):
            return
        self._next_check = now + RECHECK_INTERVAL
        self._check = asyncio.get_running_loop().create_task(self._recheck(), name="redis-primary-check")

    async def _recheck(self) -> None:
        try:
            await self.get_master_address()
        except RedisError as exc:
            # No sentinel answers: keep to the primary we know (it may well be fine); connecting asks again.
            log.debug("could not ask the sentinels for the primary: %s", exc)

    async def aclose(self) -> None:
        if self._check is not None:
            self._check.cancel()
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


class Sentinels(Sentinel):
    """The sentinels, each asked within :data:`SENTINEL_TIMEOUT`."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        """The primary's (host, port): every sentinel is asked at once, and of those that see a healthy
        primary, the one with the newest configuration (highest ``config-epoch``) is believed.
        MasterNotFoundError if none. Believing the first answer would follow a sentinel that has not yet
        heard of a failover the others made, and keep writing to the demoted primary for seconds."""
        answers = await asyncio.gather(*(self._ask(sentinel) for sentinel in self.sentinels))
        best: dict[str, Any] | None = None
        failures = []
        for sentinel, masters in zip(self.sentinels, answers):
            if isinstance(masters, BaseException):
                failures.append(f"{_where(sentinel)}: {masters or type(masters).__name__}")
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):
                if best is None or int(state.get("config-epoch", 0)) > int(best.get("config-epoch", 0)):
                    best = state
                continue
            failures.append(
                f"{_where(sentinel)}: "
                + (f"primary {state['ip']}:{state['port']} is down" if state else f"no primary named {service_name!r}")
            )
        if best is None:
            raise MasterNotFoundError(f"no sentinel names a primary for {service_name!r} ({'; '.join(failures)})")
        return str(best["ip"]), int(best["port"])

    @staticmethod
    async def _ask(sentinel: aioredis.Redis) -> dict[str, Any] | BaseException:
        try:
            async with asyncio.timeout(SENTINEL_TIMEOUT):
                return cast(dict[str, Any], await sentinel.sentinel_masters())
        except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
            return exc


def _where(client: aioredis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"{kw.get('host')}:{kw.get('port')}"


def connect_primary(
    sentinels: tuple[str, ...] | list[str], master: str, *, sentinel_password: str | None = None, **options: Any
) -> aioredis.Redis:
    """A client for the primary of ``master`` as the ``sentinels`` (``host:port`` each) name it.

    ``options`` are the Redis connection's (password, username, timeouts, decoding). The sentinels get
    the same connect timeout and keepalive, no socket timeout, and ``sentinel_password`` if given.
    """
    sentinel_options: dict[str, Any] = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel_options["socket_timeout"] = None  # bounded per question by SENTINEL_TIMEOUT instead
    if sentinel_password is not None:
        sentinel_options["password"] = sentinel_password
    manager = Sentinels([host_port(addr) for addr in sentinels], sentinel_kwargs=sentinel_options)
    client: aioredis.Redis = manager.master_for(
        master, connection_pool_class=PrimaryPool, connection_class=PrimaryConnection, **options
    )
    return client
