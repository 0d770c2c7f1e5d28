"""Redis, PostgreSQL and etcd started locked, as ``make start`` runs them: passwords from files, the
etcd user limited to its prefix, the PostgreSQL role no superuser, and a job run end to end by a
server and a worker that log in with the ``*_FILE`` settings."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import aetcd
import aetcd.exceptions
import asyncpg
import pytest
import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devtools import services as svc
from jobcluster import keys
from jobcluster import queue as queue_mod
from jobcluster.aio import retrying
from jobcluster.credentials import EtcdAuth, LoginRefused, etcd_auth
from jobcluster.election import Election, read_leader
from jobcluster.errors import POSTGRES_ERRORS
from jobcluster.etcd_client import etcd_client, etcd_tls
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.queue import Queue
from jobcluster.settings import Settings
from jobcluster.store import Store
from scheduler_server.server import SchedulerServer
from tests.helpers import wait_for
from worker.worker import Worker

PREFIX = "/locked/"


@pytest.fixture(scope="module")
def locked() -> Iterator[dict[str, svc.Service]]:
    """Private services with passwords on; the etcd user may touch only keys under PREFIX."""
    root = Path(tempfile.mkdtemp(prefix="jobcluster-locked-"))
    os.chmod(root, 0o755)  # the postgres user must reach its data directory
    try:
        with svc.private_services(root, pg_settings={"fsync": "off"}, locked=True, etcd_prefix=PREFIX) as started:
            yield started
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _login(service: svc.Service) -> svc.Login:
    assert service.login is not None
    return service.login


@pytest.fixture
def locked_settings(settings: Settings, locked: dict[str, svc.Service]) -> Settings:
    """The test settings, pointed at the locked services with their ``*_FILE`` logins."""
    return replace(
        settings,
        database_url=locked["postgres"].url,
        database_password_file=str(_login(locked["postgres"]).password_file),
        redis_addr=locked["redis"].url,
        redis_user=_login(locked["redis"]).user,
        redis_password_file=str(_login(locked["redis"]).password_file),
        etcd_endpoints=(locked["etcd"].url,),
        etcd_user=_login(locked["etcd"]).user,
        etcd_password_file=str(_login(locked["etcd"]).password_file),
        **etcd_tls_settings(locked["etcd"]),
        election_namespace=f"{PREFIX}{uuid.uuid4().hex[:12]}",
    )


def etcd_tls_settings(etcd: svc.Service) -> dict[str, str]:
    """etcd_ca, etcd_cert and etcd_key of the programs' certificate for this (locked) etcd."""
    assert etcd.tls is not None, "a locked etcd speaks TLS"
    return {k.lower(): v for k, v in etcd.tls.etcd_client_env().items()}


def _etcd(service: svc.Service, user: str | None = None, password: str | None = None) -> aetcd.Client:
    """A client of ``service`` (with the programs' certificate when it is locked), as ``user`` if given."""
    host, port = service.url.split(":")
    auth = EtcdAuth(user, password) if user is not None and password is not None else None
    return etcd_client(host, int(port), 3, auth, service.tls.etcd_client_tls() if service.tls else None)


# --- each service refuses a wrong or missing password ------------------------------------------


async def test_postgresql_refuses_no_or_a_wrong_password_and_the_role_is_no_superuser(locked) -> None:
    pg = locked["postgres"]
    for password in (None, "wrong"):
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(pg.url, password=password, timeout=5)
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):  # the superuser has no TCP login
        await asyncpg.connect(pg.url.replace("jobcluster@", "postgres@"), password="", timeout=5)
    conn = await asyncpg.connect(pg.url, password=_login(pg).password, timeout=5)
    try:
        assert (
            await conn.fetchval(
                "SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
            )
            is False
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("COPY (SELECT 1) TO PROGRAM 'true'")
    finally:
        await conn.close()


def test_redis_refuses_no_or_a_wrong_password_and_dangerous_commands(locked) -> None:
    port = locked["redis"].port
    with pytest.raises(redis.AuthenticationError):  # (no retries: redis-py retries a refusal for ~3 s)
        redis.Redis(port=port, username="jobcluster", password="wrong", retry=Retry(NoBackoff(), 0)).ping()
    # No password, or the default user (password-less: any password logs in): the queue lists' reader only.
    for user, password in ((None, None), ("default", _login(locked["redis"]).password)):
        reader = redis.Redis(port=port, username=user, password=password, retry=Retry(NoBackoff(), 0))
        assert reader.ping()
        for command in (("SET", "x", "1"), ("GET", "x"), ("LPUSH", "dlq_tasks", "x"), ("KEYS", "*")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                reader.execute_command(*command)
    r = redis.Redis(port=port, username="jobcluster", password=_login(locked["redis"]).password)
    assert r.ping()
    for command in (("CONFIG", "SET", "dir", "/tmp"), ("FLUSHALL",), ("MODULE", "LIST"), ("ACL", "LIST")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.execute_command(*command)


async def test_etcd_refuses_a_wrong_password_and_a_client_without_a_user(locked) -> None:
    etcd = locked["etcd"]
    with pytest.raises(aetcd.exceptions.ClientError, match="authentication failed"):
        async with _etcd(etcd, "jobcluster", "wrong") as client:
            await client.get(f"{PREFIX}x".encode())
    # Without a user, etcd takes the certificate's CN (etcd-client) as the user name: no such user.
    async with _etcd(etcd) as anonymous:
        with pytest.raises(aetcd.exceptions.ClientError, match="permission denied"):
            await anonymous.put(f"{PREFIX}leader".encode(), b"me")
        with pytest.raises(aetcd.exceptions.ClientError, match="permission denied"):
            await anonymous.get(f"{PREFIX}leader".encode())


async def test_the_etcd_user_writes_only_under_its_prefix(locked) -> None:
    async with _etcd(locked["etcd"], "jobcluster", _login(locked["etcd"]).password) as client:
        await client.put(f"{PREFIX}ok".encode(), b"1")
        for key in ("/outside", PREFIX.rstrip("/"), PREFIX.rstrip("/") + "x/leader", "/scheduler/v1/leader"):
            with pytest.raises(aetcd.exceptions.ClientError, match="permission denied"):
                await client.put(key.encode(), b"me")


# --- the programs' connect code with the *_FILE settings -------------------------------------


async def test_a_real_election_with_the_limited_etcd_user(locked_settings: Settings) -> None:
    s = locked_settings
    auth, tls = etcd_auth(s), etcd_tls(s)
    assert auth is not None and auth.user == "jobcluster" and "password" not in repr(auth)
    assert tls is not None and "PRIVATE KEY" not in repr(tls)
    election = Election(
        s.etcd_endpoints,
        s.election_namespace,
        s.election_key,
        s.lease_ttl,
        identity="locked-1",
        address="locked-1",
        auth=auth,
        tls=tls,
    )
    election.start()
    try:
        await wait_for(election.leading, timeout=10, what="elected with the limited user")
        leader = await read_leader(s.etcd_endpoints, s.election_namespace, s.election_key, auth=auth, tls=tls)
        assert leader is not None and leader.identity == "locked-1" and leader.token == election.token
        with pytest.raises(aetcd.exceptions.ClientError, match="permission denied"):  # the certificate, no user
            await read_leader(s.etcd_endpoints, s.election_namespace, s.election_key, tls=tls)
    finally:
        await election.resign()
    assert await read_leader(s.etcd_endpoints, s.election_namespace, s.election_key, auth=auth, tls=tls) is None


async def test_election_outside_the_users_prefix_is_refused_and_never_leads(locked_settings: Settings, caplog) -> None:
    s = replace(locked_settings, election_namespace="/elsewhere")
    election = Election(
        s.etcd_endpoints,
        s.election_namespace,
        s.election_key,
        s.lease_ttl,
        identity="x",
        auth=etcd_auth(s),
        tls=etcd_tls(s),
    )
    election.start()
    try:
        await wait_for(
            lambda: "etcd unavailable (etcdserver: permission denied)" in caplog.text, what="the campaign refused"
        )
        assert not election.leading()
    finally:
        await election.resign()


@pytest.fixture
async def locked_server(locked_settings: Settings) -> AsyncIterator[SchedulerServer]:
    from devtools.services import free_port

    server = SchedulerServer(replace(locked_settings, server_port=free_port()))
    await server.start()
    await wait_for(lambda: server.store is not None, timeout=15, what="server connected to PostgreSQL")
    yield server
    await server.stop()


async def test_server_and_worker_run_a_job_with_the_file_logins(locked_settings, locked_server) -> None:
    import grpc

    from jobcluster.pb import scheduler_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(locked_server.address) as channel:
        stub = pb_grpc.JobServiceStub(channel)
        job = await stub.SubmitJob(pb.Job(command="echo locked"))
        store = await Store.connect(locked_settings)
        redis_client = queue_mod.connect_from(locked_settings)
        try:
            await Worker(replace(locked_settings, worker_id="locked-w"), store, Queue(redis_client), burst=True).run()
        finally:
            await redis_client.aclose()
            await store.close()
        done = await stub.GetJobStatus(pb.JobId(id=job.job_id))
        assert (done.status, done.output) == ("SUCCEEDED", "locked\n")
        assert locked_server.election is not None
        await wait_for(locked_server.election.leading, timeout=10, what="the server leads with the etcd user")
        info = await stub.GetClusterInfo(pb.ClusterInfoRequest())
        assert (info.election, info.leader) == ("etcd", locked_server.address)


async def test_a_password_inside_the_urls_works_too(locked, locked_settings: Settings) -> None:
    pg_password, redis_password = _login(locked["postgres"]).password, _login(locked["redis"]).password
    s = replace(
        locked_settings,
        database_password_file="",
        redis_password_file="",
        redis_user="",
        database_url=locked["postgres"].url.replace("jobcluster@", f"jobcluster:{pg_password}@"),
        redis_addr=f"redis://jobcluster:{redis_password}@{locked['redis'].url}",
    )
    store = await Store.connect(s)
    client = queue_mod.connect_from(s)
    try:
        assert await store.pool.fetchval("SELECT current_user") == "jobcluster"
        assert await client.ping()
    finally:
        await client.aclose()
        await store.close()


async def test_a_wrong_password_file_is_retried_until_it_is_corrected(
    locked, locked_settings, tmp_path, caplog
) -> None:
    """A refused login is LoginRefused (an outage to the retry loop), and each try re-reads the file."""
    password_file = tmp_path / "pg_password"
    password_file.write_text("wrong\n")
    password_file.chmod(0o600)
    s = replace(locked_settings, database_password_file=str(password_file))
    with pytest.raises(LoginRefused, match="refused user jobcluster.*DATABASE_PASSWORD_FILE"):
        await Store.connect(s)
    connecting = asyncio.create_task(
        retrying(
            lambda: Store.connect(s),
            what="connect",
            errors=POSTGRES_ERRORS,
            first_delay=0.05,
            max_delay=0.2,
            log=logging.getLogger("t"),
        )
    )
    await wait_for(lambda: "PostgreSQL unavailable (PostgreSQL at" in caplog.text, what="the refusal logged")
    assert not connecting.done()
    password_file.write_text(_login(locked["postgres"]).password + "\n")
    async with asyncio.timeout(10):
        store = await connecting
    await store.close()


def test_a_program_stops_at_start_when_a_password_file_is_missing(tmp_path) -> None:
    env = {"PATH": os.environ["PATH"], "DATABASE_PASSWORD_FILE": str(tmp_path / "missing")}
    done = subprocess.run(
        [sys.executable, "-m", "worker", "--burst"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2, done.stderr
    assert f"configuration error: DATABASE_PASSWORD_FILE={tmp_path / 'missing'}: cannot read" in done.stderr


async def test_a_password_file_others_can_read_is_used_with_a_warning(
    locked, locked_settings, tmp_path, caplog
) -> None:
    shared = tmp_path / "redis_password"
    shared.write_text(_login(locked["redis"]).password + "\n")
    shared.chmod(0o644)
    client: aioredis.Redis = queue_mod.connect_from(replace(locked_settings, redis_password_file=str(shared)))
    try:
        assert await client.ping()
    finally:
        await client.aclose()
    assert f"REDIS_PASSWORD_FILE={shared} can be read by group or others (mode 644): chmod 600" in caplog.text


# --- a .run from an older make start (no passwords) is locked in place -------------------------


@pytest.fixture
def old_run() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="jobcluster-oldrun-"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


async def test_an_open_postgresql_from_an_older_version_is_locked_and_keeps_its_data(old_run: Path) -> None:
    # The starters are blocking (and run their own event loop): off this test's loop.
    pg = await asyncio.to_thread(svc.start_postgres, old_run / "pg", svc.free_port(), old_run / "pg.log")  # trust
    try:
        old = await Store.connect(replace(Settings(), database_url=pg.url))  # as postgres: it owns everything
        await old.pool.execute("UPDATE leader_fence SET holder = 'from the old version'")
        await old.close()
    finally:
        pg.stop()
    login = svc.Login("jobcluster", old_run / "secrets" / "postgres_password")
    pg = await asyncio.to_thread(svc.start_postgres, old_run / "pg", svc.free_port(), old_run / "pg.log", login=login)
    try:
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):  # trust is gone
            await asyncpg.connect(pg.url.replace("jobcluster@", "postgres@"), timeout=5)
        store = await Store.connect(
            replace(Settings(), database_url=pg.url, database_password_file=str(login.password_file))
        )
        try:
            assert await store.pool.fetchval("SELECT holder FROM leader_fence") == "from the old version"
            owners = await store.pool.fetch(
                "SELECT DISTINCT pg_get_userbyid(relowner) AS owner FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'S', 'v') UNION "
                "SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
            )
            assert [r["owner"] for r in owners] == ["jobcluster"]
            await store.pool.execute("CREATE TABLE a_later_migration (id int)")  # the role owns the schema's use
        finally:
            await store.close()
    finally:
        pg.stop()


@pytest.mark.long("an upgrade path: two etcd starts over an older data directory: ~4 s")
async def test_an_open_etcd_from_an_older_version_gets_auth_and_a_second_start_keeps_it(old_run: Path) -> None:
    port, peer = svc.free_port(), svc.free_port()
    etcd = await asyncio.to_thread(svc.start_etcd, old_run / "etcd", port, peer, old_run / "etcd.log")
    try:
        async with _etcd(etcd) as client:
            await client.put(b"/scheduler/v1/old", b"kept")
    finally:
        etcd.stop()
    users = svc.EtcdUsers(
        old_run / "secrets" / "etcd_root_password",
        svc.Login("jobcluster", old_run / "secrets" / "etcd_password"),
        "/scheduler/v1/",
        old_run / "etcd-tls",
    )
    for _ in range(2):  # the second start finds auth on and logs in as root
        etcd = await asyncio.to_thread(svc.start_etcd, old_run / "etcd", port, peer, old_run / "etcd.log", users=users)
        try:
            async with _etcd(etcd, "jobcluster", users.login.password) as client:
                assert (await client.get(b"/scheduler/v1/old")).value == b"kept"
            async with _etcd(etcd) as anonymous:
                with pytest.raises(aetcd.exceptions.ClientError, match="permission denied"):
                    await anonymous.get(b"/scheduler/v1/old")
        finally:
            etcd.stop()


@pytest.mark.parametrize("locked_mode", [False, True])
def test_starting_postgresql_twice_leaves_no_fatal_line_in_its_log(locked_mode: bool) -> None:
    """A first start and a restart say nothing alarming: the readiness probe once left
    'FATAL: role "root" does not exist' in the log at every start."""
    root = Path(tempfile.mkdtemp(prefix="jobcluster-pglog-"))
    os.chmod(root, 0o755)
    try:
        login = svc.Login("jobcluster", root / "secrets" / "pw") if locked_mode else None
        if login:
            login.password_file.parent.mkdir(mode=0o700)
        for _ in range(2):
            svc.start_postgres(
                root / "pg", svc.free_port(), root / "pg.log", login=login, settings={"fsync": "off"}
            ).stop()
        text = (root / "pg.log").read_text()
        assert "database system is ready to accept connections" in text
        assert "FATAL" not in text and "ERROR" not in text, text
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_stop_that_times_out_leaves_no_process_of_postgresql_behind(old_run: Path) -> None:
    """A stop escalates to kill -9 after its timeout. A postmaster killed alone left its children running on
    its shared memory, so the next start on that data failed ('pre-existing shared memory block is still in
    use'): CI once, when a shutdown checkpoint's fsyncs outlasted the 10 s. Here the checkpointer is held
    (SIGSTOP), as a slow fsync holds it, and the stop times out."""
    pg = svc.start_postgres(old_run / "pg", svc.free_port(), old_run / "pg.log", settings={"fsync": "off"})
    children = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat") if _parent(p) == pg.pid]
    checkpointer = next(pid for pid in children if b"checkpointer" in Path(f"/proc/{pid}/cmdline").read_bytes())
    os.kill(checkpointer, signal.SIGSTOP)
    pg.stop(timeout=1.0)
    assert not [pid for pid in children if _running(pid)]
    svc.start_postgres(old_run / "pg", svc.free_port(), old_run / "pg.log", settings={"fsync": "off"}).stop()


def _parent(stat: Path) -> int:
    try:
        return int(stat.read_bytes().rsplit(b")", 1)[1].split()[1])
    except OSError:  # ended meanwhile
        return 0


def _running(pid: int) -> bool:
    """Alive and not a zombie (this sandbox's pid 1 reaps no orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _plain_redis_cli(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``redis-cli`` as someone on the machine types it: no user, no password (REDISCLI_AUTH unset)."""
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, env=env, timeout=10)


def test_plain_redis_cli_reads_the_queue_lists_and_nothing_else(locked) -> None:
    """The mission's ``redis-cli LRANGE dlq_tasks 0 -1`` works without a password; every write, every
    other key and every command that reaches more than those lists still needs it."""
    port = locked["redis"].port
    app = redis.Redis(
        port=port, username="jobcluster", password=_login(locked["redis"]).password, decode_responses=True
    )
    app.delete(keys.DLQ, keys.PENDING, keys.processing("w1"), "secret:thing")
    app.lpush(keys.DLQ, "dead-1", "dead-2")
    app.lpush(keys.PENDING, "ready-1")
    app.lpush(keys.processing("w1"), "running-1")
    app.lpush(keys.lane("night", 3), "lane-1")
    app.set("secret:thing", "x")
    try:
        assert _plain_redis_cli(port, "LRANGE", "dlq_tasks", "0", "-1").stdout.split() == ["dead-2", "dead-1"]
        assert _plain_redis_cli(port, "LRANGE", "pending_jobs", "0", "-1").stdout.split() == ["ready-1"]
        assert _plain_redis_cli(port, "LLEN", "dlq_tasks").stdout.strip() == "2"
        assert _plain_redis_cli(port, "LRANGE", keys.processing("w1"), "0", "-1").stdout.split() == ["running-1"]
        assert _plain_redis_cli(port, "LINDEX", keys.lane("night", 3), "0").stdout.strip() == "lane-1"
        refused = [
            ("LPUSH", "dlq_tasks", "x"),
            ("DEL", "dlq_tasks"),
            ("LPOP", "pending_jobs"),
            ("RPOPLPUSH", "dlq_tasks", "dlq_tasks"),
            ("GET", "secret:thing"),
            ("KEYS", "*"),
            ("SCAN", "0"),
            ("CONFIG", "GET", "dir"),
            ("EVAL", "return 1", "0"),
            ("FLUSHALL",),
            ("INFO",),
            ("ZRANGE", keys.WORKERS, "0", "-1"),
            ("LRANGE", "secret:thing", "0", "-1"),
            ("CLIENT", "LIST"),
            ("ACL", "WHOAMI"),
            ("SUBSCRIBE", "x"),
        ]
        for command in refused:
            out = _plain_redis_cli(port, *command)
            assert "NOPERM" in out.stdout + out.stderr, (command, out.stdout, out.stderr)
        assert app.lrange(keys.DLQ, 0, -1) == ["dead-2", "dead-1"] and app.get("secret:thing") == "x"
    finally:
        app.delete(keys.DLQ, keys.PENDING, keys.processing("w1"), keys.lane("night", 3), "secret:thing")
        app.close()


@pytest.mark.long("restarts a Redis from its append-only file: ~4 s")
async def test_a_restart_from_the_append_only_file_keeps_every_list_whole(tmp_path: Path) -> None:
    """Redis as make start runs it (append-only file, the final ACL) keeps every list through a restart:
    1,000 dead letters made over time by the workers' own script, a processing list, the delayed set,
    pending_jobs. Redis 7.0.15 replays the file as the default user; restricted, it dropped every
    multi-write script (16,486 CRITICAL lines, dlq_tasks empty after make stop && make start)."""
    data, log = tmp_path / "redis", tmp_path / "redis.log"
    login = svc.Login("jobcluster", tmp_path / "secrets" / "redis_password")
    port = svc.free_port()

    def start() -> svc.Service:
        return svc.start_redis(data, port, log, persist=True, login=login)

    async def lists(q: Queue) -> dict[str, object]:
        r = q.redis
        return {
            "dlq": await r.lrange(keys.DLQ, 0, -1),
            "pending": await r.lrange(keys.PENDING, 0, -1),
            "processing": await r.lrange(keys.processing("w1"), 0, -1),
            "delayed": await r.zrange(keys.DELAYED, 0, -1, withscores=True),
        }

    service = start()
    try:
        q = Queue(aioredis.Redis(port=port, username=login.user, password=login.password, decode_responses=True))
        for n in range(1000):  # as workers dead-letter: take into a processing list, then the script
            await q.jobs.enqueue(f"dead-{n:04}")
            assert await q.jobs.dequeue("w1", timeout=1) == f"dead-{n:04}"
            await q.jobs.dead_letter("w1", f"dead-{n:04}")
        await q.jobs.enqueue("ready")
        await q.jobs.enqueue("running")
        await q.jobs.enqueue("later", due_ms=4_000_000_000_000)
        assert await q.jobs.dequeue("w1", timeout=1) == "ready"  # FIFO: 'ready' first, back to pending
        await q.jobs.requeue_front("w1", "ready")
        before = await lists(q)
        assert before["dlq"] == [f"dead-{n:04}" for n in reversed(range(1000))]
        assert len(before["pending"]) == 2 and before["delayed"]
        await q.redis.aclose()
    finally:
        service.stop()  # SIGTERM, as make stop
    service = start()
    try:
        q = Queue(aioredis.Redis(port=port, username=login.user, password=login.password, decode_responses=True))
        assert await lists(q) == before
        await q.redis.aclose()
        assert _plain_redis_cli(port, "LLEN", "dlq_tasks").stdout.strip() == "1000"  # the final ACL holds
    finally:
        service.kill()  # and kill -9: the file is replayed the same way
    service = start()
    try:
        assert _plain_redis_cli(port, "LLEN", "dlq_tasks").stdout.strip() == "1000"
    finally:
        service.stop()
    text = log.read_text()
    assert "CRITICAL" not in text and "NOPERM" not in text, text[-2000:]
