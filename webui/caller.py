"""The server pool as one request's user sees it: calls carry that user's token when they logged in with one.

A person who logged in with a server token (or an API call with
``Authorization: Bearer``) acts with that token's role: every gRPC call made
for them carries ``authorization: Bearer <their token>`` as call metadata. A
person who logged in with the password (or any request to a UI without a
login) uses the pool as it is, that is with the UI's own ``AUTH_TOKEN``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from jobcluster.failover import AioPool
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc

T = TypeVar("T")
#: Every RPC of JobService, from the contract itself.
JOB_SERVICE_METHODS = tuple(pb.DESCRIPTOR.services_by_name["JobService"].methods_by_name)


class TokenStub:
    """A JobService stub whose every method adds ``authorization: Bearer <token>`` to the call."""

    def __init__(self, stub: pb_grpc.JobServiceStub, token: str) -> None:
        metadata = (("authorization", f"Bearer {token}"),)
        for name in JOB_SERVICE_METHODS:
            method = getattr(stub, name, None)
            if method is not None:
                setattr(self, name, functools.partial(method, metadata=metadata))


def as_caller(stub: pb_grpc.JobServiceStub, token: str | None) -> pb_grpc.JobServiceStub:
    """``stub`` itself without a token; with one, a stub that sends it on every call."""
    if token is None:
        return stub
    # TokenStub has the stub's methods (bound with the metadata); the stub's type is what callers expect.
    return cast(pb_grpc.JobServiceStub, TokenStub(stub, token))


class CallerPool:
    """:class:`AioPool`'s calls for one caller; the failover and the turn are the shared pool's."""

    def __init__(self, pool: AioPool, token: str | None) -> None:
        self._pool = pool
        self.token = token

    @property
    def addresses(self) -> list[str]:
        return self._pool.addresses

    def check(self, address: str | None) -> str:
        return self._pool.check(address)

    def stub(self, address: str | None = None) -> pb_grpc.JobServiceStub:
        """A stub for this configured address (the first one when empty), calling as this caller."""
        return as_caller(self._pool.stub(address), self.token)

    async def call(self, fn: Callable[[pb_grpc.JobServiceStub], Awaitable[T]]) -> tuple[T, str]:
        """``fn(stub)`` on the next server, failing over as the pool does, calling as this caller."""
        return await self._pool.call(lambda stub: fn(as_caller(stub, self.token)))

    async def health(self, address: str) -> str:
        return await self._pool.health(address)
