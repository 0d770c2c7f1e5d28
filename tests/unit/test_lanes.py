"""Lane names and which lanes a worker serves, in which order (no I/O)."""

from __future__ import annotations

import random

import pytest

from jobcluster import keys
from jobcluster.lifecycle import decide
from jobcluster.lifecycle.decide import Refusal
from jobcluster.model import Status
from jobcluster.queue.lanes import eligible
from jobcluster.rows import JobState
from jobcluster.settings import ConfigError, Settings
from worker.worker import serving_of


def test_the_default_lane_is_pending_jobs_and_others_read_back():
    assert keys.lane("default", 0) == keys.lane("", 0, ()) == "pending_jobs"
    assert keys.lane("default", 9) == "pending_jobs:default:9"
    assert keys.lane("gpu", 0, ("region=eu", "gpu", "gpu")) == "pending_jobs:gpu:0:gpu,region=eu"
    for args in (("default", 0, ()), ("slow", 3, ()), ("gpu", 7, ("gpu", "region=eu"))):
        assert keys.parse_lane(keys.lane(*args)) == args
    for bad in ("dlq_tasks", "pending_jobs:", "pending_jobs:q", "pending_jobs:q:x", "pending_jobs:q:1:a:b"):
        with pytest.raises(ValueError):
            keys.parse_lane(bad)


def test_a_worker_serves_its_queues_in_order_priority_first_and_only_constraints_it_meets():
    lanes = [
        keys.lane(q, p, c)
        for q, p, c in [
            ("default", 9, ()),
            ("default", 0, ("gpu",)),
            ("default", 0, ("ssd",)),
            ("slow", 9, ()),
            ("gpu", 0, ()),
            ("default", 5, ("gpu", "region=eu")),
            ("other", 9, ()),
        ]
    ] + ["pending_jobs:bad"]
    assert eligible(lanes, ("default", "slow"), {"gpu", "region=eu"}) == [
        "pending_jobs:default:9",
        "pending_jobs:default:5:gpu,region=eu",
        "pending_jobs:default:0:gpu",
        "pending_jobs",
        "pending_jobs:slow:9",
    ]
    assert eligible(lanes, ("gpu",), ()) == ["pending_jobs:gpu:0"]
    assert eligible([], ("default",), ()) == ["pending_jobs"]  # the seed's set-up: BLMOVE on pending_jobs


def _waiting(**routing) -> JobState:
    return JobState(Status.QUEUED, True, 0, 0, **routing)


def test_an_id_a_worker_may_not_run_goes_to_its_lane_and_a_full_key_backs_off():
    gpu = _waiting(queue="default", constraints=("gpu",), lane=keys.lane("default", 0, ("gpu",)))
    assert decide.refuse(gpu, ("default",), ()) is Refusal.REROUTE
    assert decide.refuse(gpu, ("default",), ("gpu",)) is Refusal.DROP  # it could run: someone else has it
    assert decide.refuse(_waiting(queue="slow"), ("default",), ()) is Refusal.REROUTE
    assert decide.refuse(_waiting(concurrency_key="db"), ("default",), ()) is Refusal.KEY_FULL
    waits = [decide.key_full_wait_ms(n, random.Random(1)) for n in range(1, 10)]
    assert 187 <= waits[0] <= 313 and all(w <= 5000 for w in waits) and waits[-1] >= 3000


def test_concurrency_limits_and_worker_routing_settings_are_read_and_checked():
    s = Settings.from_env(
        {"CONCURRENCY_LIMITS": "db=2, api=key=5", "WORKER_QUEUES": "gpu, default", "WORKER_TAGS": "region=eu,gpu"}, None
    )
    assert s.concurrency_limits == (("db", 2), ("api=key", 5))
    assert serving_of(s) == (("gpu", "default"), ("gpu", "region=eu"))
    for bad in ("db", "db=0", "=3", "db=x"):
        with pytest.raises(ConfigError, match="CONCURRENCY_LIMITS"):
            Settings.from_env({"CONCURRENCY_LIMITS": bad}, None)
    with pytest.raises(ConfigError, match="WORKER_TAGS"):
        serving_of(Settings.from_env({"WORKER_TAGS": "gpu:1"}, None))
