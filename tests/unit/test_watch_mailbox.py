"""A WatchJob stream's mailbox (scheduler_server/watch_stream.py): a slow reader gets the latest state, never blocks
the poller."""

from __future__ import annotations

import asyncio

import pytest

from jobcluster.model import Status
from jobcluster.queue.live_output import Live
from jobcluster.rows import JobRow
from scheduler_server.watch import Snapshot, Watch


def _snapshot(status: Status, live: Live | None = None) -> Snapshot:
    job = JobRow(
        id="j",
        status=status,
        output="",
        name="",
        description="",
        command="true",
        exit_code=None,
        attempts=1,
        max_retries=0,
        timeout_seconds=1.0,
        run_at_ms=0,
        idempotency_key="",
        created_at_ms=1,
        created_at_us=1000,
        updated_at_ms=1,
        started_at_ms=0,
        finished_at_ms=0,
        worker_id="",
        last_error="",
        output_truncated=False,
        submitted_via="",
        schedule_id="",
        scheduled_for_ms=0,
    )
    return Snapshot.of(job, live)


async def test_a_slow_reader_gets_only_the_latest_snapshot():
    watch = Watch("j", asyncio.get_running_loop().time() + 60)
    for snap in (_snapshot(Status.QUEUED), _snapshot(Status.RUNNING, Live(3, "a\n", 1)), _snapshot(Status.SUCCEEDED)):
        watch.offer(snap)  # never waits for the reader
    latest = await watch.next()
    assert latest is not None and latest.final and latest.event.final and latest.event.job.status == "SUCCEEDED"


async def test_the_live_output_is_in_the_event():
    snap = _snapshot(Status.RUNNING, Live(3, "a\n", 1))
    assert snap.live_bytes == 3 and snap.event.live_output == "a\n" and snap.event.live_output_bytes == 3
    assert not snap.final


async def test_a_dead_attempts_output_is_not_shown_for_the_next():
    """The job is on attempt 1 here: attempt 2's output would be a bug's, attempt 0 an older worker's."""
    assert _snapshot(Status.RUNNING, Live(3, "a\n", 2)).event.live_output == ""
    assert _snapshot(Status.RUNNING, Live(3, "a\n", 0)).event.live_output == "a\n"


async def test_the_life_ends_after_the_deadline_but_a_waiting_snapshot_comes_first():
    watch = Watch("j", asyncio.get_running_loop().time() - 1)  # its life is already over
    watch.offer(_snapshot(Status.SUCCEEDED))
    assert (await watch.next()) is not None  # the final state is never lost to the deadline
    assert await watch.next() is None


async def test_an_error_ends_the_stream():
    watch = Watch("j", asyncio.get_running_loop().time() + 60)
    watch.offer(_snapshot(Status.QUEUED))
    watch.fail(LookupError("gone"))
    with pytest.raises(LookupError):
        await watch.next()


async def test_ending_a_stream_says_why():
    watch = Watch("j", asyncio.get_running_loop().time() + 60)
    watch.offer(_snapshot(Status.RUNNING))
    watch.end("the server is stopping")
    assert await watch.next() is None and watch.end_reason == "the server is stopping"
