"""The pure parts of make multihost's judgement: when a leader's log says it stopped, jobs lost and run twice."""

from __future__ import annotations

import json
from pathlib import Path

from devtools.chaos_checks import AttemptFact, Facts, JobFact
from devtools.multihost_load import lost_and_twice
from devtools.multihost_scenarios import stopped_leading


def log(path: Path, *entries: tuple[str, str]) -> Path:
    path.write_text("".join(json.dumps({"ts": ts, "level": "info", "msg": msg}) + "\n" for ts, msg in entries))
    return path


def test_the_stop_is_the_deadline_the_leader_states_not_its_later_log_line(tmp_path: Path) -> None:
    path = log(
        tmp_path / "server.log",
        ("2026-12-02T10:15:20.000Z", "elected leader (term token 2, lease 1, ttl 3s)"),
        ("2026-12-02T10:15:22.117Z", "etcd unavailable (Deadline Exceeded); retrying in 0.2s, still leading for 0.4s"),
        ("2026-12-02T10:15:23.322Z", "no longer leader (term token 2)"),
    )
    stopped = stopped_leading(path, since=0)
    assert stopped is not None
    assert abs(stopped[0] - (1796206522.117 + 0.4)) < 0.01
    # before the cut (since) nothing counts
    assert stopped_leading(path, since=1796206524) is None


def test_without_a_stated_deadline_the_first_end_of_term_line_counts(tmp_path: Path) -> None:
    path = log(
        tmp_path / "server.log",
        ("2026-12-02T10:15:23.000Z", "etcd unavailable (Deadline Exceeded); retrying in 0.4s"),
        ("2026-12-02T10:15:23.533Z", "leader term 2 over"),
        ("2026-12-02T10:15:24.000Z", "no longer leader (term token 2)"),
    )
    assert stopped_leading(path, since=0) == (1796206523.533, "leader term 2 over")


def test_lost_and_run_twice_count_only_the_scenarios_jobs() -> None:
    jobs = [
        JobFact("a", "sleep", "SUCCEEDED", 5),
        JobFact("b", "sleep", "RUNNING", 5),
        JobFact("c", "sleep", "SUCCEEDED", 5),
        JobFact("d", "sleep", "QUEUED", 5),
    ]
    attempts = [
        AttemptFact("a", 1, ""),
        AttemptFact("b", 1, ""),
        AttemptFact("c", 1, "worker lost"),
        AttemptFact("c", 2, ""),
    ]
    lines = [
        "a 1 start 10.0",
        "a 1 end 11.0",
        "c 1 start 10.0",
        "c 2 start 10.5",
        "c 2 end 11.0",
        "c 1 end 11.5",  # two attempts at once
        "d 1 start 10.0",
        "d 1 start 12.0",
    ]  # not this scenario's
    facts = Facts(jobs=jobs, attempts=attempts, log_lines=lines, dlq=[], submitted=5)
    key_of = {"a": "k-a", "b": "k-b", "c": "k-c", "d": "k-d"}
    lost, twice, _ = lost_and_twice(facts, ["k-a", "k-b", "k-c", "k-never-stored"], key_of)
    assert lost == 2  # b did not succeed; k-never-stored has no job
    assert twice == 1  # c's attempts overlapped; d is not among these keys
