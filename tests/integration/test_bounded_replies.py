"""Replies stay bounded whatever the jobs print: pages are cut by bytes, the client follows page by page."""

import asyncio

import pytest

from client.__main__ import submit_batch
from client.follow import follow
from client.jobsfile import JobEntry
from jobcluster.failover import Pool
from jobcluster.limits import MAX_REPLY_BYTES
from jobcluster.pb import scheduler_pb2 as pb

BIG = 300 * 1024


@pytest.fixture
async def big_outputs(stub, make_worker) -> list[str]:
    """Twenty SUCCEEDED jobs that each printed 300 KB (256 KB kept, the default JOB_OUTPUT_LIMIT)."""
    batch = pb.JobBatch(
        jobs=[pb.Job(command=f"head -c {BIG} /dev/zero | tr '\\0' {n % 10}", name=f"big{n}") for n in range(20)]
    )
    ids = [r.job_id for r in (await stub.SubmitJobs(batch)).jobs]
    await make_worker(job_output_limit=256 * 1024).run()
    return ids


async def test_a_page_with_output_is_cut_by_bytes_and_the_rest_follows(stub, big_outputs):
    req = pb.ListJobsRequest(page_size=1000, include_output=True)
    first = await stub.ListJobs(req)
    assert first.ByteSize() <= MAX_REPLY_BYTES + 300 * 1024  # one job may start just before the cut
    assert 0 < len(first.jobs) < 20 and first.next_page_token
    seen = [j.id for j in first.jobs]
    token = first.next_page_token
    while token:
        page = await stub.ListJobs(pb.ListJobsRequest(page_size=1000, include_output=True, page_token=token))
        assert page.ByteSize() <= MAX_REPLY_BYTES + 300 * 1024
        seen += [j.id for j in page.jobs]
        token = page.next_page_token
    assert sorted(seen) == sorted(big_outputs)  # every job once, none lost at a cut


async def test_the_client_follows_twenty_big_outputs_to_the_end(server, big_outputs):
    pool = Pool([server.address])
    try:
        final = await asyncio.to_thread(follow, pool, big_outputs, _Quiet())
    finally:
        pool.close()
    assert [j.id for j in final] == big_outputs
    assert all(j.status == "SUCCEEDED" and len(j.output) == 256 * 1024 for j in final)


async def test_a_file_of_big_commands_goes_in_batches_under_the_limit(server, store):
    entries = [JobEntry(command="true #" + "x" * 5000, name=f"j{n}") for n in range(1000)]
    pool = Pool([server.address])
    try:
        submitted = await asyncio.to_thread(submit_batch, pool, entries)
    finally:
        pool.close()
    assert len(submitted) == 1000 and len({job_id for job_id, _ in submitted}) == 1000
    assert await store.pool.fetchval("SELECT count(*) FROM jobs") == 1000


class _Quiet:
    """A non-terminal output that swallows follow's progress lines."""

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
