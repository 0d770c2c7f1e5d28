"""JOB_RETENTION: the leader deletes finished jobs past it, in small fenced batches, and keeps what users still need."""

from __future__ import annotations

import uuid

import pytest

from jobcluster.settings import ConfigError, Settings
from jobcluster.store import Fenced, Store
from scheduler_server.duties import Runner, Term
from scheduler_server.retention import Expire, Expiry

DAY = 86400.0
WEEK = 7 * DAY

# (status, days since it finished, dead letter purged); finished_at NULL when days is None.
INSERT = """INSERT INTO jobs (id, command, status, max_retries, timeout_seconds, finished_at, updated_at,
                              dead_letter_purged_at, attempts)
            VALUES ($1, 'true', $2, 0, 10, now() - $3::float8 * interval '1 day', now() - $3::float8 * interval '1 day',
                    CASE WHEN $4 THEN now() ELSE NULL END, 1)"""


async def _job(store: Store, status: str, days: float | None, purged: bool = False) -> str:
    job_id = uuid.uuid4()
    await store.pool.execute(INSERT, job_id, status, days, purged)
    await store.pool.execute(
        "INSERT INTO job_attempts (job_id, attempt, worker_id, finished_at) VALUES ($1, 1, 'w', now())", job_id
    )
    return str(job_id)


async def _left(store: Store) -> set[str]:
    return {str(r["id"]) for r in await store.pool.fetch("SELECT id FROM jobs")}


async def test_finished_jobs_past_retention_go_with_their_attempts_and_the_rest_stays(store):
    gone = [
        await _job(store, "SUCCEEDED", 8),
        await _job(store, "CANCELLED", 30),
        await _job(store, "FAILED", 8, purged=True),
        await _job(store, "SUCCEEDED", 7.01),
    ]
    gone += [await _job(store, "SUCCEEDED", 9) for _ in range(5)]
    kept = {
        await _job(store, "SUCCEEDED", 6.9),  # not old enough
        await _job(store, "FAILED", 40),  # a dead letter in dlq_tasks: users may retry it
        await _job(store, "QUEUED", 40),  # retried from the DLQ: waiting again
        await _job(store, "RUNNING", 40),
        await _job(store, "PENDING", 40),
    }
    last = await _job(store, "SUCCEEDED", 40)  # a schedule's last job: its schedule shows it
    await store.pool.execute(
        "INSERT INTO schedules (id, name, cron, command, max_retries, timeout_seconds, next_run_at, last_job_id) "
        "VALUES (gen_random_uuid(), 's', '* * * * *', 'true', 0, 10, now(), $1)",
        uuid.UUID(last),
    )
    kept.add(last)
    assert await store.fencing.take(3, "leader")
    expiry = Expiry(WEEK, store, batch=2, pause=0, budget=60)
    assert await expiry.step(3, lambda: True) == len(gone)
    assert await _left(store) == kept
    assert (
        await store.pool.fetchval(
            "SELECT count(*) FROM job_attempts WHERE NOT (job_id = ANY($1::uuid[]))", [uuid.UUID(k) for k in kept]
        )
        == 0
    )
    assert await store.pool.fetchval("SELECT count(*) FROM job_attempts") == len(kept)
    rows = await store.pool.fetch(
        "SELECT s.last_job_id, j.status FROM schedules s LEFT JOIN jobs j ON j.id = s.last_job_id"
    )
    assert [(str(r["last_job_id"]), r["status"]) for r in rows] == [(last, "SUCCEEDED")]


class _Leading:
    """An election that says 'leading' with a given token."""

    def __init__(self, token: int) -> None:
        self.token = token

    def leading(self) -> bool:
        return True


async def test_each_round_is_bounded_and_idle_rounds_do_not_query(store):
    for _ in range(7):
        await _job(store, "SUCCEEDED", 10)
    assert await store.fencing.take(4, "leader")
    now = [0.0]
    # budget 0: one batch a round, then the leader's other duties get their turn
    expire = Expire(WEEK, store, batch=3, pause=0, budget=0, idle_every=60, clock=lambda: now[0])
    rounds = Runner([expire], clock=lambda: now[0])
    term = Term(4, _Leading(4))  # type: ignore[arg-type]
    deleted = []
    for _ in range(3):
        await rounds.run_due(term)
        deleted.append(expire.expiry.deleted)
    assert deleted == [3, 6, 7]  # the short batch: all gone
    await _job(store, "SUCCEEDED", 10)
    now[0] = 59.0
    await rounds.run_due(term)
    assert expire.expiry.deleted == 7  # looked a moment ago: not before idle_every
    now[0] = 61.0
    await rounds.run_due(term)
    assert expire.expiry.deleted == 8


async def test_a_deposed_leader_deletes_nothing(store):
    old = await _job(store, "SUCCEEDED", 10)
    assert await store.fencing.take(5, "old")
    assert await store.fencing.take(6, "new")
    with pytest.raises(Fenced):
        await Expiry(WEEK, store).step(5, lambda: True)
    assert await Expiry(WEEK, store).step(5, lambda: False) == 0  # nor one that knows it no longer leads
    assert await _left(store) == {old}


async def test_retention_off_keeps_everything(store):
    old = await _job(store, "SUCCEEDED", 1000)
    assert await store.fencing.take(7, "leader")
    for raw in ("off", "0", "OFF"):
        retention = Settings.from_env({"JOB_RETENTION": raw}, dotenv_path=None).job_retention
        assert retention == 0
        assert await Expiry(retention, store).step(7, lambda: True) == 0
    assert await _left(store) == {old}


def test_retention_setting():
    assert Settings.from_env({}, dotenv_path=None).job_retention == WEEK
    assert Settings.from_env({"JOB_RETENTION": "36h"}, dotenv_path=None).job_retention == 1.5 * DAY
    with pytest.raises(ConfigError, match="JOB_RETENTION"):
        Settings.from_env({"JOB_RETENTION": "a week"}, dotenv_path=None)
