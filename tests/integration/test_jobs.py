"""A job's whole life through a real server, Redis, PostgreSQL and an in-process worker."""

import asyncio
import uuid

import grpc
import pytest

from jobcluster import keys
from jobcluster.model import now_ms
from jobcluster.pb import scheduler_pb2 as pb
from tests.helpers import wait_for


async def test_output_and_exit_code_round_trip(stub, make_worker, queue):
    ok = await stub.SubmitJob(pb.Job(command="echo hello; echo world >&2", name="greet"))
    bad = await stub.SubmitJob(pb.Job(command="echo partial; exit 42", max_retries=0))
    assert ok.success and uuid.UUID(ok.job_id)
    await make_worker().run()
    done = await stub.GetJobStatus(pb.JobId(id=ok.job_id))
    assert (done.status, done.exit_code, done.output, done.attempts) == ("SUCCEEDED", 0, "hello\nworld\n", 1)
    assert done.name == "greet" and done.worker_id == "w1" and done.finished_at_ms >= done.started_at_ms > 0
    assert done.created_at == done.created_at_ms // 1000 and done.updated_at >= done.created_at
    failed = await stub.GetJobStatus(pb.JobId(id=bad.job_id))
    assert (failed.status, failed.exit_code, failed.output) == ("FAILED", 42, "partial\n")
    assert failed.last_error == "exit code 42"
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == [bad.job_id]


async def test_failing_job_is_retried_with_backoff_then_dead_lettered(stub, make_worker, queue):
    resp = await stub.SubmitJob(pb.Job(command="echo try $JOB_ATTEMPT; exit 1", max_retries=2))
    await make_worker(retry_backoff_base=0.2, retry_backoff_max=1.0).run()
    job = await stub.GetJobStatus(pb.JobId(id=resp.job_id))
    assert job.status == "FAILED" and job.attempts == 3 and job.output == "try 3\n"
    history = list(job.attempt_history)
    assert [a.number for a in history] == [1, 2, 3]
    assert all(a.exit_code == 1 and a.finished_at_ms for a in history)
    # retry n waits at least half of base * 2^(n-1): 0.1s, then 0.2s
    gaps = [history[i + 1].started_at_ms - history[i].finished_at_ms for i in range(2)]
    assert gaps[0] >= 100 and gaps[1] >= 200, gaps
    assert await queue.redis.lrange(keys.DLQ, 0, -1) == [resp.job_id]
    assert await queue.jobs.depths() == {"pending": 0, "processing": 0, "delayed": 0, "dlq": 1}


async def test_same_idempotency_key_gives_one_job(stub, store, queue):
    first = await stub.SubmitJob(pb.Job(command="true", idempotency_key="order-17"))
    again = await stub.SubmitJob(pb.Job(command="true", idempotency_key="order-17"))
    assert first.job_id == again.job_id and again.duplicate and not first.duplicate
    assert await store.pool.fetchval("SELECT count(*) FROM jobs") == 1
    assert await queue.redis.lrange(keys.PENDING, 0, -1) == [first.job_id]


async def test_resubmit_heals_a_job_lost_between_insert_and_push(stub, queue):
    first = await stub.SubmitJob(pb.Job(command="true", idempotency_key="k-lost"))
    await queue.redis.delete(keys.PENDING)  # as if the server died right after the INSERT
    again = await stub.SubmitJob(pb.Job(command="true", idempotency_key="k-lost"))
    assert again.job_id == first.job_id
    assert await queue.redis.lrange(keys.PENDING, 0, -1) == [first.job_id]


@pytest.mark.parametrize(
    "job,fragment",
    [
        (pb.Job(command=""), "command is empty"),
        (pb.Job(command="x" * (64 * 1024 + 1)), "over the limit of 65536 bytes"),
        (pb.Job(command="echo \x00"), "NUL byte"),
        (pb.Job(command="true", max_retries=-1), "max_retries must not be negative"),
        (pb.Job(command="true", timeout_seconds=-1), "timeout_seconds must not be negative"),
    ],
)
async def test_bad_input_is_invalid_argument(stub, store, job, fragment):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SubmitJob(job)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in err.value.details()
    assert await store.pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_unknown_ids_and_bad_filters(stub):
    for bad_id in (str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetJobStatus(pb.JobId(id=bad_id))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    for req in (
        pb.ListJobsRequest(status="DONE"),
        pb.ListJobsRequest(page_token="garbage"),
        pb.ListJobsRequest(ids=["nope"]),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListJobs(req)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_jobs_newest_first_paged_and_filtered(stub, make_worker):
    ids = [(await stub.SubmitJob(pb.Job(command=f"exit {i % 2}", max_retries=0))).job_id for i in range(7)]
    await make_worker().run()
    seen, token = [], ""
    while True:
        page = await stub.ListJobs(pb.ListJobsRequest(page_size=3, page_token=token))
        seen += [j.id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    failed = await stub.ListJobs(pb.ListJobsRequest(status="failed"))
    assert sorted(j.id for j in failed.jobs) == sorted(ids[1::2])
    some = await stub.ListJobs(pb.ListJobsRequest(ids=ids[:2], include_output=True))
    assert {j.id for j in some.jobs} == set(ids[:2])


async def test_run_at_in_the_future_waits_as_pending(stub, make_worker, queue):
    resp = await stub.SubmitJob(pb.Job(command="echo later", run_at_ms=now_ms() + 1500))
    job = await stub.GetJobStatus(pb.JobId(id=resp.job_id))
    assert job.status == "PENDING"
    assert await queue.redis.zscore(keys.DELAYED, resp.job_id) is not None
    await make_worker().run()  # burst mode waits for the delayed set too
    job = await stub.GetJobStatus(pb.JobId(id=resp.job_id))
    assert job.status == "SUCCEEDED" and job.started_at_ms >= job.run_at_ms


async def test_output_over_the_cap_is_truncated_and_flagged(stub, make_worker):
    resp = await stub.SubmitJob(pb.Job(command="head -c 5000000 /dev/zero | tr '\\0' x; echo; echo LAST"))
    await make_worker(job_output_limit=4096).run()
    job = await stub.GetJobStatus(pb.JobId(id=resp.job_id))
    assert job.status == "SUCCEEDED" and job.output_truncated
    assert len(job.output) == 4096 and job.output.endswith("x\nLAST\n")
    assert job.attempt_history[0].output_truncated


async def test_timeout_fails_the_attempt(stub, make_worker):
    resp = await stub.SubmitJob(pb.Job(command="sleep 20", timeout_seconds=0.3, max_retries=0))
    await make_worker().run()
    job = await stub.GetJobStatus(pb.JobId(id=resp.job_id))
    assert job.status == "FAILED" and "timed out after 0.3s" in job.last_error


async def test_two_workers_never_run_the_same_job(stub, make_worker, queue, store):
    ids = [(await stub.SubmitJob(pb.Job(command="sleep 0.05"))).job_id for _ in range(40)]
    # Every id is in the queue twice, as after a retried push: still one run each.
    await queue.redis.lpush(keys.PENDING, *ids)
    await asyncio.gather(make_worker("wa").run(), make_worker("wb").run())
    rows = await store.pool.fetch("SELECT status, attempts FROM jobs")
    assert len(rows) == 40 and all(r["status"] == "SUCCEEDED" and r["attempts"] == 1 for r in rows)
    assert await store.pool.fetchval("SELECT count(*) FROM job_attempts") == 40
    workers = await store.pool.fetch("SELECT DISTINCT worker_id FROM job_attempts")
    assert {r["worker_id"] for r in workers} == {"wa", "wb"}
    assert await queue.jobs.depths() == {"pending": 0, "processing": 0, "delayed": 0, "dlq": 0}


async def test_late_result_from_an_old_attempt_changes_nothing(stub, store, queue):
    resp = await stub.SubmitJob(pb.Job(command="true"))
    first = await store.jobs.claim(resp.job_id, "paused-worker")
    # The paused worker's job is taken back and claimed again by another worker.
    await store.liveness.recover_worker_jobs(["paused-worker"], "worker lost")
    second = await store.jobs.claim(resp.job_id, "live-worker")
    assert (first.attempt, second.attempt) == (1, 2)
    from jobcluster.model import Status

    assert not await store.jobs.finish_attempt(
        first, Status.SUCCEEDED, exit_code=0, error="", output="late", output_truncated=False
    )
    assert await store.jobs.finish_attempt(
        second, Status.FAILED, exit_code=1, error="exit code 1", output="real", output_truncated=False
    )
    job = await store.job_queries.get(resp.job_id)
    assert job is not None
    assert job.status is Status.FAILED and job.output == "real" and job.attempts == 2


async def test_worker_restart_recovers_its_processing_list(stub, store, queue, make_worker):
    resp = await stub.SubmitJob(pb.Job(command="echo again"))
    # A worker took the job and died mid-run: id in its processing list, RUNNING in PostgreSQL.
    assert await queue.jobs.dequeue("w1", timeout=1) == resp.job_id
    assert await store.jobs.claim(resp.job_id, "w1")
    await make_worker("w1").run()
    job = await stub.GetJobStatus(pb.JobId(id=resp.job_id))
    assert job.status == "SUCCEEDED" and job.attempts == 2
    assert "worker restarted" in job.attempt_history[0].error


async def test_a_due_pending_job_shows_as_queued_in_status_filter_and_counts(stub):
    """One definition (job_shown_status): a PENDING job whose time has come is QUEUED everywhere users look."""
    resp = await stub.SubmitJob(pb.Job(command="true", run_at_ms=now_ms() + 1000))

    async def view(status: str) -> tuple[list[str], dict[str, int]]:
        found = await stub.ListJobs(pb.ListJobsRequest(status=status, with_counts=True))
        return [j.id for j in found.jobs], dict(found.status_counts)

    assert await view("PENDING") == ([resp.job_id], {"PENDING": 1})
    assert await view("QUEUED") == ([], {"PENDING": 1})
    # No worker runs here: once due, the job stays PENDING in its row but shows as QUEUED.
    await wait_for(lambda: _shown(stub, resp.job_id, "QUEUED"), what="the job to come due")
    assert await view("QUEUED") == ([resp.job_id], {"QUEUED": 1})
    assert await view("PENDING") == ([], {"QUEUED": 1})


async def _shown(stub, job_id: str, status: str) -> bool:
    return (await stub.GetJobStatus(pb.JobId(id=job_id))).status == status


async def test_a_claim_whose_reply_was_lost_runs_once(stub, store, make_worker):
    """Chaos found it: PostgreSQL committed a claim, the connection dropped before the reply, and
    the worker's retried claim found the job RUNNING and dropped the id: RUNNING forever."""
    resp = await stub.SubmitJob(pb.Job(command="echo once"))
    worker = make_worker("w-lost-reply")
    real_claim = store.jobs.claim
    lost = []

    async def claim_then_lose_the_reply(job_id, worker_id, token=None, **options):
        claimed = await real_claim(job_id, worker_id, token, **options)
        if not lost:  # an injected fault: the commit happened, the answer never arrives
            lost.append(claimed)
            raise OSError("connection was closed in the middle of operation")
        return claimed

    store.jobs.claim = claim_then_lose_the_reply
    try:
        await worker.run()
    finally:
        store.jobs.claim = real_claim
    assert lost and lost[0] is not None
    job = await stub.GetJobStatus(pb.JobId(id=resp.job_id))
    assert (job.status, job.attempts, job.output) == ("SUCCEEDED", 1, "once\n")
    assert await store.pool.fetchval("SELECT count(*) FROM job_attempts") == 1
    other = await real_claim(resp.job_id, "w-lost-reply")  # another claim (no token) gets nothing
    assert other is None
