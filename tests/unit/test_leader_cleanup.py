"""Every branch of the leader's cleanup decision (choose_dead_workers), without I/O."""

from scheduler_server.cleanup import choose_dead_workers, healthy_since, stall_gap
from scheduler_server.duties import TICK

NOW = 1_700_000_000_000


def _choose(beats, holders=(), missing_since=None, mono=100.0, dead_after=3.0, healthy_for=60.0):
    return choose_dead_workers(
        now_ms=NOW,
        beats=beats,
        holders=set(holders),
        dead_after=dead_after,
        mono=mono,
        missing_since=missing_since or {},
        healthy_for=healthy_for,
    )


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


# --- nobody is dead before Redis was seen healthy for WORKER_DEAD_AFTER ----------------------------


def test_after_a_stall_a_stale_heartbeat_is_not_dead_until_redis_was_healthy_long_enough():
    beats = {"w1": NOW - 6000}  # Redis was frozen 6 s: every beat looks 6 s old
    assert _choose(beats, holders={"w1"}, healthy_for=0.0)[0] == {}
    assert _choose(beats, holders={"w1"}, healthy_for=2.9)[0] == {}
    assert _choose(beats, holders={"w1"}, healthy_for=3.0)[0] == {"w1": "no heartbeat for 6.0s"}


def test_the_health_gate_also_holds_back_holders_without_any_heartbeat():
    dead, missing = _choose({}, holders={"w9"}, missing_since={"w9": 90.0}, mono=100.0, healthy_for=1.0)
    assert dead == {} and missing == {"w9": 90.0}


def test_a_slow_read_or_a_long_pause_between_reads_restarts_the_healthy_view():
    gap = 1.0
    assert healthy_since(None, 0.0, started=10.0, answered=10.1, gap=gap) == 10.1  # first read
    assert healthy_since(10.1, 10.1, started=10.5, answered=10.6, gap=gap) == 10.1  # steady
    assert healthy_since(10.1, 10.6, started=11.0, answered=17.0, gap=gap) == 17.0  # read hung 6 s
    assert healthy_since(10.1, 10.6, started=16.9, answered=17.0, gap=gap) == 17.0  # no read for 6 s


def test_the_stall_gap_keeps_a_held_up_worker_within_its_deadline():
    for dead_after, interval in ((3.0, 1.0), (1.5, 0.2), (10.0, 1.0)):
        gap = stall_gap(dead_after, interval)
        assert gap >= 2 * TICK
        assert interval + gap < dead_after
