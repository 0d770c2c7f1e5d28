import json
import re
import sys

import pytest

from client import __main__ as client_main
from client import display
from client.jobsfile import JobEntry, JobsFileError, parse_jobs, parse_run_at
from client.servers import resolve

ORIGINAL = {
    "jobs": [
        {"name": "a", "command": "ls -la", "description": "list"},
        {"name": "b", "command": "echo hi", "description": "say hi"},
    ]
}


def test_original_format_works_as_is():
    entries = parse_jobs(json.dumps(ORIGINAL))
    assert [(e.name, e.command, e.description) for e in entries] == [
        ("a", "ls -la", "list"),
        ("b", "echo hi", "say hi"),
    ]
    assert entries[0].max_retries is None and entries[0].timeout_seconds is None


def test_bare_list_and_optional_fields():
    entries = parse_jobs(
        json.dumps(
            [
                {
                    "command": "true",
                    "max_retries": 0,
                    "timeout": "1m",
                    "run_at": "2030-01-01T00:00:00Z",
                    "idempotency_key": "k1",
                },
                {"command": "true", "timeout": 2.5, "run_at": 1893456000},
            ]
        )
    )
    assert entries[0].max_retries == 0 and entries[0].timeout_seconds == 60.0
    assert entries[0].run_at_ms == 1893456000000 == entries[1].run_at_ms
    assert entries[0].idempotency_key == "k1" and entries[1].timeout_seconds == 2.5


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("{not json", "invalid JSON at line 1"),
        ('{"jobs": {}}', "must be a list"),
        ('{"tasks": []}', "expected"),
        ("[]", "no jobs"),
        ('[{"name": "x"}]', "job 1 ('x'): \"command\" must be a non-empty string"),
        ('[{"command": "ok"}, {"command": 5}]', 'job 2: "command"'),
        ('[{"command": "ok", "max_retries": "3"}]', "max_retries"),
        ('[{"command": "ok", "max_retries": -1}]', "max_retries"),
        ('[{"command": "ok", "max_retries": true}]', "max_retries"),
        ('[{"command": "ok", "timeout": "soon"}]', "timeout"),
        ('[{"command": "ok", "run_at": "tomorrow"}]', "ISO 8601"),
        ('[{"command": "ok", "comand": "typo"}]', "unknown field(s) comand"),
        ('["ls"]', "must be an object"),
        ('[{"command": "a\\u0000b"}]', "NUL"),
    ],
)
def test_bad_files_name_the_entry(text, fragment):
    with pytest.raises(JobsFileError) as err:
        parse_jobs(text, "jobs.json")
    assert fragment in str(err.value)
    assert str(err.value).startswith("jobs.json")


def test_run_at_forms():
    assert parse_run_at(10) == 10000
    assert parse_run_at("1970-01-01T00:00:10") == 10000  # naive means UTC
    assert parse_run_at("1970-01-01T01:00:10+01:00") == 10000


def test_server_resolution_order(tmp_path):
    servers_file = tmp_path / ".servers"
    servers_file.write_text("h:1\nh:2\n")
    f = str(servers_file)
    assert resolve(None, None, None, {}, f) == (["h:1", "h:2"], ["h:1", "h:2"])
    assert resolve(None, None, None, {}, str(tmp_path / "none")) == (["localhost:50051"], ["localhost:50051"])
    assert resolve(None, None, None, {"SERVERS": "e:1"}, f) == (["e:1"], ["e:1"])
    assert resolve("x:1,y:2", None, None, {"SERVERS": "e:1"}, f) == (["x:1", "y:2"], ["x:1", "y:2"])
    env = {"SUBMIT_SERVER": "s:1", "STATUS_SERVERS": "t:1,t:2"}
    assert resolve(None, None, None, env, f) == (["s:1"], ["t:1", "t:2"])
    assert resolve(None, "S:9", "T:9", env, f) == (["S:9"], ["T:9"])


def test_cron_entries_become_schedules():
    from client.jobsfile import parse_jobs

    entries = parse_jobs(
        '{"jobs": [{"name": "tick", "command": "date", "cron": "*/5 * * * *", '
        '"timezone": "Europe/Paris", "overlap": "forbid"}, {"command": "true"}]}'
    )
    assert entries[0].cron == "*/5 * * * *" and entries[0].timezone == "Europe/Paris" and not entries[1].cron


@pytest.mark.parametrize(
    "entry, fragment",
    [
        ('{"command": "date", "cron": "* * * * *"}', 'needs a "name"'),
        ('{"name": "a", "command": "date", "timezone": "UTC"}', '"cron" is needed'),
        ('{"name": "a", "command": "date", "cron": "* * * * *", "run_at": 5}', "does not apply"),
        ('{"name": "a", "command": "date", "cron": "99 * * * *"}', "job 1 ('a'): invalid cron expression"),
        ('{"name": "a", "command": "date", "cron": "* * * * *", "timezone": "Mars/Base"}', "timezone"),
        ('{"name": "a", "command": "date", "cron": "* * * * *", "catchup": "all"}', "catchup must be one of"),
        ('{"name": "a", "command": "date", "cron": "* * * * *", "enabled": "yes"}', '"enabled" must be true or false'),
        ('{"name": "a", "command": "date", "enabled": false}', '"cron" is needed with enabled'),
    ],
)
def test_bad_cron_entries_are_named(entry, fragment):
    from client.jobsfile import JobsFileError, parse_jobs

    with pytest.raises(JobsFileError, match=re.escape(fragment)):
        parse_jobs(f"[{entry}]")


def test_batches_are_bounded_by_count_and_bytes():
    from client.__main__ import batches
    from jobcluster.limits import MAX_BATCH_BYTES

    entries = [JobEntry(command="true #" + "x" * 5000, name=f"j{n}") for n in range(1000)]
    cut = list(batches(entries))
    assert len(cut) > 1
    assert all(b.ByteSize() <= MAX_BATCH_BYTES and len(b.jobs) == len(c) for c, b in cut)
    assert [e for c, _ in cut for e in c] == entries  # all of them, in order
    small = list(batches([JobEntry(command="true")] * 2500))
    assert [len(c) for c, _ in small] == [1000, 1000, 500]
    huge = JobEntry(command="x" * (MAX_BATCH_BYTES + 10))
    assert [len(c) for c, _ in batches([huge, JobEntry(command="true")])] == [1, 1]  # never an empty batch


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-list", "-name", "x"], "-name goes with -cmd, not with -list"),
        (["-cmd", "true", "-limit", "3"], "-limit goes with -list, not with -cmd"),
        (["-status", "x", "-queue", "q"], "-queue goes with -cmd or -list, not with -status"),
        (["-dlq", "-no-wait"], "-no-wait goes with -cmd or -file or -run-schedule, not with -dlq"),
        (["-cmnd", "true"], "unknown flag: -cmnd (did you mean -cmd?)"),
    ],
)
def test_a_flag_the_mode_does_not_use_is_refused_not_ignored(argv, message, capsys):
    assert client_main.main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_bad_list_filter_does_not_claim_nothing_was_submitted(capsys):
    assert client_main.main(["-list", "-since", "yesterday"]) == 2
    err = capsys.readouterr().err
    assert "-since 'yesterday'" in err and "nothing was submitted" not in err


class _OneJob:
    """A Pool whose GetJobStatus answers ``job``."""

    def __init__(self, job):
        self.job = job

    def call(self, fn):
        class Stub:
            def GetJobStatus(stub, request, timeout):
                return self.job

        return fn(Stub()), "fake:1"


def test_status_caps_a_long_output_and_says_so_once_per_attempt_error(capsys):
    from jobcluster.pb import scheduler_pb2 as pb

    job = pb.JobStatus(id="j1", status="FAILED", output="".join(f"line {i}\n" for i in range(60_000)), exit_code=7)
    job.attempt_history.add(number=1, worker_id="w", exit_code=7, error="exit code 7")
    job.attempt_history.add(number=2, worker_id="w", exit_code=1, error="timed out after 1s")
    assert display.show_jobs(_OneJob(job), ["j1"], out=sys.stdout) == 0
    out = capsys.readouterr().out
    assert (
        len(out) < 100 * 1024 and "line 59999" in out
    )  # 64 KiB of output, each line indented and "line 0\n" not in out
    assert "KiB of 633 KiB shown; all of it: -json" in out
    assert "exit 7\n" in out and "exit code 7" not in out  # not "exit 7, exit code 7"
    assert "exit 1, timed out after 1s" in out
