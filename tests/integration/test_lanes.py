"""Lanes in real Redis and PostgreSQL: every way back into the queue lands in the job's own lane, and an
idle worker serving several lanes wakes at once."""

from __future__ import annotations

import asyncio
import time

from jobcluster import keys
from jobcluster.lifecycle.recover import recover_worker
from jobcluster.model import Serving, Status, now_ms, validate_job
from jobcluster.queue import Queue
from jobcluster.store import Store
from scheduler_server.healer import rebuild_waiting
from tests.helpers import wait_for

GPU = keys.lane("default", 0, ("gpu",))
SLOW = keys.lane("slow", 0)


def _spec(**fields):
    return validate_job(command="true", default_max_retries=3, default_timeout=60.0, max_command_bytes=1000, **fields)


async def _submitted(store: Store, q: Queue, **routing) -> tuple[str, str]:
    s = await store.jobs.insert(_spec(**routing), "test")
    await q.jobs.enqueue(s.job_id, lane=keys.lane_of(s))
    return s.job_id, keys.lane_of(s)


async def _blocked_in_blpop(queue: Queue) -> bool:
    return any(c.get("cmd") == "blpop" for c in await queue.redis.client_list())


async def test_delayed_ids_come_back_into_their_own_lanes(queue: Queue):
    await queue.jobs.enqueue("a", due_ms=now_ms() + 300, lane=GPU)
    await queue.jobs.delay("b", now_ms() - 1, lane=SLOW)
    await queue.jobs.delay("c", now_ms() - 1)
    assert await queue.jobs.promote_due() == 2  # a new Jobs object has not seen the lanes yet: it reads them
    assert (await queue.redis.lrange(SLOW, 0, -1), await queue.redis.lrange(keys.PENDING, 0, -1)) == (["b"], ["c"])
    await wait_for(queue.jobs.promote_due, timeout=5, what="the gpu job due and promoted")
    assert await queue.redis.lrange(GPU, 0, -1) == ["a"]
    assert await queue.redis.hlen(keys.DELAYED_LANES) == 0
    # a retry backing off, taken from its lane, goes back to it
    serving = Serving(queues=("default",), tags=frozenset({"gpu"}))
    assert await queue.jobs.dequeue("w", serving, timeout=0.1) == "a"
    await queue.jobs.retry_later("w", "a", 0, GPU)
    assert await queue.redis.hget(keys.DELAYED_LANES, "a") == GPU
    assert await queue.jobs.promote_due() == 1
    assert await queue.redis.lrange(GPU, 0, -1) == ["a"]


async def test_a_gone_workers_ids_go_back_to_the_front_of_their_own_lanes(store: Store, queue: Queue):
    gpu, _ = await _submitted(store, queue, constraints=["gpu"])
    slow, _ = await _submitted(store, queue, queue="slow")
    urgent, _ = await _submitted(store, queue, priority=9)
    later, _ = await _submitted(store, queue, priority=9)
    serving = Serving(queues=("default", "slow"), tags=frozenset({"gpu"}))
    taken = [await queue.jobs.dequeue("dead", serving, timeout=0.1) for _ in range(4)]
    assert taken == [urgent, later, gpu, slow]  # priority 9 first, then the gpu lane, then the next queue
    assert await store.jobs.claim(gpu, "dead") is not None  # one of them RUNNING, the others only taken
    assert await recover_worker(store, queue, "dead", "worker lost: test") == (4, 0)
    assert (await queue.redis.lrange(GPU, 0, -1), await queue.redis.lrange(SLOW, 0, -1)) == ([gpu], [slow])
    assert [await queue.jobs.dequeue("alive", serving, timeout=0.1) for _ in range(4)] == taken  # same order


async def test_after_flushall_each_waiting_job_is_rebuilt_into_its_lane(store: Store, queue: Queue):
    waiting = [
        await _submitted(store, queue, **r)
        for r in (dict(), dict(constraints=["gpu"]), dict(queue="slow"), dict(priority=9), dict(queue="slow"))
    ]
    late = await store.jobs.insert(_spec(run_at_ms=now_ms() + 60_000, queue="slow"), "test")
    await queue.jobs.enqueue(late.job_id, late.due_ms, keys.lane_of(late))
    assert late.status is Status.PENDING
    await queue.redis.flushall()
    assert await rebuild_waiting(store, queue) == 6
    for job_id, lane in waiting:
        assert job_id in await queue.redis.lrange(lane, 0, -1)
    assert await queue.redis.hget(keys.DELAYED_LANES, late.job_id) == SLOW
    assert await queue.redis.zscore(keys.DELAYED, late.job_id) is not None
    assert await rebuild_waiting(store, queue) == 0  # every lane is read: nothing is pushed twice


async def test_an_idle_worker_serving_several_lanes_wakes_at_once(queue: Queue):
    serving = Serving(queues=("default", "slow"))
    await queue.jobs.enqueue("first", lane=SLOW)  # the slow lane exists: the worker waits on the bells
    assert await queue.jobs.dequeue("w", serving, timeout=0.1) == "first"
    await queue.redis.delete(keys.bell("slow"), keys.bell("default"))  # no spare tokens
    take = asyncio.create_task(queue.jobs.dequeue("w", serving, timeout=5.0))
    await wait_for(lambda: _blocked_in_blpop(queue), timeout=5, what="the take blocked on the bells")
    pushed = time.monotonic()
    await queue.jobs.enqueue("second", lane=SLOW)
    assert await take == "second"
    assert time.monotonic() - pushed < 1.0, "the push did not wake the idle worker"
