"""The failover pool shared by the client and the web UI, with fake stubs in place of channels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from jobcluster.failover import (
    DEFAULT_SERVER,
    AioPool,
    NotConfigured,
    Pool,
    ServerDown,
    ServerList,
    configured_servers,
    read_servers_file,
    split_list,
)

A, B, C = "a:1", "b:2", "c:3"


class FakeRpcError(grpc.RpcError):
    """What a sync grpc call raises: an RpcError with code() and details()."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class Stubs:
    """A connector whose stub for an address is just the address; records what was opened and closed."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.closed = False

    def jobs(self, address: str) -> Any:
        self.opened.append(address)
        return address

    def close(self) -> None:
        self.closed = True


class AioStubs(Stubs):
    """The async connector: health() and an awaitable close()."""

    async def health(self, address: str) -> str:
        return f"SERVING {address}"

    async def close(self) -> None:  # type: ignore[override]
        self.closed = True


def answers(errors: dict[str, grpc.StatusCode], tried: list[str]) -> Any:
    """A call that fails with ``errors[address]`` on those servers and answers ``ok from <address>`` elsewhere."""

    def call(stub: str) -> str:
        tried.append(stub)
        if stub in errors:
            raise FakeRpcError(errors[stub], f"{stub} says {errors[stub].name.lower()}")
        return f"ok from {stub}"

    return call


def aio_answers(errors: dict[str, grpc.StatusCode], tried: list[str]) -> Any:
    async def call(stub: str) -> str:
        tried.append(stub)
        if stub in errors:
            raise grpc.aio.AioRpcError(
                errors[stub],
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details=f"{stub} says {errors[stub].name.lower()}",
            )
        return f"ok from {stub}"

    return call


# --- the address list -----------------------------------------------------------------------


def test_addresses_are_deduplicated_in_order() -> None:
    assert ServerList([B, A, B, C, A]).addresses == [B, A, C]


def test_an_empty_list_is_refused() -> None:
    with pytest.raises(ValueError, match="no servers configured"):
        ServerList([])


def test_check_lets_configured_addresses_through_and_defaults_to_the_first() -> None:
    servers = ServerList([A, B])
    assert servers.check(B) == B and servers.check("") == A and servers.check(None) == A


def test_check_refuses_an_address_that_is_not_configured() -> None:
    with pytest.raises(NotConfigured, match=r"'evil:1' is not one of the configured servers \(a:1, b:2\)"):
        ServerList([A, B]).check("evil:1")


def test_rotation_starts_one_server_later_each_time() -> None:
    servers = ServerList([A, B, C])
    assert [servers.rotation() for _ in range(4)] == [[A, B, C], [B, C, A], [C, A, B], [A, B, C]]


# --- where the list comes from --------------------------------------------------------------


def test_split_list() -> None:
    assert split_list(" a:1, ,b:2,") == [A, B] and split_list(None) == [] and split_list("") == []


def test_configured_servers_takes_the_first_choice_given(tmp_path: Path) -> None:
    servers_file = tmp_path / ".servers"
    servers_file.write_text("# make start\nc:3\n\n")
    assert configured_servers([A], [B], servers_file=str(servers_file)) == [A]
    assert configured_servers([], (B,), servers_file=str(servers_file)) == [B]
    assert configured_servers([], (), servers_file=str(servers_file)) == [C]
    assert configured_servers(servers_file=str(tmp_path / "missing")) == [DEFAULT_SERVER]
    assert read_servers_file(str(tmp_path / "missing")) == []


# --- the sync pool (client) -----------------------------------------------------------------


def test_calls_go_round_robin() -> None:
    pool = Pool([A, B], Stubs())
    tried: list[str] = []
    assert [pool.call(answers({}, tried)) for _ in range(3)] == [
        ("ok from a:1", A),
        ("ok from b:2", B),
        ("ok from a:1", A),
    ]


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_a_server_that_does_not_answer_is_skipped(code: grpc.StatusCode) -> None:
    pool = Pool([A, B, C], Stubs())
    tried: list[str] = []
    assert pool.call(answers({A: code}, tried)) == ("ok from b:2", B)
    assert tried == [A, B]


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INTERNAL,
    ],
)
def test_a_servers_answer_is_not_retried_elsewhere(code: grpc.StatusCode) -> None:
    pool = Pool([A, B], Stubs())
    tried: list[str] = []
    with pytest.raises(grpc.RpcError) as caught:
        pool.call(answers({A: code}, tried))
    assert caught.value.code() == code and tried == [A]


def test_no_server_answering_raises_server_down_naming_each() -> None:
    pool = Pool([A, B], Stubs())
    tried: list[str] = []
    down = {A: grpc.StatusCode.UNAVAILABLE, B: grpc.StatusCode.DEADLINE_EXCEEDED}
    with pytest.raises(ServerDown) as caught:
        pool.call(answers(down, tried))
    assert str(caught.value) == (
        "no server answered:\n  a:1: UNAVAILABLE a:1 says unavailable\n"
        "  b:2: DEADLINE_EXCEEDED b:2 says deadline_exceeded"
    )
    assert caught.value.last.code() == grpc.StatusCode.DEADLINE_EXCEEDED and tried == [A, B]


def test_stub_checks_the_address_and_close_closes_the_connector() -> None:
    stubs = Stubs()
    pool = Pool([A, B], stubs)
    assert pool.stub(B) == B and pool.stub() == A
    with pytest.raises(NotConfigured):
        pool.stub("evil:1")
    assert stubs.opened == [B, A]
    pool.close()
    assert stubs.closed


# --- the async pool (web UI) ----------------------------------------------------------------


async def test_async_calls_go_round_robin_and_skip_a_server_that_does_not_answer() -> None:
    pool = AioPool([A, B, C], AioStubs())
    tried: list[str] = []
    assert await pool.call(aio_answers({A: grpc.StatusCode.UNAVAILABLE}, tried)) == ("ok from b:2", B)
    assert await pool.call(aio_answers({}, tried)) == ("ok from b:2", B)
    assert tried == [A, B, B]


async def test_async_a_servers_answer_is_not_retried_elsewhere() -> None:
    pool = AioPool([A, B], AioStubs())
    tried: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pool.call(aio_answers({A: grpc.StatusCode.INVALID_ARGUMENT}, tried))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and tried == [A]


async def test_async_no_server_answering_raises_server_down() -> None:
    pool = AioPool([A, B], AioStubs())
    tried: list[str] = []
    with pytest.raises(ServerDown) as caught:
        await pool.call(aio_answers({A: grpc.StatusCode.UNAVAILABLE, B: grpc.StatusCode.UNAVAILABLE}, tried))
    assert [address for address, _ in caught.value.errors] == [A, B]


async def test_async_health_and_stub_check_the_address() -> None:
    stubs = AioStubs()
    pool = AioPool([A], stubs)
    assert await pool.health(A) == "SERVING a:1"
    with pytest.raises(NotConfigured):
        await pool.health("evil:1")
    with pytest.raises(NotConfigured):
        pool.stub("evil:1")
    await pool.close()
    assert stubs.closed
