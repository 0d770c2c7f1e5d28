"""The one retry loop (jobcluster.aio.retrying), with a fake operation: no I/O."""

import asyncio
import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from jobcluster.aio import Stopped, retrying
from tests.helpers import wait_for

log = logging.getLogger("test-retrying")


def _flaky(failures: int, exc: BaseException):
    calls = {"n": 0}

    async def op() -> str:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise exc
        return "done"

    return op, calls


async def test_waits_out_an_outage_and_says_when_it_began_and_ended(caplog):
    op, calls = _flaky(3, RedisConnectionError("refused"))
    with caplog.at_level(logging.INFO, logger="test-retrying"):
        assert await retrying(op, what="dequeue", log=log, first_delay=0.001) == "done"
    assert calls["n"] == 4
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # not one line per try
    assert messages[0].startswith("dequeue: Redis unavailable (refused); retrying")
    assert messages[1].startswith("dequeue: back after")


async def test_other_errors_are_not_retried():
    op, calls = _flaky(1, ValueError("a bug"))
    with pytest.raises(ValueError):
        await retrying(op, what="x", log=log, first_delay=0.001)
    assert calls["n"] == 1


async def test_only_the_given_errors_are_retried():
    op, _ = _flaky(1, RedisConnectionError("down"))
    with pytest.raises(RedisConnectionError):
        await retrying(op, what="x", log=log, errors=(OSError,), first_delay=0.001)


async def test_a_stop_ends_the_wait():
    stop = asyncio.Event()
    op, calls = _flaky(10**9, OSError("no route"))
    task = asyncio.create_task(retrying(op, what="connect", log=log, stop=stop, first_delay=60))
    await wait_for(lambda: calls["n"] == 1, timeout=2, what="the first try")  # then it waits 60 s
    stop.set()
    with pytest.raises(Stopped):
        async with asyncio.timeout(2):  # a stop ends the 60 s wait at once
            await task
    assert calls["n"] == 1
