"""Everything Redis holds is rebuilt from PostgreSQL: pending, delayed and dlq_tasks after FLUSHALL
(a purge stays a purge), and a server's own stored-but-unpushed submissions without a leader."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest
import redis

from devtools import services as svc
from devtools.services import free_port
from jobcluster import keys
from jobcluster.lifecycle.policy import Unpushed
from jobcluster.model import now_ms, validate_job
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from jobcluster.queue import Queue, reconcile
from jobcluster.store import Store
from scheduler_server import healer
from scheduler_server.healer import reconcile_dead_letters
from scheduler_server.server import SchedulerServer
from tests.helpers import wait_for


async def _dead(stub, make_worker, command: str) -> str:
    job_id = (await stub.SubmitJob(pb.Job(command=command, max_retries=0))).job_id
    await make_worker(f"w-dead-{job_id[:8]}").run()
    assert (await stub.GetJobStatus(pb.JobId(id=job_id))).status == "FAILED"
    return job_id


async def _lists(queue: Queue) -> tuple[list[str], list[str], list[str]]:
    r = queue.redis
    return (await r.lrange(keys.PENDING, 0, -1), await r.zrange(keys.DELAYED, 0, -1), await r.lrange(keys.DLQ, 0, -1))


async def test_after_flushall_pending_delayed_and_dlq_are_whole_within_reconcile_after(
    server, stub, store: Store, queue: Queue, make_worker, settings, tmp_path, caplog
):
    await store.pool.execute("DELETE FROM dead_letter_checks")
    dead = [await _dead(stub, make_worker, f"exit {n}") for n in (3, 4)]
    purged = await _dead(stub, make_worker, "exit 5")
    await stub.PurgeDeadLetters(pb.DeadLettersRequest(ids=[purged]))
    # A running job: its worker settles by PostgreSQL first, so its processing list need not come back.
    go = tmp_path / "go"
    running = (
        await stub.SubmitJob(pb.Job(command=f"while [ ! -e {go} ]; do sleep 0.05; done; echo ran", max_retries=0))
    ).job_id
    worker = make_worker("w-busy", burst=False, worker_concurrency=1)
    working = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: _status(stub, running, "RUNNING"), what="RUNNING")
        waiting = (await stub.SubmitJob(pb.Job(command="echo waited"))).job_id  # the one slot is busy
        delayed = (await stub.SubmitJob(pb.Job(command="true", run_at_ms=now_ms() + 3_600_000))).job_id
        await wait_for(lambda: queue.reconcile.kept_data(), what="the leader's first reconciliation")
        before = await _lists(queue)
        assert before == ([waiting], [delayed], dead[::-1])

        await queue.redis.flushall()
        flushed = time.monotonic()
        await wait_for(lambda: _whole(queue, before), timeout=10, interval=0.02, what="lists rebuilt")
        # The pass after the loss is due within RECONCILE_AFTER / 2 and looks at every job; generous on
        # a loaded machine, yet it fails when the loss is not noticed (the waiting job's age would count).
        assert time.monotonic() - flushed < settings.reconcile_after * 3
        assert "Redis lost its data; 2 waiting job(s) were pushed again" in caplog.text  # the loss was seen
        assert purged not in await queue.redis.lrange(keys.DLQ, 0, -1)
        go.touch()
        await wait_for(lambda: _status(stub, waiting, "SUCCEEDED"), timeout=20, what="waiting job ran")
        job = await stub.GetJobStatus(pb.JobId(id=running))
        assert (job.status, job.output, job.attempts) == ("SUCCEEDED", "ran\n", 1)
    finally:
        worker.stop()
        await working


def _spec(**fields):
    return validate_job(default_max_retries=0, default_timeout=60.0, max_command_bytes=1000, **fields)


async def _status(stub, job_id: str, status: str) -> bool:
    return (await stub.GetJobStatus(pb.JobId(id=job_id))).status == status


async def _whole(queue: Queue, before: tuple[list[str], list[str], list[str]]) -> bool:
    pending, delayed, dlq = await _lists(queue)
    return (sorted(pending), sorted(delayed), dlq) == (sorted(before[0]), sorted(before[1]), before[2])


@pytest.fixture
async def leaderless_stub(settings, store: Store, queue: Queue) -> AsyncIterator[pb_grpc.JobServiceStub]:
    """A server without etcd: no leader reconciles behind the test's back."""
    srv = SchedulerServer(replace(settings, server_port=free_port(), etcd_endpoints=()))
    await srv.start()
    try:
        await wait_for(lambda: srv.store is not None, what="server ready")
        async with grpc.aio.insecure_channel(srv.address) as channel:
            yield pb_grpc.JobServiceStub(channel)
    finally:
        await srv.stop()


async def test_a_pass_that_found_redis_kept_pushes_nothing_once_redis_lost_its_data(
    leaderless_stub, store: Store, queue: Queue, make_worker
):
    """FLUSHALL while a leader's pass that had found the mark was under way (CI once): its pushes, meant for
    ids lost one by one, put the newest dead letter back at the head, and the rebuild of the next pass put
    the older one above it, out of the order they died (and the waiting jobs came back as "missing", not
    as a loss). Such a pass now stops, its scripts refusing once the mark is gone; the next one rebuilds."""
    stub = leaderless_stub
    await store.pool.execute("DELETE FROM dead_letter_checks")
    assert await reconcile_dead_letters(store, queue, 0.0, kept=False) == 0  # starts counting; the mark set
    older = await _dead(stub, make_worker, "exit 3")
    await store.pool.execute("UPDATE jobs SET updated_at = updated_at - interval '1 minute' WHERE id = $1", older)
    assert await reconcile_dead_letters(store, queue, 0.0, kept=True) == 0  # its watermark passes the older
    newer = await _dead(stub, make_worker, "exit 4")
    waiting = (await stub.SubmitJob(pb.Job(command="true"))).job_id
    await queue.redis.flushall()  # just after the passes below found the mark
    with pytest.raises(reconcile.DataLost):
        await healer.WaitingCheck().run(store, queue, 0.0)
    with pytest.raises(reconcile.DataLost):
        await reconcile_dead_letters(store, queue, 0.0, kept=True)
    assert await _lists(queue) == ([], [], [])
    assert not await queue.reconcile.kept_data()  # the next pass: as after any loss
    assert await healer.rebuild_waiting(store, queue) == 1
    assert await reconcile_dead_letters(store, queue, 0.0, kept=False) == 2
    assert await _lists(queue) == ([waiting], [], [newer, older])


async def test_a_purge_is_not_undone(leaderless_stub, store: Store, queue: Queue, make_worker):
    """Reconciliation directly: dlq_tasks lost, then rebuilt without the purged id; a later dead letter
    missing from dlq_tasks (a worker died before its push) comes back on an ordinary pass."""
    stub = leaderless_stub
    await store.pool.execute("DELETE FROM dead_letter_checks")
    kept, purged = [await _dead(stub, make_worker, "exit 7") for _ in range(2)]
    await stub.PurgeDeadLetters(pb.DeadLettersRequest(ids=[purged]))
    assert await reconcile_dead_letters(store, queue, 0.0, kept=False) == 0  # first pass: starts counting
    await queue.redis.delete(keys.DLQ, keys.RECONCILED)
    assert await reconcile_dead_letters(store, queue, 0.0, kept=await queue.reconcile.kept_data()) == 1
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == [kept]
    late = await _dead(stub, make_worker, "exit 8")
    await queue.redis.lrem(keys.DLQ, 0, late)  # as if its worker died between FAILED and the push
    assert await reconcile_dead_letters(store, queue, 0.0, kept=True) == 1
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == [late, kept]
    await stub.PurgeDeadLetters(pb.DeadLettersRequest(all=True))
    await queue.redis.delete(keys.RECONCILED)
    assert await reconcile_dead_letters(store, queue, 0.0, kept=False) == 0
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == []


async def test_a_server_without_a_leader_pushes_its_own_jobs_that_redis_lacks(settings, store: Store, queue: Queue):
    """Its last run died between INSERT and push: at start, with ETCD_ENDPOINTS empty, it pushes them."""
    port = free_port()
    address = f"{settings.server_host}:{port}"
    mine = await store.jobs.insert(_spec(command="true"), address)
    later = await store.jobs.insert(_spec(command="true", run_at_ms=now_ms() + 3_600_000), address)
    other = await store.jobs.insert(_spec(command="true"), "127.0.0.1:1")
    srv = SchedulerServer(replace(settings, server_port=port, etcd_endpoints=()))
    await srv.start()
    try:
        await wait_for(lambda: _lists_are(queue, [mine.job_id], [later.job_id]), what="own jobs pushed")
        assert other.job_id not in await queue.redis.lrange(keys.PENDING, 0, -1)  # a leader's job
    finally:
        await srv.stop()


async def _lists_are(queue: Queue, pending: list[str], delayed: list[str]) -> bool:
    got = await _lists(queue)
    return (got[0], got[1]) == (pending, delayed)


async def test_unpushed_ids_are_pushed_once_redis_answers(store: Store, queue: Queue, settings):
    """The server remembers ids whose push failed; a round pushes those still waiting, once each."""
    a = await store.jobs.insert(_spec(command="true"), "x")
    b = await store.jobs.insert(_spec(command="true"), "x")
    await queue.jobs.enqueue(b.job_id)  # a retried submit on another server queued it meanwhile
    unpushed = Unpushed()
    unpushed.remember([a.job_id, b.job_id])
    assert await unpushed.heal(store, queue, "nobody:0") == 1
    assert unpushed.waiting == 0
    assert sorted(await queue.redis.lrange(keys.PENDING, 0, -1)) == sorted([a.job_id, b.job_id])


def test_make_starts_redis_keeps_its_data_through_kill_9(tmp_path):
    """persist=True (make start): AOF with appendfsync everysec, data in its directory, even a config
    left by an older start is rewritten; kill -9 and a restart lose nothing written a moment before."""
    data = tmp_path / "redis"
    data.mkdir(mode=0o755)
    (data / svc.REDIS_CONF).write_text("appendonly no\n")  # an older .run
    port = free_port()
    first = svc.start_redis(data, port, tmp_path / "redis.log", persist=True)
    try:
        r = redis.Redis(port=port, decode_responses=True)
        assert r.config_get("appendonly") == {"appendonly": "yes"}
        assert r.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert data.stat().st_mode & 0o777 == 0o700  # its files hold job ids
        r.lpush(keys.DLQ, "kept")
        r.close()
    finally:
        first.kill()
    again = svc.start_redis(data, port, tmp_path / "redis.log", persist=True)
    try:
        r = redis.Redis(port=port, decode_responses=True)
        assert r.lrange(keys.DLQ, 0, -1) == ["kept"]
        r.close()
    finally:
        again.stop()


async def test_a_rebuild_does_not_repeat_a_dead_letter_a_worker_pushed_meanwhile(queue: Queue):
    await queue.redis.lpush(keys.DLQ, "a")
    seen = await queue.reconcile.dead_letters_read()
    assert seen is not None and (seen.held, seen.length) == ({"a"}, 1)
    await queue.redis.lpush(keys.DLQ, "b")  # a worker dead-letters b after the rebuild read the list
    assert await queue.reconcile.restore_dead_since(["b", "c"], seen) == 1
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == ["c", "b", "a"]


async def test_a_rebuild_pushes_nothing_once_a_retry_has_moved_the_list(queue: Queue):
    """A retry pass rotates dlq_tasks (oldest out at the tail, kept ones back at the head): a read taken
    before cannot say what is missing. Before dlq_moves, the rebuild pushed ids still in the list."""
    await queue.redis.lpush(keys.DLQ, "a", "b", "c")
    seen = await queue.reconcile.dead_letters_read()
    assert seen is not None and seen.held == {"a", "b", "c"}
    assert await queue.dead_letters.take_oldest(2, away=["a"]) == 1  # a leaves, b goes back at the head
    assert await queue.reconcile.restore_dead_since(["b", "x"], seen) is None
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == ["b", "c"]


async def test_a_rebuild_does_not_repeat_a_waiting_id_pushed_meanwhile(queue: Queue):
    gpu = keys.lane("default", 0, ("gpu",))
    await queue.jobs.enqueue("x")
    await queue.jobs.enqueue("g", lane=gpu)
    await queue.redis.zadd(keys.DELAYED, {"d": 1})
    held, known = await queue.reconcile.held_and_lengths()
    assert (held, known) == ({"x", "g", "d"}, {keys.PENDING: 1, gpu: 1})
    await queue.jobs.enqueue("y")  # a submit pushed y after the rebuild read Redis
    await queue.jobs.enqueue("h", lane=gpu)
    later = now_ms() + 3_600_000
    pushed, known = await queue.reconcile.restore_since(
        [
            ("y", 0, keys.PENDING),
            ("d", 0, keys.PENDING),
            ("z", 0, keys.PENDING),
            ("w", later, gpu),
            ("h", 0, gpu),
            ("i", 0, gpu),
        ],
        known,
    )
    assert (pushed, known) == (3, {keys.PENDING: 2, gpu: 2})
    assert await queue.redis.lrange(keys.PENDING, 0, -1) == ["z", "y", "x"]
    assert await queue.redis.lrange(gpu, 0, -1) == ["i", "h", "g"]
    assert await queue.redis.zrange(keys.DELAYED, 0, -1) == ["d", "w"]
    assert await queue.redis.hget(keys.DELAYED_LANES, "w") == gpu  # promoted into its own lane


async def test_many_unpushed_ids_are_pushed_once_each(store: Store, queue: Queue):
    """Past 20 ids the server reads what Redis holds once instead of one LPOS per id."""
    ids = [(await store.jobs.insert(_spec(command="true"), "x")).job_id for _ in range(30)]
    await queue.redis.lpush(keys.PENDING, *ids[:5])
    unpushed = Unpushed()
    unpushed.remember(ids)
    assert await unpushed.heal(store, queue, "nobody:0") == 25
    assert sorted(await queue.redis.lrange(keys.PENDING, 0, -1)) == sorted(ids)


async def test_reconciliation_finds_a_lost_id_anywhere_in_a_long_queue_and_reads_redis_only_for_new_jobs(
    store: Store, queue: Queue, monkeypatch
):
    """The leader's pass (Redis kept its data) cycles through every waiting job a page at a time, and reads
    Redis only when a page has a job it has not seen there since that job last changed."""
    monkeypatch.setattr(healer, "WAITING_PAGE", 10)
    monkeypatch.setattr(reconcile, "HELD_READ", 3)  # every list is read in pages of 3 ids
    ids = [(await store.jobs.insert(_spec(command="true"), "x")).job_id for _ in range(35)]
    await queue.redis.lpush(keys.PENDING, *ids)
    await queue.redis.lrem(keys.PENDING, 0, ids[-1])  # lost: the newest job, on the last page
    await queue.reconcile.mark_kept()  # Redis kept its data (the pass's pushes need the mark)
    check = healer.WaitingCheck()
    pushed = [await check.run(store, queue, 0.0) for _ in range(4)]  # pages of 10, 10, 10, 5
    assert pushed == [0, 0, 0, 1]
    assert sorted(await queue.redis.lrange(keys.PENDING, 0, -1)) == sorted(ids)
    assert check.redis_reads == 4
    assert [await check.run(store, queue, 0.0) for _ in range(8)] == [0] * 8
    assert check.redis_reads == 4  # a backlog that stands still: PostgreSQL pages only, no Redis read
    new = (await store.jobs.insert(_spec(command="true"), "x")).job_id  # never pushed (a server died)
    assert sum([await check.run(store, queue, 0.0) for _ in range(4)]) == 1
    assert check.redis_reads == 5  # only the page holding the new job read Redis
    assert new in await queue.redis.lrange(keys.PENDING, 0, -1)
    held, known = await queue.reconcile.held_and_lengths()
    assert held == {*ids, new} and known == {keys.PENDING: 36}


async def test_dead_letters_lost_after_reconciliation_passed_them_come_back_in_order(
    leaderless_stub, store: Store, queue: Queue, make_worker
):
    """The append-only-file bug's partial loss: dead letters taken out of dlq_tasks (the oldest, and some
    in the middle) after the watermark of the ordinary pass went past them, while Redis kept its other
    keys. The ordinary pass never looks back; the sweep puts each back at its place in the order of
    deaths, reads dlq_tasks only while a page holds one not seen there, and after ``forget_every`` looks
    at every one again."""
    stub = leaderless_stub
    ids = [(await stub.SubmitJob(pb.Job(command=f"exit {n % 5 + 1}", max_retries=0))).job_id for n in range(12)]
    await make_worker("w-dead", worker_concurrency=1).run()  # one at a time: each dies after the last
    whole = await queue.redis.lrange(keys.DLQ, 0, -1)
    assert sorted(whole) == sorted(ids)
    assert await reconcile_dead_letters(store, queue, 0.0, kept=True) == 0  # the watermark passes them all
    lost = [whole[-1], whole[-2], whole[3], whole[4], whole[7]]  # the two oldest, and three newer ones
    for job_id in lost:
        await queue.redis.lrem(keys.DLQ, 0, job_id)
    assert await reconcile_dead_letters(store, queue, 0.0, kept=True) == 0  # what the old code did: nothing

    sweep = healer.DeadLetterSweep()
    assert await sweep.run(store, queue, 0.0) == 5
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == whole
    reads = sweep.redis_reads
    assert await sweep.run(store, queue, 0.0) == 0
    assert sweep.redis_reads == reads  # all seen there: PostgreSQL's page only, no read of dlq_tasks

    await queue.redis.lrem(keys.DLQ, 0, whole[5])  # taken out by hand after the sweep saw it
    assert await sweep.run(store, queue, 0.0) == 0  # remembered as seen ...
    forgetful = healer.DeadLetterSweep(forget_every=0.0)
    assert await forgetful.run(store, queue, 0.0) == 1  # ... until the sweep forgets what it saw
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == whole

    retried, purged = whole[0], whole[1]
    await stub.RetryDeadLetters(pb.DeadLettersRequest(ids=[retried]))
    await stub.PurgeDeadLetters(pb.DeadLettersRequest(ids=[purged]))
    assert await forgetful.run(store, queue, 0.0) == 0  # neither comes back
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == whole[2:]


async def test_the_sweep_inserts_nothing_on_a_list_moved_since_it_was_read(queue: Queue):
    """Two leaders for a moment, or a retry between the read and the insert: the second insert on the old
    read is refused whole, and the first counts itself in dlq_moves."""
    await queue.redis.lpush(keys.DLQ, "c", "a")  # b, between them, went missing
    seen = await queue.reconcile.dead_letters_read()
    other = await queue.reconcile.dead_letters_read()
    assert seen is not None and other is not None
    assert await queue.reconcile.insert_dead([("b", "c")], seen) == 1
    assert await queue.reconcile.insert_dead([("b", "c")], other) is None
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == ["a", "b", "c"]
    assert await queue.reconcile.insert_dead([("z", "")], seen) == 1  # its own read stays good: tail
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == ["a", "b", "c", "z"]
