"""gRPC channels to the configured servers; the UI is a client like any other."""

from __future__ import annotations

import grpc

from jobcluster.pb import scheduler_pb2_grpc as pb_grpc

CALL_TIMEOUT = 10.0


class NotConfigured(ValueError):
    """A server address that is not one of the configured servers (no open relay)."""


class Servers:
    def __init__(self, addresses: list[str]) -> None:
        if not addresses:
            raise ValueError("no servers configured")
        self.addresses = list(dict.fromkeys(addresses))
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._next = 0

    def check(self, address: str | None) -> str:
        """The address if it is configured; the first server when empty."""
        if not address:
            return self.addresses[0]
        if address not in self.addresses:
            raise NotConfigured(f"{address!r} is not one of the configured servers "
                                f"({', '.join(self.addresses)})")
        return address

    def stub(self, address: str | None = None) -> pb_grpc.JobServiceStub:
        address = self.check(address)
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        return pb_grpc.JobServiceStub(channel)

    async def first_answer(self, call):
        """Run ``call(stub)`` on each server in turn until one answers (UNAVAILABLE: next)."""
        last: grpc.aio.AioRpcError | None = None
        for _ in range(len(self.addresses)):
            address = self.addresses[self._next % len(self.addresses)]
            self._next += 1
            try:
                return await call(self.stub(address)), address
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                last = exc
        assert last is not None
        raise last

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
