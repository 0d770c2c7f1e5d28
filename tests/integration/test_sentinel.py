"""Redis failover with Sentinel, against the real programs (jobcluster/queue/sentinel.py).

A primary, a replica and three sentinels on loopback (devtools/sentinel.py); a server
(and leader) and a worker started with REDIS_SENTINELS; jobs flowing while the primary is killed
with SIGKILL. The programs must follow the new primary, every accepted job must end SUCCEEDED
(ids the old primary lost come back by reconciliation from PostgreSQL) and none may run twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Self

import grpc
import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from devtools import lockdown
from devtools.sentinel import Member, SentinelGroup, start_group
from devtools.services import free_port
from jobcluster.errors import REDIS_ERRORS
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from jobcluster.queue import connect_from
from jobcluster.settings import ConfigError, Settings
from jobcluster.store import Store
from tests.e2e.conftest import Cluster
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(120)

APP_USER = "jobcluster"


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, Path]:
    """Password files (0600) of the programs' Redis user and of the sentinels."""
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    files = {name: folder / name for name in ("redis", "sentinel", "admin")}
    for path in files.values():
        lockdown.secret_file(path)
    return files


@pytest.fixture
def group(tmp_path: Path, secrets: dict[str, Path]) -> Iterator[SentinelGroup]:
    """Primary, replica, three sentinels, all with passwords: the programs log in as APP_USER."""
    g = start_group(
        tmp_path / "redis-ha",
        [Member("127.0.0.1", free_port()) for _ in range(2)],
        [Member("127.0.0.1", free_port()) for _ in range(3)],
        admin_password=lockdown.secret_file(secrets["admin"]),
        acl=lockdown.redis_acl(APP_USER, lockdown.secret_file(secrets["redis"])),
        sentinel_password=lockdown.secret_file(secrets["sentinel"]),
    )
    try:
        yield g
    finally:
        g.stop()


def _with_sentinels(settings: Settings, group: SentinelGroup, secrets: dict[str, Path]) -> Settings:
    return replace(
        settings,
        redis_sentinels=group.sentinel_addrs,
        redis_sentinel_master=group.master,
        redis_user=APP_USER,
        redis_password_file=str(secrets["redis"]),
        redis_sentinel_password_file=str(secrets["sentinel"]),
    )


class Submitter(threading.Thread):
    """Submits a job every ``every`` seconds until stopped; remembers when each accepted id was sent."""

    def __init__(self, address: str, command: str, every: float = 0.02) -> None:
        super().__init__(name="submitter", daemon=True)
        self.address, self.command, self.every = address, command, every
        self.sent: dict[str, float] = {}
        self.refused = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = pb_grpc.JobServiceStub(channel)
            while not self.stop.wait(self.every):
                at = time.monotonic()
                try:
                    self.sent[stub.SubmitJob(pb.Job(command=self.command), timeout=5).job_id] = at
                except grpc.RpcError:
                    self.refused += 1  # UNAVAILABLE during the failover (stored or not: PostgreSQL says)


def _runs(path: Path) -> Counter[str]:
    return Counter(path.read_text().split()) if path.exists() else Counter()


def test_redis_sentinels_setting() -> None:
    s = Settings.from_env({"REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380", "REDIS_SENTINEL_MASTER": "jc"})
    assert s.redis_sentinels == ("10.0.0.1:26379", "[::1]:26380") and s.redis_sentinel_master == "jc"
    assert Settings.from_env({}).redis_sentinel_master == "jobcluster"
    with pytest.raises(ConfigError, match="REDIS_SENTINELS must be host:port"):
        Settings.from_env({"REDIS_SENTINELS": "10.0.0.1"})


def test_sentinel_errors_count_as_redis_outages() -> None:
    from redis.asyncio.sentinel import MasterNotFoundError, SlaveNotFoundError

    assert issubclass(MasterNotFoundError, REDIS_ERRORS) and issubclass(SlaveNotFoundError, REDIS_ERRORS)


@pytest.mark.long("a Sentinel failover with real programs running: ~9 s of failover timers")
async def test_programs_follow_the_new_primary_and_lose_no_job(
    settings: Settings, store: Store, group: SentinelGroup, secrets: dict[str, Path], tmp_path: Path
) -> None:
    old = group.primary_addr()
    assert old is not None
    s = _with_sentinels(settings, group, secrets)
    sentinel_env = {
        "REDIS_SENTINELS": ",".join(s.redis_sentinels),
        "REDIS_SENTINEL_MASTER": s.redis_sentinel_master,
        "REDIS_USER": s.redis_user,
        "REDIS_PASSWORD_FILE": s.redis_password_file,
        "REDIS_SENTINEL_PASSWORD_FILE": s.redis_sentinel_password_file,
        # what a program without Sentinel support would keep using
        "REDIS_ADDR": old,
    }
    cluster = Cluster(replace(settings, redis_addr=old), tmp_path)
    runs = tmp_path / "runs"
    submitter: Submitter | None = None
    try:
        server, address = cluster.server(**sentinel_env)
        worker = cluster.worker("w1", **sentinel_env)
        submitter = Submitter(address, f'echo "$JOB_ID" >> {runs}')
        submitter.start()
        await wait_for(lambda: len(_runs(runs)) >= 10, timeout=30, what="10 jobs run before the kill")

        # Make the failover lose writes, as asynchronous replication can: the replica gets nothing the
        # primary takes from now on. Delayed jobs stay waiting (not taken by the worker at once), so their
        # ids are gone with the primary and only reconciliation from PostgreSQL can bring them back.
        group.starve_replicas()
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.JobServiceStub(channel)
            run_at = int(time.time() * 1000) + 2000
            delayed = [
                stub.SubmitJob(pb.Job(command=f'echo "$JOB_ID" >> {runs}', run_at_ms=run_at), timeout=5).job_id
                for _ in range(5)
            ]
        killed_at = time.monotonic()
        group.kill(group.primary_name())
        new = group.wait_failover(old)

        def ran_since_kill() -> float | None:
            ran = _runs(runs)
            after = [at for job_id, at in list(submitter.sent.items()) if at > killed_at and job_id in ran]
            return min(after) if after else None

        await wait_for(ran_since_kill, timeout=30, interval=0.02, what="a job submitted after the kill to run")
        recovered = time.monotonic() - killed_at
        print(
            f"\nRedis failover {old} -> {new}: jobs run again {recovered:.1f}s after SIGKILL of the primary "
            f"({submitter.refused} submits refused meanwhile)"
        )
        # keep submitting to the new primary for a while, then let everything settle
        await wait_for(lambda: time.monotonic() - killed_at > recovered + 2, timeout=10, what="more submits")
        submitter.stop.set()
        submitter.join(10)

        async def all_succeeded() -> bool:
            return not await store.pool.fetchval("SELECT count(*) FROM jobs WHERE status <> 'SUCCEEDED'")

        await wait_for(all_succeeded, timeout=30, what="every job SUCCEEDED")

        stored = {r["id"] for r in await store.pool.fetch("SELECT id::text FROM jobs")}
        ran = _runs(runs)
        assert set(submitter.sent) <= stored, "an accepted job is not in PostgreSQL"
        assert set(ran) == stored, f"jobs that never ran: {sorted(stored - set(ran))[:5]}"
        twice = {job_id: n for job_id, n in ran.items() if n > 1}
        assert not twice, f"jobs run more than once: {twice}"
        assert all(ran[job_id] == 1 for job_id in delayed)
        assert "were missing from Redis and were pushed again" in server.log(), "no id was lost: nothing tested"
        assert server.popen.poll() is None and worker.popen.poll() is None, "a program exited"
        assert "is now" in worker.log() and "Redis unavailable" in worker.log()
        print(f"{len(stored)} jobs, each run once; {len(submitter.sent)} accepted, {submitter.refused} refused")
    finally:
        if submitter is not None:
            submitter.stop.set()
        cluster.stop_all()


class SwitchHeard:
    """Subscribed to ``+switch-master`` on every sentinel; ``at`` is when the first one announced a switch
    (time.monotonic()): the moment the delay of our writes is counted from."""

    def __init__(self, group: SentinelGroup) -> None:
        self.group = group
        self.at: float | None = None
        self._clients: list[aioredis.Redis] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        subscribed: list[asyncio.Event] = []
        for s in self.group.sentinels:
            client = aioredis.Redis(host=s.member.host, port=s.member.port, password=self.group.sentinel_password)
            self._clients.append(client)
            pubsub = client.pubsub()
            await pubsub.subscribe("+switch-master")
            subscribed.append(asyncio.Event())
            self._tasks.append(asyncio.create_task(self._listen(pubsub, subscribed[-1]), name=f"heard-{s.name}"))
        await wait_for(lambda: all(e.is_set() for e in subscribed), timeout=5, what="+switch-master subscriptions")
        return self

    async def _listen(self, pubsub: PubSub, subscribed: asyncio.Event) -> None:
        async with pubsub:
            async for message in pubsub.listen():
                if message["type"] == "subscribe":
                    subscribed.set()
                elif message["type"] == "message" and self.at is None:
                    self.at = time.monotonic()

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.aclose() for c in self._clients), return_exceptions=True)


class Writer:
    """``tasks`` tasks, each writing a new key (``write:<task>:<n>``) through ``client`` every ``every``
    seconds until closed; ``sent`` maps each acknowledged key to when it was sent (time.monotonic())."""

    def __init__(self, client: aioredis.Redis, tasks: int = 3, every: float = 0.01) -> None:
        self.client, self.every = client, every
        self.sent: dict[str, float] = {}
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._write_on(n), name=f"writer-{n}") for n in range(tasks)]

    async def _write_on(self, task: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            key, at = f"write:{task}:{n}", time.monotonic()
            try:
                await self.client.set(key, 1)
                self.sent[key] = at
            except REDIS_ERRORS:
                pass  # the failover's outage: not acknowledged, so not judged
            try:
                await asyncio.wait_for(self._stop.wait(), self.every)
            except TimeoutError:
                pass

    async def close(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


def _moved(sent: dict[str, float], landed: set[str], switched: float) -> tuple[float | None, int, float]:
    """Of the writes sent after ``switched``: seconds from it to the first one on the new primary (in
    ``landed``) with every later one there too (None if none is), how many went astray (to the demoted
    primary) and when the last of those was sent (seconds after ``switched``, 0 if none)."""
    after = sorted((at - switched, key in landed) for key, at in sent.items() if at >= switched)
    astray = [t for t, there in after if not there]
    last_astray = max(astray, default=float("-inf"))
    moved = min((t for t, there in after if there and t > last_astray), default=None)
    return moved, len(astray), max(last_astray, 0.0)


async def test_a_primary_demoted_alive_loses_our_connections(
    settings: Settings, group: SentinelGroup, secrets: dict[str, Path]
) -> None:
    """A manual failover leaves the old primary running, taking writes until the sentinels turn it into
    a replica (about 10 s later). Under steady writes from several tasks, writes reach the new primary
    within 1.5 s of the sentinels' ``+switch-master`` and none goes to the old one after that, and a
    BLMOVE left blocked on the old one ends as a Redis outage (the sentinels close its clients when they
    reconfigure it), not as an error a worker would die of.

    It failed (writes on the demoted primary until it became a replica, ~10 s) when a connection in use
    was released while the pool was closing its idle connections after the switch: redis-py's asyncio
    pool put it back and handed it out again without asking where it leads."""
    client: aioredis.Redis = connect_from(_with_sentinels(settings, group, secrets))
    writer: Writer | None = None
    try:
        await asyncio.gather(*(client.set(f"warm{n}", n) for n in range(5)))  # idle connections to the old one
        old, primary = group.primary_addr(), group.node(group.primary_name())
        assert old is not None

        async def block() -> object:
            return await client.blmove("nothing", "nowhere", 60)

        blocked = asyncio.create_task(block(), name="blocked-blmove")
        await wait_for(lambda: "cmd=blmove" in group.cli(primary, "CLIENT", "LIST"), what="BLMOVE blocked")
        async with SwitchHeard(group) as heard:
            writer = Writer(client)
            await wait_for(lambda: len(writer.sent) >= 20, what="writes before the failover")
            # redis-cli off the event loop from here on, so that the checks do not hold up the writers
            reply = await asyncio.to_thread(group.cli, group.sentinels[0], "SENTINEL", "FAILOVER", group.master)
            assert reply == "OK"
            new = await asyncio.to_thread(group.wait_failover, old)
            switched: float = await wait_for(lambda: heard.at, what="+switch-master")

            with pytest.raises(REDIS_ERRORS):
                async with asyncio.timeout(30):  # until the sentinels turn the old primary into a replica
                    await blocked
            assert "role:slave" in await asyncio.to_thread(group.cli, primary, "INFO", "replication")
            await wait_for(lambda: time.monotonic() > switched + 3, what="writes for 3 s after the switch")
            await writer.close()
        landed = set((await asyncio.to_thread(group.cli, group.node(group.primary_name()), "KEYS", "write:*")).split())
        moved, astray, last_astray = _moved(writer.sent, landed, switched)
        print(
            f"\nwrites reach the new primary {new} {moved if moved is None else f'{moved:.2f}'}s after the "
            f"sentinels' +switch-master; {astray} sent after it went to the demoted one (the last at "
            f"+{last_astray:.2f}s)"
        )
        assert moved is not None and moved < 1.5, "writes went on to the demoted primary"
    finally:
        if writer is not None:
            await writer.close()
        await client.aclose()


async def test_a_blocked_blmove_unblocked_by_a_demotion_is_an_outage(
    settings: Settings, group: SentinelGroup, secrets: dict[str, Path]
) -> None:
    """Redis answers UNBLOCKED to a BLMOVE whose server turns into a replica (here by a bare REPLICAOF,
    which closes no connection): that must read as a Redis outage, and the connection must be dropped.
    redis-py 8.2 turns that reply into "The previous master is now a slave" itself (and disconnects);
    before, our PrimaryConnection did, naming it: either wording is the same outage."""
    client: aioredis.Redis = connect_from(_with_sentinels(settings, group, secrets))
    try:
        primary, replica = group.node(group.primary_name()), group.nodes[1]

        async def block() -> object:
            return await client.blmove("nothing", "nowhere", 30)

        blocked = asyncio.create_task(block(), name="blocked-blmove")
        await wait_for(lambda: "cmd=blmove" in group.cli(primary, "CLIENT", "LIST"), what="BLMOVE blocked")
        assert group.cli(primary, "REPLICAOF", replica.member.host, str(replica.member.port)) == "OK"
        with pytest.raises(RedisConnectionError, match="not the primary any more.*UNBLOCKED|previous master is now"):
            async with asyncio.timeout(10):
                await blocked
        # dropped: the demoted server no longer holds the connection that blocked (nor any of ours)
        await wait_for(lambda: "cmd=blmove" not in group.cli(primary, "CLIENT", "LIST"), what="connection dropped")
    finally:
        await client.aclose()
