"""CancelJob landing between the job's process exiting and the worker recording it (issue 9)."""

import logging

import pytest

from jobcluster import keys
from jobcluster.pb import scheduler_pb2 as pb


@pytest.mark.parametrize("command, code", [("echo finished", 0), ("echo finished; exit 3", 3)])
async def test_cancel_after_exit_before_record_keeps_output_and_closes_the_attempt(
    stub, make_worker, queue, store, caplog, command, code
):
    resp = await stub.SubmitJob(pb.Job(command=command, max_retries=2))
    worker = make_worker("w-race")
    settle_many = worker.attempts.settle_many
    seen = []

    async def cancel_then_settle(ended):
        # The process has exited; the worker has not written anything yet: cancel now.
        [e] = ended
        seen.append((e.claimed, e.outcome.exit_code))
        assert (await stub.CancelJob(pb.JobId(id=e.claimed.job_id))).status == "CANCELLED"
        await settle_many(ended)

    worker.attempts.settle_many = cancel_then_settle
    with caplog.at_level(logging.INFO, logger="worker"):
        await worker.run()  # burst: ends when nothing is left
    [(claimed, got)] = seen
    assert got == code
    job = await stub.GetJobStatus(pb.JobId(id=resp.job_id))
    assert job.status == "CANCELLED" and job.attempts == 1 and job.exit_code == code
    assert job.output == "finished\n"
    [attempt] = job.attempt_history
    assert attempt.finished_at_ms > 0 and attempt.exit_code == code
    assert "cancelled after the command ended" in attempt.error
    assert "cancel" in job.last_error  # the cancel's reason stays the job's error
    # Nothing of it is left in Redis: not delayed for a retry, not held by the worker.
    assert await queue.redis.zscore(keys.DELAYED, resp.job_id) is None
    assert not await queue.redis.keys(keys.PROCESSING_PREFIX + "*")
    assert "cancelled after its command ended" in caplog.text
    assert "newer attempt" not in caplog.text
    # Closed once: a late or repeated write of the attempt changes nothing.
    assert not await store.jobs.close_cancelled_attempt(claimed, 99, "late", "late", False)
    assert (await stub.GetJobStatus(pb.JobId(id=resp.job_id))).exit_code == code


async def test_cancel_then_shutdown_interrupt_closes_the_attempt_and_frees_the_id(stub, make_worker, queue, store):
    resp = await stub.SubmitJob(pb.Job(command="sleep 60", max_retries=2))
    worker = make_worker("w-stop")
    assert await queue.jobs.dequeue(worker.worker_id) == resp.job_id
    claimed = await store.jobs.claim(resp.job_id, worker.worker_id)
    await stub.CancelJob(pb.JobId(id=resp.job_id))
    await worker.attempts.interrupt_many([claimed])  # the shutdown cut the attempt before the cancel check saw it
    job = await stub.GetJobStatus(pb.JobId(id=resp.job_id))
    assert job.status == "CANCELLED" and job.attempts == 1
    assert job.attempt_history[0].finished_at_ms > 0 and "interrupted" in job.attempt_history[0].error
    assert not await queue.redis.keys(keys.PROCESSING_PREFIX + "*")
