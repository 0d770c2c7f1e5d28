"""Every branch of the leader's cleanup decision (choose_dead_workers), without I/O."""

from scheduler_server.leader import choose_dead_workers

NOW = 1_700_000_000_000


def _choose(beats, holders=(), missing_since=None, mono=100.0, dead_after=3.0):
    return choose_dead_workers(now_ms=NOW, beats=beats, holders=set(holders), dead_after=dead_after, mono=mono,
                               missing_since=missing_since or {})


def test_a_fresh_heartbeat_is_alive():
    assert _choose({"w1": NOW - 1000}, holders={"w1"}) == ({}, {})


def test_a_heartbeat_exactly_at_the_limit_is_still_alive():
    assert _choose({"w1": NOW - 3000}) == ({}, {})


def test_a_stale_heartbeat_is_dead_with_its_age():
    dead, _ = _choose({"w1": NOW - 4500, "w2": NOW - 100})
    assert dead == {"w1": "no heartbeat for 4.5s"}


def test_a_stale_worker_is_dead_even_holding_nothing():
    dead, _ = _choose({"w1": NOW - 10_000}, holders=())
    assert list(dead) == ["w1"]


def test_a_holder_without_any_heartbeat_gets_a_grace_from_when_first_seen():
    dead, missing = _choose({}, holders={"w9"}, mono=100.0)
    assert dead == {} and missing == {"w9": 100.0}
    dead, missing = _choose({}, holders={"w9"}, missing_since=missing, mono=102.9)
    assert dead == {} and missing == {"w9": 100.0}
    dead, missing = _choose({}, holders={"w9"}, missing_since=missing, mono=103.1)
    assert dead == {"w9": "no heartbeat"}


def test_a_holder_that_heartbeats_again_is_forgotten_from_the_missing_list():
    _, missing = _choose({}, holders={"w9"}, mono=100.0)
    dead, missing = _choose({"w9": NOW}, holders={"w9"}, missing_since=missing, mono=200.0)
    assert dead == {} and missing == {}


def test_a_worker_that_stops_holding_jobs_is_forgotten_from_the_missing_list():
    _, missing = _choose({}, holders={"w9"}, mono=100.0)
    dead, missing = _choose({}, holders=set(), missing_since=missing, mono=200.0)
    assert dead == {} and missing == {}


def test_the_input_map_is_not_changed():
    seen = {"w9": 50.0}
    _choose({}, holders={"w9"}, missing_since=seen, mono=60.0)
    assert seen == {"w9": 50.0}
