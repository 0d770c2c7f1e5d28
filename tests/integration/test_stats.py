"""The charts' counts of jobs finished per minute (scheduler_server/stats.py, sql/stats.sql): recounted, so
right after a late commit, and after jobs that are no longer there."""

from __future__ import annotations

import datetime as dt

from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.store import Store
from scheduler_server.stats import RECOUNT_MINUTES


async def _finished(store: Store) -> dict[str, int]:
    """Jobs finished by status over the minutes a recount covers."""
    total: dict[str, int] = {}
    for minute in await store.stats.minutes(RECOUNT_MINUTES):
        for status, n in minute.finished.items():
            total[status] = total.get(status, 0) + n
    return total


async def test_a_recount_takes_back_a_dead_letter_retried_since(stub, store: Store, make_worker) -> None:
    """A recount wrote only the (minute, status) groups it found, so a group whose jobs were gone kept its old
    count: a dead letter retried within the recounted minutes stayed counted as a failure, and the chart test
    once counted a job of an earlier test (that test's jobs truncated, its counts not)."""
    dead = (await stub.SubmitJob(pb.Job(command="exit 3", max_retries=0))).job_id
    await make_worker("w-stats").run()
    now: dt.datetime = await store.pool.fetchval("SELECT date_trunc('minute', now())")
    since = now - dt.timedelta(minutes=RECOUNT_MINUTES - 1)
    await store.stats.count_minutes(since)
    assert await _finished(store) == {"FAILED": 1}
    assert (await stub.RetryDeadLetters(pb.DeadLettersRequest(ids=[dead]))).count == 1
    await store.stats.count_minutes(since)
    assert await _finished(store) == {}
