"""Leader election, cleanup after dead workers and reconciliation, with real kills (LEASE_TTL=2s)."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import asyncpg
import pytest

from devtools import services as svc
from jobcluster import keys
from jobcluster.election import read_leader
from tests.e2e.conftest import Cluster, job_status, submit
from tests.helpers import wait_for_sync


def leader_of(cluster: Cluster) -> str | None:
    s = cluster.settings
    try:
        info = asyncio.run(read_leader(s.etcd_endpoints, s.election_namespace, s.election_key))
    except Exception:  # noqa: BLE001 - etcd restarting
        return None
    return info.address if info else None


def wait_leader(cluster: Cluster, timeout: float = 15, other_than: str | None = None) -> str:
    return wait_for_sync(
        lambda: (lambda a: a if a and a != other_than else None)(leader_of(cluster)),
        timeout=timeout,
        interval=0.02,
        what="a leader",
    )


def three_servers(cluster: Cluster) -> dict[str, object]:
    procs = {}
    for _ in range(3):
        proc, address = cluster.server()
        procs[address] = proc
    return procs


def test_kill_9_of_the_leader_hands_over_within_the_lease(cluster: Cluster):
    procs = three_servers(cluster)
    old = wait_leader(cluster)
    procs[old].signal(signal.SIGKILL)
    killed = time.monotonic()
    new = wait_leader(cluster, timeout=10, other_than=old)
    took = time.monotonic() - killed
    print(f"kill -9 failover: {took:.2f}s (LEASE_TTL=2s)")
    assert new in procs and new != old
    # etcd ends the lease within its TTL of the last renewal; twice that leaves room for a loaded machine.
    assert took < 2 * cluster.settings.lease_ttl


def test_sigterm_of_the_leader_hands_over_without_waiting_for_its_lease(cluster: Cluster):
    # A long lease: a handover that waited for it to expire would take 10 s, a resignation is
    # immediate (about 0.1 s measured); half the TTL leaves room for a loaded machine.
    ttl = 10.0
    procs = {}
    for _ in range(3):
        proc, address = cluster.server(LEASE_TTL=f"{ttl}s")
        procs[address] = proc
    old = wait_leader(cluster)
    procs[old].signal(signal.SIGTERM)
    stopped = time.monotonic()
    new = wait_leader(cluster, timeout=2 * ttl, other_than=old)
    took = time.monotonic() - stopped
    print(f"SIGTERM failover: {took:.3f}s (LEASE_TTL={ttl}s)")
    assert new in procs and took < ttl / 2
    assert procs[old].wait(15) == 0
    assert "resigned" in procs[old].log()


@pytest.mark.long(
    "SIGSTOPs the leader past its lease: ~6 s (the fence itself: tests/integration/test_fence_after_partition.py)"
)
def test_a_paused_leader_stops_acting_and_cannot_write(cluster: Cluster, settings, services):
    """A leader paused past its lease, resumed while it cannot hear from etcd and a cron tick is due,
    stands down by its own lease deadline: it tries no write at all (the fence would refuse one)."""
    procs = three_servers(cluster)
    old = wait_leader(cluster)
    wait_for_sync(lambda: "leader term" in procs[old].log(), what="leader running its term")
    procs[old].signal(signal.SIGSTOP)
    etcd = services["etcd"].proc
    dsn = settings.database_url
    new = ""
    try:
        new = wait_leader(cluster, timeout=10, other_than=old)
        wait_for_sync(lambda: "leader term" in procs[new].log(), what="new leader running its term")
        _create_schedule(next(a for a in procs if a != old), "every-second", "* * * * * *")
        wait_for_sync(lambda: "schedule every-second fired" in procs[new].log(), what="the new leader firing")
        # Nobody can learn from etcd that the old term is over, and the new leader fires nothing more.
        etcd.send_signal(signal.SIGSTOP)
        procs[new].signal(signal.SIGSTOP)
        wait_for_sync(
            lambda: asyncio.run(_count(dsn, "SELECT count(*) FROM schedules WHERE next_run_at < now()")),
            timeout=5,
            what="a cron tick due",
        )
        mark = len(procs[old].log())
        procs[old].signal(signal.SIGCONT)
        ended = re.compile(r"leader term \d+ over|stopping this term")
        wait_for_sync(lambda: ended.search(procs[old].log()[mark:]), timeout=10, what="the old leader's term ending")
        after = procs[old].log()[mark:]
        assert re.search(r"leader term \d+ over", after) and "stopping this term" not in after, after
        assert "fired" not in after and "is gone" not in after and "reconciliation" not in after, after
    finally:
        for proc in (etcd, procs[old].popen, procs[new].popen if new else None):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
    wait_for_sync(lambda: "no longer leader" in procs[old].log(), timeout=20, what="old leader stepping down")
    assert asyncio.run(_count(dsn, f"SELECT count(*) FROM jobs WHERE submitted_via = '{old}'")) == 0
    # PostgreSQL's fence holds a later term than the old leader's.
    current = wait_leader(cluster, timeout=20, other_than=old)
    wait_for_sync(lambda: asyncio.run(_fence_holder(dsn)) == current, timeout=10, what="the fence of the current term")


def _create_schedule(address: str, name: str, cron_expr: str) -> None:
    import grpc

    from jobcluster.pb import scheduler_pb2 as pb
    from jobcluster.pb import scheduler_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        pb_grpc.JobServiceStub(channel).CreateSchedule(
            pb.Schedule(name=name, cron=cron_expr, command="true"), timeout=5
        )


async def _fence_holder(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT holder FROM leader_fence WHERE id = 1")
    finally:
        await conn.close()


def test_kill_9_of_a_worker_mid_job_the_job_completes_on_another(cluster: Cluster, tmp_path: Path):
    _, address = cluster.server()
    doomed = cluster.worker("e2e-doomed")
    pgid = tmp_path / "pgid"
    job_id = submit(
        address, command=f"echo $$ > {pgid}.$JOB_ATTEMPT; [ $JOB_ATTEMPT -gt 1 ] || sleep 30; echo done", max_retries=2
    )
    wait_for_sync(lambda: job_status(address, job_id).status == "RUNNING", timeout=20, what="RUNNING")
    doomed.signal(signal.SIGKILL)
    killed = time.monotonic()
    cluster.worker("e2e-survivor")
    wait_for_sync(lambda: job_status(address, job_id).status == "SUCCEEDED", timeout=30, what="SUCCEEDED")
    print(f"dead worker's job done elsewhere after {time.monotonic() - killed:.2f}s (WORKER_DEAD_AFTER=1.5s)")
    job = job_status(address, job_id)
    assert job.attempts == 2 and job.output == "done\n"
    assert [a.worker_id for a in job.attempt_history] == ["e2e-doomed", "e2e-survivor"]
    assert "worker lost" in job.attempt_history[0].error
    _kill_group(int(Path(f"{pgid}.1").read_text()))  # the orphaned `sleep 30` of the killed worker


def _kill_group(pgid: int) -> None:
    try:
        import os

        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.long("runs a job for 4 s, past WORKER_DEAD_AFTER, to see it never taken back: ~6 s")
def test_a_long_job_on_a_live_worker_is_never_taken_back(cluster: Cluster):
    _, address = cluster.server()
    cluster.worker("e2e-steady")
    job_id = submit(address, command="sleep 4; echo patient", max_retries=0)
    wait_for_sync(lambda: job_status(address, job_id).status == "SUCCEEDED", timeout=30, what="SUCCEEDED")
    assert job_status(address, job_id).attempts == 1  # 4 s, well past WORKER_DEAD_AFTER


def test_a_job_that_kills_its_worker_ends_in_the_dlq(cluster: Cluster, redis_sync):
    _, address = cluster.server()
    # Its parent is the worker's launcher; the launcher's parent is the worker.
    job_id = submit(address, command="kill -9 $(awk '{print $4}' /proc/$PPID/stat)", max_retries=1)
    for n in (1, 2):
        # As JOB_USER the job could not kill its root worker; a root job stands for one that crashes it.
        worker = cluster.worker(f"e2e-victim-{n}", JOB_USER="root")
        worker.wait(30)
        wait_for_sync(
            lambda: (
                job_status(address, job_id).attempts == n and job_status(address, job_id).status in ("QUEUED", "FAILED")
            ),
            timeout=20,
            what=f"attempt {n} recovered by the leader",
        )
    job = job_status(address, job_id)
    assert job.status == "FAILED" and job.attempts == 2
    assert redis_sync.lrange(keys.DLQ, 0, -1) == [job_id]


def test_a_queued_row_missing_from_redis_runs(cluster: Cluster, redis_sync):
    _, address = cluster.server()
    job_id = submit(address, command="echo reconciled")
    redis_sync.delete(keys.PENDING)  # as if the server died between INSERT and LPUSH
    cluster.worker("e2e-1")
    wait_for_sync(lambda: job_status(address, job_id).status == "SUCCEEDED", timeout=20, what="SUCCEEDED")
    assert job_status(address, job_id).output == "reconciled\n"


@pytest.mark.long(
    "FLUSHALL under three servers and workers (the rebuild itself: tests/integration/test_rebuild.py): ~5 s"
)
def test_redis_flushed_with_200_jobs_queued_all_complete_once(cluster: Cluster, redis_sync, settings):
    _, address = cluster.server()
    ids = [submit(address, command="true") for _ in range(200)]
    redis_sync.flushall()
    cluster.worker("e2e-a")
    cluster.worker("e2e-b")
    wait_for_sync(
        lambda: (
            all(job_status(address, i).status == "SUCCEEDED" for i in ids[-1:])
            and asyncio.run(_count(settings.database_url, "SELECT count(*) FROM jobs WHERE status = 'SUCCEEDED'"))
            == 200
        ),
        timeout=60,
        interval=0.5,
        what="200 jobs SUCCEEDED",
    )
    assert asyncio.run(_count(settings.database_url, "SELECT count(*) FROM job_attempts")) == 200
    assert asyncio.run(_count(settings.database_url, "SELECT max(attempts) FROM jobs")) == 1


async def _count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql) or 0)
    finally:
        await conn.close()


@pytest.mark.long("restarts etcd and waits for the leases: ~5 s")
def test_etcd_restart_leaves_one_leader_and_jobs_keep_running(cluster: Cluster, services, service_root):
    procs = three_servers(cluster)
    cluster.worker("e2e-1")
    first = wait_leader(cluster)
    address = next(iter(procs))
    etcd = services["etcd"]
    etcd.stop()
    try:
        # Jobs run while etcd is down.
        during = submit(address, command="echo during")
        wait_for_sync(lambda: job_status(address, during).status == "SUCCEEDED", timeout=20, what="job with etcd down")
    finally:
        services["etcd"] = svc.start_etcd(
            etcd.data_dir, etcd.port, int(etcd.extra["peer_port"]), service_root / "etcd.log"
        )
    leader = wait_leader(cluster, timeout=20)
    after = submit(address, command="echo after")
    wait_for_sync(lambda: job_status(address, after).status == "SUCCEEDED", timeout=20, what="job after restart")

    # Exactly one server believes it leads (its log says so last): the one etcd names.
    def one_believer() -> bool:
        believers = [a for a, p in procs.items() if _last_leader_line(p.log()) == "elected"]
        return believers == [leader_of(cluster)]

    wait_for_sync(
        one_believer, timeout=10, interval=0.2, what=f"one server believing it leads (first {first}, then {leader})"
    )


def _last_leader_line(log: str) -> str:
    last = ""
    for line in log.splitlines():
        if "elected leader" in line:
            last = "elected"
        elif "no longer leader" in line:
            last = "lost"
    return last


@pytest.mark.long("waits for a tick, a kill and a new leader's lease: ~7 s")
def test_cron_tick_with_the_leader_killed_right_before_it_fires_exactly_once(cluster: Cluster, settings):
    procs = three_servers(cluster)
    cluster.worker("e2e-cron")
    leader = wait_leader(cluster)
    any_address = next(a for a in procs if a != leader)
    import grpc

    from jobcluster.pb import scheduler_pb2 as pb
    from jobcluster.pb import scheduler_pb2_grpc as pb_grpc

    with grpc.insecure_channel(any_address) as channel:
        pb_grpc.JobServiceStub(channel).CreateSchedule(
            pb.Schedule(name="every-3s", cron="* * * * * */3", command="echo tick"), timeout=5
        )
    # Kill the leader 0.3 s before a tick: wait for that moment of the clock cron reads.
    tick = (int(time.time()) // 3 + 1) * 3
    if tick - time.time() < 0.8:
        tick += 3
    wait_for_sync(lambda: time.time() >= tick - 0.3, timeout=10, interval=0.01, what="0.3 s before the tick")
    procs[leader].signal(signal.SIGKILL)
    print(f"leader killed {tick - time.time():.2f}s before the tick")
    wait_leader(cluster, timeout=10, other_than=leader)
    sql = "SELECT count(*) FROM jobs WHERE scheduled_for = to_timestamp($1)"
    wait_for_sync(
        lambda: asyncio.run(_count_at(settings.database_url, sql, tick)) >= 1,
        timeout=15,
        what=f"the job of tick {tick}",
    )
    wait_for_sync(
        lambda: asyncio.run(_count_at(settings.database_url, sql, tick + 3)) >= 1,
        timeout=15,
        what="the next tick's job, from the new leader",
    )
    per_tick = asyncio.run(
        _rows(settings.database_url, "SELECT scheduled_for, count(*) AS n FROM jobs GROUP BY scheduled_for")
    )
    assert per_tick and all(n == 1 for _, n in per_tick), per_tick
    assert asyncio.run(_count_at(settings.database_url, sql, tick)) == 1


async def _count_at(dsn: str, sql: str, arg) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql, arg))
    finally:
        await conn.close()


async def _rows(dsn: str, sql: str) -> list[tuple]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()
