"""The Redis queue protocol against a real Redis."""

import asyncio
import random

from jobcluster import keys
from jobcluster.queue import Queue


async def test_a_cancelled_queue_operation_always_ends_the_task(queue: Queue):
    """A worker must be stoppable at any moment.

    redis-py's socket_timeout goes through asyncio.wait_for, which on Python 3.11
    can swallow a cancellation (CPython gh-86296): the task went on looping and
    a worker's shutdown hung. Our client must not have that path.
    """

    async def busy() -> None:
        while True:
            await queue.jobs.promote_due()
            await queue.liveness.heartbeat("w-cancel", {"slots": 1}, ttl=5)
            await queue.jobs.dequeue("w-cancel", timeout=0.01)

    survivors = 0
    for _ in range(150):
        task = asyncio.create_task(busy())
        await asyncio.sleep(random.random() * 0.004)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        if not done or not task.cancelled():
            survivors += 1
            task.cancel()
    assert survivors == 0, f"{survivors} of 150 tasks kept running after cancel()"


async def test_operations_are_bounded_when_redis_does_not_answer(queue: Queue):
    """A Redis that accepts the connection but never answers gives a timeout, not a hang."""
    await queue.redis.lpush(keys.PENDING, "x")
    slow = Queue(queue.redis, op_timeout=0.2)
    # CLIENT PAUSE makes this Redis hold every command of every client for 2 s.
    await queue.redis.execute_command("CLIENT", "PAUSE", "2000", "ALL")
    try:
        from jobcluster.errors import REDIS_ERRORS

        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await slow.jobs.ack("w", "x")
        except REDIS_ERRORS as exc:
            assert "did not answer ack" in str(exc)
        else:
            # Redis answers once the pause ends: an answer means the call waited out the outage.
            raise AssertionError("ack answered while Redis was paused")
        print(f"timed out after {loop.time() - started:.2f}s (op_timeout 0.2s, pause 2s)")
    finally:
        await queue.redis.execute_command("CLIENT", "UNPAUSE")
