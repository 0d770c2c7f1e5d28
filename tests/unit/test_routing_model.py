"""Routing fields without I/O: their checks (jobcluster.model), the waiting reason (scheduler_server.waiting)
and jobs.json entries (client.jobsfile)."""

import pytest

from client.jobsfile import JobsFileError, parse_jobs
from jobcluster.model import InvalidJob, Status, check_tags, validate_routing
from jobcluster.rows import JobRow
from scheduler_server.waiting import LiveWorker, live_workers, reason


def test_defaults_and_normal_form():
    assert validate_routing().routing() == {
        "queue": "default",
        "priority": 0,
        "constraints": (),
        "concurrency_key": "",
        "max_concurrency": 0,
    }
    r = validate_routing(
        queue=" gpu ",
        priority=9,
        constraints=["region=eu", "gpu", " gpu"],
        concurrency_key="db eu",
        max_concurrency=10_000,
    )
    assert (r.queue, r.priority, r.constraints, r.concurrency_key, r.max_concurrency) == (
        "gpu",
        9,
        ("gpu", "region=eu"),
        "db eu",
        10_000,
    )
    assert check_tags([f"t{i}" for i in range(16)] + ["t0"]) == tuple(sorted(f"t{i}" for i in range(16)))


@pytest.mark.parametrize(
    "kw,fragment",
    [
        (dict(queue="a/b"), "queue 'a/b' is not a queue name"),
        (dict(priority=10), "priority must be 0 to 9"),
        (dict(constraints=[f"t{i}" for i in range(17)]), "more than 16 tags"),
        (dict(constraints=["x" * 65]), "is not a tag"),
        (dict(concurrency_key="\x00"), "control character"),
        (dict(max_concurrency=-1, concurrency_key="k"), "max_concurrency must be 0 to 10000"),
        (dict(max_concurrency=1), "needs a concurrency_key"),
    ],
)
def test_bad_routing(kw, fragment):
    with pytest.raises(InvalidJob, match=fragment):
        validate_routing(**kw)


def _job(**routing) -> JobRow:
    return JobRow(
        id="j",
        status=Status.QUEUED,
        output="",
        name="",
        description="",
        command="true",
        exit_code=None,
        attempts=0,
        max_retries=0,
        timeout_seconds=0.0,
        run_at_ms=0,
        idempotency_key="",
        created_at_ms=0,
        created_at_us=0,
        updated_at_ms=0,
        started_at_ms=0,
        finished_at_ms=0,
        worker_id="",
        last_error="",
        output_truncated=False,
        submitted_via="",
        schedule_id="",
        scheduled_for_ms=0,
        **routing,
    )


def test_waiting_reason():
    gpu = _job(queue="gpu", constraints=("gpu", "region=eu"))
    plain_eu = LiveWorker("w1", ("default",), frozenset({"gpu", "region=eu"}))
    gpu_us = LiveWorker("w2", ("gpu", "default"), frozenset({"gpu", "region=us"}))
    assert reason(gpu, [], 0, 0) == "no live worker"
    assert reason(gpu, [plain_eu], 0, 0) == "no live worker serves queue gpu"
    assert reason(gpu, [gpu_us], 0, 0) == "no live worker has tags gpu, region=eu"
    assert reason(gpu, [gpu_us, plain_eu], 0, 0) == "no live worker serving queue gpu has tags gpu, region=eu"
    assert reason(_job(queue="gpu", constraints=("gpu",)), [gpu_us], 0, 0) == ""
    keyed = _job(concurrency_key="db")
    assert reason(keyed, [plain_eu], 2, 2) == "waiting for concurrency key db (2 of 2 running)"
    assert reason(keyed, [plain_eu], 1, 2) == reason(keyed, [plain_eu], 5, 0) == ""


def test_live_workers_from_info_hashes():
    infos = {
        "old": {"heartbeat_ms": "1000"},  # a worker from before routing: the default queue, no tags
        "new": {"heartbeat_ms": "1000", "queues": "gpu,default", "tags": "gpu"},
        "dead": {"heartbeat_ms": "1", "queues": "gpu"},
        "blank": {},
    }
    live = {w.id: w for w in live_workers(infos, now_ms=2000, dead_after_ms=1500)}
    assert set(live) == {"old", "new"}
    assert live["old"].queues == ("default",) and live["old"].tags == frozenset()
    assert live["new"].queues == ("gpu", "default") and live["new"].tags == frozenset({"gpu"})


def test_jobs_file_routing():
    (entry,) = parse_jobs(
        '[{"command": "x", "queue": "gpu", "priority": 3, "constraints": ["b", "a"], '
        '"concurrency_key": "k", "max_concurrency": 2}]'
    )
    assert entry.routing() == {
        "queue": "gpu",
        "priority": 3,
        "constraints": ("a", "b"),
        "concurrency_key": "k",
        "max_concurrency": 2,
    }
    (seed,) = parse_jobs('{"jobs": [{"name": "n", "command": "echo hi"}]}')
    assert (seed.queue, seed.priority, seed.constraints) == ("default", 0, ())


@pytest.mark.parametrize(
    "entry,fragment",
    [
        ('{"command": "x", "priority": "high"}', '"priority" must be a whole number'),
        ('{"command": "x", "priority": 10}', "priority must be 0 to 9"),
        ('{"command": "x", "constraints": "gpu"}', '"constraints" must be a list of tags'),
        ('{"command": "x", "queue": 5}', '"queue" must be a string'),
        ('{"command": "x", "max_concurrency": 2}', "max_concurrency needs a concurrency_key"),
    ],
)
def test_bad_jobs_file_routing_names_file_and_entry(entry, fragment):
    with pytest.raises(JobsFileError) as err:
        parse_jobs(f'[{{"command": "ok"}}, {entry}]', "jobs.json")
    assert str(err.value).startswith("jobs.json: job 2: ") and fragment in str(err.value)


async def test_no_reason_when_redis_does_not_answer():
    """GetJobStatus still answers, without a reason, when Redis is down or slow."""
    import asyncio
    from types import SimpleNamespace

    from redis.exceptions import ConnectionError as RedisConnectionError

    from scheduler_server import waiting

    async def down() -> None:
        raise RedisConnectionError("down")

    async def slow() -> None:
        await asyncio.sleep(60)

    for failing in (down, slow):
        queue = SimpleNamespace(liveness=SimpleNamespace(workers_now=failing, worker_infos=failing))
        started = asyncio.get_running_loop().time()
        got = await waiting.waiting_reasons(
            [_job(queue="gpu")],
            queue,
            None,
            dead_after_ms=1000,  # type: ignore[arg-type]
            limit_of=lambda j: 1,
        )
        assert got == {} and asyncio.get_running_loop().time() - started < waiting.REDIS_WAIT + 0.5
