"""Cancel, watch, dead letters, batches and list filters through a real server and workers."""

import asyncio

import grpc
import pytest

from jobcluster import keys
from jobcluster.pb import scheduler_pb2 as pb
from tests.helpers import group_members, wait_for


async def _status(stub, job_id):
    return await stub.GetJobStatus(pb.JobId(id=job_id))


async def test_cancel_a_queued_job_it_never_runs(stub, make_worker, queue):
    resp = await stub.SubmitJob(pb.Job(command="echo should-not-run"))
    cancelled = await stub.CancelJob(pb.JobId(id=resp.job_id))
    assert cancelled.status == "CANCELLED"
    # Cancel does not scan pending_jobs (O(n)): the id stays until a worker takes it and drops it.
    assert await queue.redis.lrange(keys.PENDING, 0, -1) == [resp.job_id]
    await make_worker().run()
    job = await _status(stub, resp.job_id)
    assert job.status == "CANCELLED" and job.attempts == 0 and not job.attempt_history
    assert await queue.redis.llen(keys.PENDING) == 0 and not await queue.redis.keys(keys.PROCESSING_PREFIX + "*")


async def test_cancel_a_delayed_job_takes_it_out_of_delayed_jobs(stub, queue):
    from jobcluster.model import now_ms

    resp = await stub.SubmitJob(pb.Job(command="echo later", run_at_ms=now_ms() + 60_000))
    assert await queue.redis.zscore(keys.DELAYED, resp.job_id) is not None
    await stub.CancelJob(pb.JobId(id=resp.job_id))
    assert await queue.redis.zscore(keys.DELAYED, resp.job_id) is None


async def test_a_cancel_whose_withdrawal_redis_fails_is_answered_cancelled_and_the_job_never_runs(
    server, stub, make_worker, queue, monkeypatch
):
    """The cancel commits in PostgreSQL; taking the id out of delayed_jobs is only a hint. A Redis error then
    must not answer UNAVAILABLE for a cancel that took effect (the caller's retry got FAILED_PRECONDITION)."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from jobcluster.model import now_ms

    resp = await stub.SubmitJob(pb.Job(command="echo should-not-run", run_at_ms=now_ms() + 1500))

    async def redis_fails(job_id: str) -> None:  # the injected fault: Redis drops the withdrawal
        raise RedisConnectionError("injected: Redis went away")

    monkeypatch.setattr(server.service.queue.jobs, "withdraw", redis_fails)
    cancelled = await stub.CancelJob(pb.JobId(id=resp.job_id))
    assert cancelled.status == "CANCELLED"
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await stub.CancelJob(pb.JobId(id=resp.job_id))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # it has ended: cancelled above
    # Nobody owes the withdrawal: the id comes due, a worker takes it, finds the job CANCELLED and drops it.
    assert await queue.redis.zscore(keys.DELAYED, resp.job_id) is not None
    async with asyncio.timeout(15):
        await make_worker().run()  # burst: ends once delayed_jobs and the lanes are empty
    job = await _status(stub, resp.job_id)
    assert job.status == "CANCELLED" and job.attempts == 0 and not job.attempt_history
    assert await queue.redis.zscore(keys.DELAYED, resp.job_id) is None
    assert not await queue.redis.keys(keys.PROCESSING_PREFIX + "*")


async def test_cancel_a_running_job_kills_its_process_group(stub, make_worker, tmp_path):
    pgid = tmp_path / "pgid"
    resp = await stub.SubmitJob(pb.Job(command=f"echo $$ > {pgid}; sleep 60 & sleep 60; echo never"))
    worker = make_worker("w-cancel", burst=False, job_kill_grace=0.5)
    running = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: pgid.exists() and pgid.read_text().strip(), what="job started")
        cancelled = await stub.CancelJob(pb.JobId(id=resp.job_id))
        assert cancelled.status == "CANCELLED"
        group = int(pgid.read_text())
        await wait_for(lambda: not group_members(group), timeout=10, what="process group killed")

        async def closed():
            job = await _status(stub, resp.job_id)
            return job.attempt_history and job.attempt_history[0].finished_at_ms and job

        job = await wait_for(closed, what="attempt closed")
        assert job.status == "CANCELLED" and "cancelled" in job.attempt_history[0].error
        assert "never" not in job.output
    finally:
        worker.stop()
        await running


async def test_cancel_errors(stub, make_worker):
    done = await stub.SubmitJob(pb.Job(command="true"))
    await make_worker().run()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CancelJob(pb.JobId(id=done.job_id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "SUCCEEDED" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CancelJob(pb.JobId(id="00000000-0000-0000-0000-000000000000"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_dead_letters_list_retry_and_purge(stub, make_worker, queue, tmp_path):
    marker = tmp_path / "fixed"
    flaky = await stub.SubmitJob(pb.Job(command=f"[ -f {marker} ] && echo fixed || exit 5", max_retries=0))
    other = await stub.SubmitJob(pb.Job(command="exit 9", max_retries=0))
    await make_worker().run()
    listed = await stub.ListDeadLetters(pb.DeadLettersRequest())
    # Both ran at once on the worker's slots, so either may have been dead-lettered first.
    by_id = {d.id: d for d in listed.dead_letters}
    assert len(listed.dead_letters) == 2 and set(by_id) == {other.job_id, flaky.job_id}
    assert by_id[flaky.job_id].exit_code == 5 and "retries used up" in by_id[flaky.job_id].reason
    assert by_id[other.job_id].exit_code == 9
    marker.write_text("")
    retried = await stub.RetryDeadLetters(pb.DeadLettersRequest(ids=[flaky.job_id]))
    assert retried.count == 1
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == [other.job_id]
    await make_worker().run()
    job = await _status(stub, flaky.job_id)
    # attempt numbers keep counting; the retry budget was reset
    assert job.status == "SUCCEEDED" and job.attempts == 2 and job.output == "fixed\n"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RetryDeadLetters(pb.DeadLettersRequest(ids=[flaky.job_id]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not in dlq_tasks" in err.value.details()
    purged = await stub.PurgeDeadLetters(pb.DeadLettersRequest(all=True))
    assert purged.count == 1 and await queue.redis.llen(keys.DLQ) == 0
    assert (await _status(stub, other.job_id)).status == "FAILED"


async def test_submit_jobs_batch_is_all_or_nothing(stub, store):
    ok = await stub.SubmitJobs(
        pb.JobBatch(jobs=[pb.Job(command=f"echo {i}", idempotency_key=f"b{i}") for i in range(3)])
    )
    assert len(ok.jobs) == 3 and all(r.job_id and not r.duplicate for r in ok.jobs)
    again = await stub.SubmitJobs(pb.JobBatch(jobs=[pb.Job(command="echo 0", idempotency_key="b0")]))
    assert again.jobs[0].duplicate and again.jobs[0].job_id == ok.jobs[0].job_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SubmitJobs(pb.JobBatch(jobs=[pb.Job(command="true"), pb.Job(command="", name="empty")]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "job 2 ('empty'): command is empty" in err.value.details()
    assert await store.pool.fetchval("SELECT count(*) FROM jobs") == 3


async def test_watch_job_streams_output_as_it_is_produced(stub, make_worker):
    resp = await stub.SubmitJob(pb.Job(command="for i in 1 2 3; do echo $i; sleep 0.6; done"))
    worker = make_worker("w-watch", burst=False)
    running = asyncio.create_task(worker.run())
    seen: list[str] = []
    try:
        async for event in stub.WatchJob(pb.JobId(id=resp.job_id)):
            if event.live_output and (not seen or seen[-1] != event.live_output):
                seen.append(event.live_output)
            if event.final:
                assert event.job.status == "SUCCEEDED" and event.job.output == "1\n2\n3\n"
                break
    finally:
        worker.stop()
        await running
    # The output arrived in pieces while the job ran, not only at the end.
    assert "1\n" in seen and any(s.startswith("1\n2\n") for s in seen), seen


async def test_watch_a_finished_job_sends_it_once(stub, make_worker):
    resp = await stub.SubmitJob(pb.Job(command="echo done"))
    await make_worker().run()
    events = [e async for e in stub.WatchJob(pb.JobId(id=resp.job_id))]
    assert len(events) == 1 and events[0].final and events[0].job.output == "done\n"


async def test_list_jobs_filters_and_counts(stub, make_worker):
    for cmd in ("echo alpha", "echo beta", "exit 3"):
        await stub.SubmitJob(pb.Job(command=cmd, max_retries=0))
    await make_worker().run()
    found = await stub.ListJobs(pb.ListJobsRequest(text="ALPHA", with_counts=True))
    assert [j.command for j in found.jobs] == ["echo alpha"]
    assert dict(found.status_counts) == {"SUCCEEDED": 2, "FAILED": 1}
    none = await stub.ListJobs(pb.ListJobsRequest(created_after_ms=found.jobs[0].created_at_ms + 3_600_000))
    assert not none.jobs


async def test_submit_jobs_batch_with_repeated_keys_and_run_at(stub, store, queue):
    from jobcluster.model import now_ms

    batch = [
        pb.Job(command="echo a", idempotency_key="dup"),
        pb.Job(command="echo b", idempotency_key="dup"),
        pb.Job(command="echo later", run_at_ms=now_ms() + 60_000),
        pb.Job(command="echo c"),
    ]
    resp = await stub.SubmitJobs(pb.JobBatch(jobs=batch))
    ids = [r.job_id for r in resp.jobs]
    assert ids[0] == ids[1] and not resp.jobs[0].duplicate and resp.jobs[1].duplicate
    assert len(set(ids)) == 3
    assert (await stub.GetJobStatus(pb.JobId(id=ids[2]))).status == "PENDING"
    assert await queue.redis.zscore(keys.DELAYED, ids[2]) is not None
    assert sorted(await queue.redis.lrange(keys.PENDING, 0, -1)) == sorted([ids[0], ids[3]])
