import random

import pytest

from jobcluster.durations import parse_duration
from jobcluster.model import InvalidJob, retries_exhausted, retry_delay, validate_job
from jobcluster.settings import ConfigError, Settings
from jobcluster.sqlfile import load_queries, migrations, parse_named_blocks


def _job(**kw):
    base = dict(command="echo hi", default_max_retries=3, default_timeout=60.0, max_command_bytes=100)
    base.update(kw)
    return validate_job(**base)


@pytest.mark.parametrize(
    "text,seconds", [("10s", 10), ("500ms", 0.5), ("1m30s", 90), ("2h", 7200), ("1.5", 1.5), (3, 3.0), ("0", 0.0)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "10x", "-1", "s10", "10s5"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_defaults_filled():
    spec = _job()
    assert (spec.max_retries, spec.timeout_seconds) == (3, 60.0)
    spec = _job(max_retries=0, timeout_seconds=0)
    assert (spec.max_retries, spec.timeout_seconds) == (0, 0.0)


@pytest.mark.parametrize(
    "kw,fragment",
    [
        (dict(command=""), "empty"),
        (dict(command="   "), "empty"),
        (dict(command="x" * 101), "over the limit of 100 bytes"),
        (dict(command="echo a\x00b"), "NUL"),
        (dict(max_retries=-1), "max_retries must not be negative"),
        (dict(max_retries=1000), "at most"),
        (dict(timeout_seconds=-2.0), "timeout_seconds must not be negative"),
        (dict(timeout_seconds=float("nan")), "timeout_seconds"),
        (dict(run_at_ms=-5), "run_at_ms"),
        (dict(name="n" * 500), "name"),
    ],
)
def test_invalid_jobs_say_why(kw, fragment):
    with pytest.raises(InvalidJob, match=fragment):
        _job(**kw)


def test_command_limit_counts_bytes_not_characters():
    with pytest.raises(InvalidJob):
        _job(command="é" * 60)  # 120 bytes


def test_backoff_grows_with_jitter_and_is_capped():
    rng = random.Random(7)
    for attempt in range(1, 12):
        nominal = min(30.0, 1.0 * 2 ** (attempt - 1))
        d = retry_delay(attempt, 1.0, 30.0, rng)
        assert nominal / 2 <= d <= nominal
    assert len({retry_delay(3, 1.0, 30.0, rng) for _ in range(20)}) > 1


def test_retries_exhausted_counts_retries_after_the_first_attempt():
    assert not retries_exhausted(attempts=1, interruptions=0, max_retries=1)
    assert retries_exhausted(attempts=2, interruptions=0, max_retries=1)
    assert retries_exhausted(attempts=1, interruptions=0, max_retries=0)
    # an attempt cut short by a graceful shutdown does not use up a retry
    assert not retries_exhausted(attempts=2, interruptions=1, max_retries=1)


def test_settings_from_env_parses_and_names_bad_values():
    s = Settings.from_env(
        {"LEASE_TTL": "3s", "PG_MAX_CONNS": "5", "SERVERS": "a:1, b:2", "ETCD_ENDPOINTS": "", "JOB_OUTPUT_LIMIT": "1m"}
    )
    assert s.lease_ttl == 3.0 and s.pg_max_conns == 5 and s.servers == ("a:1", "b:2")
    assert s.etcd_endpoints == () and s.job_output_limit == 1024 * 1024
    assert Settings.from_env({}).etcd_endpoints == ("127.0.0.1:2379",)
    with pytest.raises(ConfigError, match="PG_MAX_CONNS"):
        Settings.from_env({"PG_MAX_CONNS": "many"})
    assert Settings.from_env({"JOB_MAX_COMMAND_BYTES": "131071"}).job_max_command_bytes == 131071
    with pytest.raises(ConfigError, match="JOB_MAX_COMMAND_BYTES must be at most 131071 bytes"):
        Settings.from_env({"JOB_MAX_COMMAND_BYTES": "128k"})
    with pytest.raises(ConfigError, match="LEASE_TTL"):
        Settings.from_env({"LEASE_TTL": "soon"})
    with pytest.raises(ConfigError, match="PG_MIN_CONNS"):
        Settings.from_env({"PG_MIN_CONNS": "9", "PG_MAX_CONNS": "2"})


def test_real_environment_wins_over_dotenv(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("REDIS_ADDR=from-file:1\nSERVER_PORT=6000\n")
    monkeypatch.setenv("REDIS_ADDR", "from-env:2")
    monkeypatch.delenv("SERVER_PORT", raising=False)
    s = Settings.from_env(dotenv_path=str(env_file))
    assert s.redis_addr == "from-env:2" and s.server_port == 6000


def test_named_sql_blocks():
    blocks = parse_named_blocks("-- name: a\n-- comment\nSELECT 1;\n\n-- name: b\nSELECT 2;\n")
    assert blocks == {"a": "SELECT 1", "b": "SELECT 2"}
    with pytest.raises(ValueError):
        parse_named_blocks("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")
    assert {"insert_job", "claim_job", "finish_attempt"} <= set(load_queries("jobs.sql"))
    assert {"recover_worker_jobs"} <= set(load_queries("liveness.sql"))
    assert [v for v, _ in migrations()][0] == "0001_jobs"


def test_each_store_module_has_its_sql_file_and_every_block_is_used():
    """One .sql file per store module, and no named block that no module runs (or two files define)."""
    import re
    from importlib import resources
    from pathlib import Path

    sql = resources.files("jobcluster.sql")
    files = sorted(f.name for f in sql.iterdir() if f.name.endswith(".sql"))
    store = Path(__file__).resolve().parents[2] / "jobcluster" / "store"
    modules = sorted(p.stem for p in store.glob("*.py") if p.stem not in ("__init__", "migrations"))
    assert [f.removesuffix(".sql") for f in files] == modules
    seen: dict[str, str] = {}
    for name in files:
        source = (store / f"{name.removesuffix('.sql')}.py").read_text()
        for block in load_queries(name):
            assert block not in seen, f"{block} is in both {seen[block]} and {name}"
            seen[block] = name
            assert re.search(rf'Q\["{block}"\]', source), f"{block} in {name} is never run"
