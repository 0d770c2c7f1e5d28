"""One failover pool of gRPC servers, used by the client (sync) and the web UI (grpc.aio).

The pool holds the configured addresses (deduplicated, in order) and takes
them round-robin. A call moves on to the next server only when the one asked
did not answer (:data:`FAILOVER_CODES`); any other error is that server's
answer and is raised as it is. When no server answers, :class:`ServerDown`
lists what each one said. An address that comes from outside (a form field,
a query string) must be a configured one, so the pool is never an open relay.

Channels come from a connector: by default real channels, one per address,
opened on first use with the token and TLS of a :class:`ChannelSecurity`
(:mod:`jobcluster.channels`); tests pass an in-process fake instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobcluster.channels import ChannelSecurity, open_aio_channel, open_channel
from jobcluster.channels import read_servers_file as read_servers_file  # re-exported: its old home
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc

T = TypeVar("T")
DEFAULT_SERVER = "localhost:50051"
CALL_TIMEOUT = 10.0
HEALTH_TIMEOUT = 2.0
#: Codes after which the same call is tried on the next server: the server did not answer.
FAILOVER_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def split_list(value: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def configured_servers(*choices: Sequence[str], servers_file: str = ".servers") -> list[str]:
    """The first non-empty list of ``choices`` (flag, setting...), else the servers file, else localhost."""
    for choice in choices:
        if choice:
            return list(choice)
    return read_servers_file(servers_file) or [DEFAULT_SERVER]


class NotConfigured(ValueError):
    """A server address that is not one of the configured servers (no open relay)."""


class ServerDown(Exception):
    """No server in the list answered; ``errors`` holds ``(address, error)`` for each one tried."""

    def __init__(self, errors: Sequence[tuple[str, grpc.RpcError]]) -> None:
        self.errors = list(errors)
        super().__init__(
            "no server answered:\n  "
            + "\n  ".join(f"{address}: {exc.code().name} {exc.details()}" for address, exc in self.errors)
        )

    @property
    def last(self) -> grpc.RpcError:
        """The error of the last server tried."""
        return self.errors[-1][1]


def fails_over(exc: grpc.RpcError) -> bool:
    """True when ``exc`` means the server did not answer, so the next one should be asked."""
    return exc.code() in FAILOVER_CODES


class ServerList:
    """The configured addresses, deduplicated, and whose turn it is."""

    def __init__(self, addresses: Iterable[str]) -> None:
        self.addresses = list(dict.fromkeys(addresses))
        if not self.addresses:
            raise ValueError("no servers configured")
        self._turn = 0

    def check(self, address: str | None) -> str:
        """The address if it is configured; the first server when empty; else :class:`NotConfigured`."""
        if not address:
            return self.addresses[0]
        if address not in self.addresses:
            raise NotConfigured(f"{address!r} is not one of the configured servers ({', '.join(self.addresses)})")
        return address

    def rotation(self) -> list[str]:
        """Every address once, starting with the one whose turn it is; the next call starts one later."""
        start = self._turn % len(self.addresses)
        self._turn += 1
        return self.addresses[start:] + self.addresses[:start]


# --- sync (the client) --------------------------------------------------------------------


class Connector(Protocol):
    """Where the sync pool gets a stub for an address."""

    def jobs(self, address: str) -> pb_grpc.JobServiceStub: ...

    def close(self) -> None: ...


class Channels:
    """Real gRPC channels, one per address, opened on first use with ``security``."""

    def __init__(self, security: ChannelSecurity = ChannelSecurity()) -> None:
        security.credentials()  # a setting that cannot be used fails here, not at the first call
        self.security = security
        self._open: dict[str, grpc.Channel] = {}

    def jobs(self, address: str) -> pb_grpc.JobServiceStub:
        if address not in self._open:
            self._open[address] = open_channel(address, self.security)
        return pb_grpc.JobServiceStub(self._open[address])

    def close(self) -> None:
        for channel in self._open.values():
            channel.close()
        self._open.clear()


class Pool(ServerList):
    """Blocking calls over a :class:`ServerList`, failing over to the next server."""

    def __init__(self, addresses: Iterable[str], connector: Connector | None = None) -> None:
        super().__init__(addresses)
        self._connector = connector or Channels()

    def stub(self, address: str | None = None) -> pb_grpc.JobServiceStub:
        """A stub for this configured address (the first one when empty)."""
        return self._connector.jobs(self.check(address))

    def call(self, fn: Callable[[pb_grpc.JobServiceStub], T]) -> tuple[T, str]:
        """Run ``fn(stub)`` on the next server; on a failover code try the others. Returns (result, server)."""
        errors: list[tuple[str, grpc.RpcError]] = []
        for address in self.rotation():
            try:
                return fn(self.stub(address)), address
            except grpc.RpcError as exc:
                if not fails_over(exc):
                    raise
                errors.append((address, exc))
        raise ServerDown(errors)

    def close(self) -> None:
        self._connector.close()


# --- async (the web UI) -------------------------------------------------------------------


class AioConnector(Protocol):
    """Where the async pool gets a stub, and a health answer, for an address."""

    def jobs(self, address: str) -> pb_grpc.JobServiceStub: ...

    async def health(self, address: str) -> str: ...

    async def close(self) -> None: ...


class AioChannels:
    """Real grpc.aio channels, one per address, opened on first use with ``security``."""

    def __init__(self, security: ChannelSecurity = ChannelSecurity()) -> None:
        security.credentials()  # a setting that cannot be used fails here, not at the first call
        self.security = security
        self._open: dict[str, grpc.aio.Channel] = {}

    def jobs(self, address: str) -> pb_grpc.JobServiceStub:
        if address not in self._open:
            self._open[address] = open_aio_channel(address, self.security)
        return pb_grpc.JobServiceStub(self._open[address])

    async def health(self, address: str) -> str:
        """The server's health status name (``SERVING``...), or ``UNREACHABLE (CODE)``."""
        # A channel of its own: a pooled one may still be backing off after the server came back.
        try:
            async with open_aio_channel(address, self.security) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT
                )
            name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            return name
        except grpc.aio.AioRpcError as exc:
            return f"UNREACHABLE ({exc.code().name})"

    async def close(self) -> None:
        for channel in self._open.values():
            await channel.close()
        self._open.clear()


class AioPool(ServerList):
    """Awaitable calls over a :class:`ServerList`, failing over to the next server."""

    def __init__(self, addresses: Iterable[str], connector: AioConnector | None = None) -> None:
        super().__init__(addresses)
        self._connector = connector or AioChannels()

    def stub(self, address: str | None = None) -> pb_grpc.JobServiceStub:
        """A stub for this configured address (the first one when empty)."""
        return self._connector.jobs(self.check(address))

    async def call(self, fn: Callable[[pb_grpc.JobServiceStub], Awaitable[T]]) -> tuple[T, str]:
        """Await ``fn(stub)`` on the next server; on a failover code try the others. Returns (result, server)."""
        errors: list[tuple[str, grpc.RpcError]] = []
        for address in self.rotation():
            try:
                return await fn(self.stub(address)), address
            except grpc.RpcError as exc:
                if not fails_over(exc):
                    raise
                errors.append((address, exc))
        raise ServerDown(errors)

    async def health(self, address: str) -> str:
        """This configured server's health status name, or ``UNREACHABLE (CODE)``."""
        return await self._connector.health(self.check(address))

    async def close(self) -> None:
        await self._connector.close()
