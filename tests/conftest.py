"""Real Redis, PostgreSQL and etcd for the whole test session, on free loopback ports."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

# Before anything imports grpc: its fork handlers crash about 1 in 70 children forked by a process
# that also serves gRPC (as these tests do: a server and workers in one process, and helpers that start
# processes as other users, which subprocess forks rather than vforks).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest

from devtools import services as svc
from devtools.job_user import JOB_USER, ensure_job_user
from jobcluster import queue as queue_mod
from jobcluster.queue import Queue
from jobcluster.settings import Settings
from jobcluster.store import Store


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Jobs run as JOB_USER, and many tests hand them a file in tmp_path; pytest's own base
    # (/tmp/pytest-of-root, 0700, reset by every session) is closed to that user, so use one of ours.
    if os.geteuid() == 0 and config.option.basetemp is None:
        parent = Path(tempfile.mkdtemp(prefix="jobcluster-pytest-"))
        os.chmod(parent, 0o711)
        config.option.basetemp = str(parent / "tmp")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test left out of make test (``long``) says why it is long: the reason is its one argument."""
    for item in items:
        for mark in item.iter_markers("long"):
            if len(mark.args) != 1 or not isinstance(mark.args[0], str) or not mark.args[0].strip():
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.long needs its reason, as one string")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    base = session.config.option.basetemp
    if exitstatus == 0 and base and Path(base).parent.name.startswith("jobcluster-pytest-"):
        shutil.rmtree(Path(base).parent, ignore_errors=True)


@pytest.fixture(scope="session")
def job_user() -> str:
    """JOB_USER for the tests' workers: as root, jobcluster-job (created when missing), as make start does."""
    if os.geteuid() != 0:
        return ""
    ensure_job_user(JOB_USER)
    return JOB_USER


@pytest.fixture(autouse=True)
def _jobs_may_write_in_tmp_path(request: pytest.FixtureRequest) -> None:
    """A test with workers (``settings``) that hands its jobs a file in tmp_path: the job user may write there."""
    if "settings" not in request.fixturenames or "tmp_path" not in request.fixturenames:
        return
    name = request.getfixturevalue("job_user")
    if name:
        tmp_path: Path = request.getfixturevalue("tmp_path")
        os.chmod(tmp_path.parent, 0o711)
        user = pwd.getpwnam(name)
        os.chown(tmp_path, user.pw_uid, user.pw_gid)


@pytest.fixture(scope="session")
def service_root() -> Iterator[Path]:
    # Not under /tmp/pytest-of-root: the postgres user must be able to enter it.
    root = Path(tempfile.mkdtemp(prefix="jobcluster-test-"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def services(service_root: Path) -> Iterator[dict[str, svc.Service]]:
    # pg_stat_statements: tests count the statements a feature sends (tests/integration/test_watch.py).
    pg_settings = {"fsync": "off", "synchronous_commit": "off", "shared_preload_libraries": "pg_stat_statements"}
    with svc.private_services(service_root, pg_settings=pg_settings) as started:
        yield started


@pytest.fixture
def settings(services: dict[str, svc.Service], job_user: str, service_root: Path) -> Settings:
    """Settings pointing at the test services, with short timings so tests run fast."""
    return replace(
        Settings(),
        job_user=job_user,
        job_workdir_root=str(service_root / "jobs"),
        database_url=services["postgres"].url,
        redis_addr=services["redis"].url,
        etcd_endpoints=(services["etcd"].url,),
        # Each test elects in its own namespace: no leader key left by another test.
        election_namespace=f"/test/{uuid.uuid4().hex[:12]}",
        lease_ttl=2.0,
        worker_dead_after=1.5,
        reconcile_after=1.0,
        pg_min_conns=1,
        pg_max_conns=10,
        heartbeat_interval=0.2,
        worker_shutdown_grace=5.0,
        worker_concurrency=4,
        job_kill_grace=1.0,
        retry_backoff_base=0.05,
        retry_backoff_max=0.2,
        job_output_limit=64 * 1024,
        # tests/e2e/test_leader.py fires an every-3s schedule
        cron_min_interval=1.0,
        log_level="INFO",
    )


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a subprocess these settings (nothing read from .env)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "TMPDIR")}
    env.update(
        {
            "DATABASE_URL": settings.database_url,
            "REDIS_ADDR": settings.redis_addr,
            "ETCD_ENDPOINTS": ",".join(settings.etcd_endpoints),
            "LEASE_TTL": f"{settings.lease_ttl}s",
            "ELECTION_NAMESPACE": settings.election_namespace,
            "WORKER_DEAD_AFTER": f"{settings.worker_dead_after}s",
            "RECONCILE_AFTER": f"{settings.reconcile_after}s",
            "HEARTBEAT_INTERVAL": f"{settings.heartbeat_interval}s",
            "WORKER_SHUTDOWN_GRACE": f"{settings.worker_shutdown_grace}s",
            "WORKER_CONCURRENCY": str(settings.worker_concurrency),
            "JOB_KILL_GRACE": f"{settings.job_kill_grace}s",
            "RETRY_BACKOFF_BASE": f"{settings.retry_backoff_base}s",
            "RETRY_BACKOFF_MAX": f"{settings.retry_backoff_max}s",
            "JOB_OUTPUT_LIMIT": str(settings.job_output_limit),
            "JOB_USER": settings.job_user,
            "JOB_WORKDIR_ROOT": settings.job_workdir_root,
            "CRON_MIN_INTERVAL": f"{settings.cron_min_interval}s",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    """A store on an empty schema."""
    s = await Store.connect(settings)
    await s.pool.execute("TRUNCATE jobs, schedules, job_minutes, queue_samples CASCADE")
    await s.pool.execute("UPDATE leader_fence SET token = 0, holder = ''")
    yield s
    await s.close()


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[Queue]:
    """A queue on an empty Redis."""
    r = queue_mod.connect_from(settings)
    await r.flushdb()
    yield Queue(r)
    await r.aclose()
