"""ListDeadLetters answers in bounded pages, newest first, however long dlq_tasks grows."""

import uuid

import grpc
import pytest

from jobcluster import keys
from jobcluster.limits import MAX_REPLY_BYTES
from jobcluster.pb import scheduler_pb2 as pb


async def _pages(stub, **fields) -> list[pb.DeadLetters]:
    pages, token = [], ""
    while True:
        page = await stub.ListDeadLetters(pb.DeadLettersRequest(page_token=token, **fields))
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages


async def test_a_long_dlq_comes_in_pages_of_a_thousand(stub, queue):
    ids = [str(uuid.uuid4()) for _ in range(2500)]
    await queue.redis.lpush(keys.DLQ, *ids)  # no such jobs: listed as "no such job in PostgreSQL"
    pages = await _pages(stub)
    assert [len(p.dead_letters) for p in pages] == [1000, 1000, 500]
    assert {p.total for p in pages} == {2500}
    assert [d.id for p in pages for d in p.dead_letters] == ids[::-1]  # newest (last pushed) first
    small = await _pages(stub, page_size=700)
    assert [len(p.dead_letters) for p in small] == [700, 700, 700, 400]


async def test_a_page_is_cut_by_bytes(stub, store, queue, make_worker):
    big = "exit 1 # " + "x" * 60_000
    resp = await stub.SubmitJobs(pb.JobBatch(jobs=[pb.Job(command=big, max_retries=0) for _ in range(80)]))
    await make_worker().run()
    assert await queue.redis.llen(keys.DLQ) == 80
    pages = await _pages(stub)
    assert len(pages) > 1 and all(p.ByteSize() <= MAX_REPLY_BYTES + 70_000 for p in pages)
    listed = [d.id for p in pages for d in p.dead_letters]
    assert sorted(listed) == sorted(r.job_id for r in resp.jobs)
    assert all(d.command == big for p in pages for d in p.dead_letters)


async def test_only_the_ids_asked_for(stub, queue):
    inside, outside = str(uuid.uuid4()), str(uuid.uuid4())
    await queue.redis.lpush(keys.DLQ, inside, "not-a-uuid")
    found = await stub.ListDeadLetters(pb.DeadLettersRequest(ids=[outside, inside, inside]))
    assert [d.id for d in found.dead_letters] == [inside] and found.total == 2 and not found.next_page_token
    everything = await stub.ListDeadLetters(pb.DeadLettersRequest())
    assert [d.id for d in everything.dead_letters] == ["not-a-uuid", inside]  # a hand-pushed id is listed too


@pytest.mark.parametrize("token", ["-1", "abc", "1" * 12])
async def test_a_forged_token_is_refused(stub, token):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListDeadLetters(pb.DeadLettersRequest(page_token=token))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
