"""Which servers the client talks to, and calls that move on to the next one when a server is down."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc

from jobcluster.pb import scheduler_pb2_grpc as pb_grpc

T = TypeVar("T")
DEFAULT_SERVER = "localhost:50051"
CALL_TIMEOUT = 10.0
#: Codes after which the same call is tried on the next server.
FAILOVER_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def split_list(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def read_servers_file(path: str = ".servers") -> list[str]:
    """``host:port`` a line, as ``make start`` writes it; [] when there is no such file."""
    try:
        with open(path, encoding="utf-8") as f:
            return [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    except OSError:
        return []


def resolve(flag_servers: str | None, flag_submit: str | None, flag_status: str | None,
            env: dict[str, str] | None = None, servers_file: str = ".servers") -> tuple[list[str], list[str]]:
    """``(submit servers, status servers)``: flags, then SUBMIT_SERVER/STATUS_SERVERS/SERVERS, then .servers."""
    env = dict(os.environ) if env is None else env
    servers = (split_list(flag_servers) or split_list(env.get("SERVERS"))
               or read_servers_file(servers_file) or [DEFAULT_SERVER])
    submit = split_list(flag_submit) or split_list(env.get("SUBMIT_SERVER")) or servers
    status = split_list(flag_status) or split_list(env.get("STATUS_SERVERS")) or servers
    return submit, status


class ServerDown(Exception):
    """No server in the list answered."""


class Pool:
    """Stubs for a list of servers, used round-robin, failing over on UNAVAILABLE/DEADLINE_EXCEEDED."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self.addresses = list(addresses)
        self._channels = {a: grpc.insecure_channel(a) for a in self.addresses}
        self._stubs = {a: pb_grpc.JobServiceStub(c) for a, c in self._channels.items()}
        self._turn = itertools.cycle(range(len(self.addresses)))

    def call(self, fn: Callable[[pb_grpc.JobServiceStub], T]) -> tuple[T, str]:
        """Run ``fn(stub)`` on the next server; on a failover code try the others. Returns (result, server)."""
        start = next(self._turn)
        errors = []
        for i in range(len(self.addresses)):
            addr = self.addresses[(start + i) % len(self.addresses)]
            try:
                return fn(self._stubs[addr]), addr
            except grpc.RpcError as exc:
                if exc.code() not in FAILOVER_CODES:
                    raise
                errors.append(f"{addr}: {exc.code().name} {exc.details()}")
        raise ServerDown("no server answered:\n  " + "\n  ".join(errors))

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
