"""The scenarios of ``make multihost``: partition, heal, quorum loss, a host killed; each measures its figure.

Each scenario returns a :class:`Outcome`: its figure (seconds to a new leader, to rejoin, ...) and the
promises it checked on the way (each a :class:`Check` with its violations). Jobs lost and jobs run twice
are counted at the end for the jobs submitted while each scenario ran (:func:`.multihost_load.lost_and_twice`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from devtools.chaos_checks import Check
from devtools.multihost import MultiHost
from devtools.multihost_load import Load, Store
from devtools.multihost_services import ETCD_PORT
from devtools.netns import Network


@dataclass
class Outcome:
    name: str
    leader_seconds: float | None = None  # seconds to a new leader (None: not this scenario's question)
    figure: str = ""
    checks: list[Check] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, 0 if ok else 1, detail))
        return ok


def secs(value: float | None) -> str:
    """Seconds for a figure or a check's detail; "never" when the wait ran out."""
    return "never" if value is None else f"{value:.1f}s"


def log_events(path: Path, since: float, *starts: str) -> list[tuple[float, str]]:
    """(unix time, message) of the JSON log lines in ``path`` after ``since`` whose message starts so."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            ts = dt.datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if ts >= since and str(entry.get("msg", "")).startswith(starts):
            found.append((ts, str(entry["msg"])))
    return found


def stopped_leading(log: Path, since: float) -> tuple[float, str] | None:
    """When a leader's own log says it stopped acting after ``since``: the local deadline it states while
    etcd fails ("still leading for 0.4s": it acts until then, and every leader action checks it), else its
    first "no longer leader" or "leader term N over" line (those are written later than the stop itself)."""
    events = log_events(log, since, "etcd unavailable", "no longer leader", "leader term")
    for ts, msg in events:
        if found := re.search(r"still leading for ([0-9.]+)s", msg):
            return ts + float(found.group(1)), f"still leading for {found.group(1)}s"
    return next(((ts, msg) for ts, msg in events if msg.startswith("no longer") or msg.endswith(" over")), None)


async def until(ok: Callable[[], Awaitable[object]], timeout: float, every: float = 0.1) -> float | None:
    """Seconds until ``ok()`` is true; None when it was not within ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await ok():
            return time.monotonic() - t0
        await asyncio.sleep(every)
    return None


def etcd_healthy(host: int) -> bool:
    """The member on ``host`` answers /health with a leader in sight."""
    try:
        with urllib.request.urlopen(f"http://{Network.address(host)}:{ETCD_PORT}/health", timeout=1) as reply:
            return bool(json.loads(reply.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


def ttl(mh: MultiHost) -> float:
    return float(mh.settings["LEASE_TTL"].rstrip("s"))


async def cron_jobs_since(store: Store, since: float) -> list[tuple[float, str]]:
    """(created, submitted_via) of cron jobs created after ``since`` (unix time), oldest first."""
    rows = await store.fetch(
        "SELECT extract(epoch FROM created_at)::float8 AS t, submitted_via FROM jobs "
        "WHERE schedule_id IS NOT NULL AND created_at > to_timestamp($1) ORDER BY created_at",
        since,
    )
    return [(r["t"], r["submitted_via"]) for r in rows]


async def handover(
    mh: MultiHost, others: list[int], term: int, since: float
) -> tuple[int, int, float | None, float | None]:
    """Wait for a leader among ``others`` with a term newer than ``term``: (host, term, seconds from ``since``
    by its own log, seconds until this observer saw it). The log time is the figure: this observer's polls
    (a new TLS channel each) lag behind on a busy machine."""

    async def moved() -> bool:
        now, new_term = await mh.leader(others)
        return now in others and new_term > term

    seen = await until(moved, 3 * ttl(mh) + 10)
    host, new_term = await mh.leader(others)
    if seen is None or host is None:
        return 0, 0, None, None
    elected = log_events(mh.root / f"server-{host}.log", since, f"elected leader (term token {new_term},")
    return host, new_term, (elected[0][0] - since if elected else seen), seen


async def partition(mh: MultiHost, store: Store, host: int = 2) -> Outcome:
    """Cut ``host`` off while its server leads: a leader elsewhere within LEASE_TTL + 1 s, fenced, no claims."""
    out = Outcome(f"partition host {host}")
    leader, term = await mh.leader()
    out.check(f"host {host} leads before the cut", leader == host, f"leader: host {leader}, term {term}")
    await until(
        lambda: store.value("SELECT count(*) FROM jobs WHERE status = 'RUNNING' AND worker_id = $1", f"h{host}-worker"),
        5.0,
    )
    running = await store.fetch(
        "SELECT id::text FROM jobs WHERE status = 'RUNNING' AND worker_id = $1", f"h{host}-worker"
    )
    others = [h for h in mh.hosts if h != host]
    # etcd renews every lease when its own raft leader changes: were etcd's leader cut off too, our lease
    # would outlive the cut by up to another LEASE_TTL (docs/operations.md). That case is etcd's; move it.
    raft = await asyncio.to_thread(mh.etcd_leader)
    if raft == host:
        await asyncio.to_thread(mh.move_etcd_leader, others[0])
        # a new raft leader extends every lease once; the holder's next renewal (each TTL/3) undoes that
        await asyncio.sleep(ttl(mh))
    t_cut = time.time()
    mh.net.cut(host)

    new_leader, new_term, out.leader_seconds, seen = await handover(mh, others, term, t_cut)
    out.check(
        "a leader elsewhere within LEASE_TTL + 1 s",
        out.leader_seconds is not None and out.leader_seconds <= ttl(mh) + 1,
        f"{secs(out.leader_seconds)} by its log, {secs(seen)} seen by a client (LEASE_TTL {ttl(mh):g}s)",
    )
    # the new term must act (fire cron ticks) before the scenario ends; then look at who acted when
    await until(lambda: cron_jobs_since(store, time.time() - 0.5), 2 * ttl(mh) + 5, every=0.3)
    await asyncio.sleep(float(mh.settings["WORKER_DEAD_AFTER"].rstrip("s")) + 1)
    stopped = stopped_leading(mh.root / f"server-{host}.log", t_cut)
    began = log_events(mh.root / f"server-{new_leader}.log", t_cut, f"leader term {new_term}: running")
    gap = began[0][0] - stopped[0] if stopped and began else None
    out.check(
        f"host {host} stopped leading before host {new_leader} began",
        gap is not None and gap > 0,
        f"{gap:.2f}s between '{stopped[1]}' and '{began[0][1]}'"
        if gap is not None and stopped and began
        else f"in the logs: stopped {stopped}, began {began[:1]}",
    )
    address = mh.server_address(host)
    acted = [t for t, via in await cron_jobs_since(store, t_cut) if via == address]
    out.check(f"host {host} fired no cron tick after the cut", not acted, f"{len(acted)} ticks")
    fence = await store.fetch("SELECT token, holder FROM leader_fence WHERE id = 1")
    out.check(
        "PostgreSQL's fence holds the new term",
        bool(fence) and fence[0]["token"] == new_term and fence[0]["holder"] == mh.server_address(new_leader or 0),
        f"{dict(fence[0]) if fence else None}",
    )
    claims = await store.value(
        "SELECT count(*) FROM job_attempts WHERE worker_id = $1 AND started_at > to_timestamp($2)",
        f"h{host}-worker",
        t_cut + 0.5,
    )
    out.check(
        f"host {host}'s worker claimed nothing while cut off",
        claims == 0,
        f"{claims} attempts; {len(running)} jobs were running there at the cut",
    )
    gap_text = (
        f", acting {began[0][0] - t_cut:.1f}s after the cut, {gap:.2f}s after host {host} stopped"
        if gap is not None
        else ""
    )
    moved_raft = f"; etcd's raft leader moved off host {host} first" if raft == host else ""
    out.figure = (
        f"leader host {host} -> host {new_leader}{gap_text}; {len(running)} jobs were on host {host}{moved_raft}"
    )
    return out


async def heal(mh: MultiHost, store: Store, host: int = 2) -> Outcome:
    """Join ``host`` again: its etcd member, server and worker serve again."""
    out = Outcome(f"heal host {host}")
    t_heal = time.time()
    mh.net.heal(host)

    async def serving() -> bool:
        return await mh.cluster_info(host) is not None

    server = await until(serving, 30)
    member = await until(lambda: asyncio.to_thread(etcd_healthy, host), 30)
    worker = await store.wait(
        "SELECT count(*) FROM job_attempts WHERE worker_id = $1 AND started_at > to_timestamp($2)",
        30,
        f"h{host}-worker",
        t_heal,
    )
    out.check(f"host {host}'s server answers", server is not None, secs(server))
    out.check(f"host {host}'s etcd member healthy", member is not None, secs(member))
    out.check(f"host {host}'s worker runs jobs again", worker is not None, secs(worker))
    leader, _ = await mh.leader()
    out.check("one leader", leader is not None, f"host {leader}")
    out.figure = f"server {secs(server)}, etcd member {secs(member)}, worker {secs(worker)} after the link came back"
    return out


async def quorum_loss(mh: MultiHost, store: Store, load: Load, outage: float = 10.0) -> Outcome:
    """Two etcd members down for ``outage`` s: no leader, cron waits, jobs still run; then cron resumes."""
    out = Outcome("quorum loss (2 of 3 etcd)")
    down = [h for h in mh.hosts if h != 1][:2]
    t_loss = time.time()
    for host in down:
        mh.procs[f"etcd-{host}"].kill()
    # each leader action checks the local deadline (last renewal + TTL - margin): none after t_loss + TTL
    await asyncio.sleep(ttl(mh) + 0.5)
    silent_from = time.time()
    t_submit = time.time()
    infos = await asyncio.gather(*(mh.cluster_info(h, timeout=8) for h in mh.hosts))
    named = [f"host {h}: {i.leader}" for h, i in zip(mh.hosts, infos) if i is not None and i.leader]
    out.check(
        "no server names a leader",
        not named and any(infos),
        "; ".join(named)
        or f"{sum(1 for i in infos if i is not None)} servers answered: {infos[0].election[:40] if infos[0] else ''}",
    )
    await asyncio.sleep(max(0.0, outage - ttl(mh) - 0.5))
    cron_during = await cron_jobs_since(store, silent_from)
    out.check("no cron tick fired without quorum", not cron_during, f"{len(cron_during)} ticks")
    during = [k for k in load.submitted.get(load.phase, [])]
    done = await store.value(
        "SELECT count(*) FROM jobs WHERE idempotency_key = ANY($1::text[]) "
        "AND status = 'SUCCEEDED' AND finished_at > to_timestamp($2)",
        during,
        t_submit,
    )
    out.check("submitted jobs still ran without quorum", done > 0, f"{done} of {len(during)} finished meanwhile")
    t_back = time.time()
    for host in down:
        mh.start_etcd(host)
    resumed = await until(lambda: cron_jobs_since(store, t_back), 10 * ttl(mh) + 20, every=0.2)
    out.leader_seconds = resumed
    out.check("cron resumes once quorum is back", resumed is not None, secs(resumed))
    out.figure = (
        f"etcd down {t_back - t_loss:.1f}s; {done} jobs finished meanwhile; first tick "
        f"{secs(resumed)} after quorum came back"
    )
    return out


async def kill_host(
    mh: MultiHost, store: Store, load: Load, host: int = 3, jobs: int = 6, restart: bool = True
) -> Outcome:
    """kill -9 everything on ``host`` while its worker runs jobs: they finish elsewhere; then (``restart``)
    the host boots again."""
    out = Outcome(f"kill host {host}")
    for n in range(jobs):
        await load.submit(load.job(f"mh-sleep-{load.phase}-long{n}", 3.0), load.phase)
    leader, term = await mh.leader()
    raft = await asyncio.to_thread(mh.etcd_leader)
    busy = await until(
        lambda: store.value("SELECT count(*) FROM jobs WHERE status = 'RUNNING' AND worker_id = $1", f"h{host}-worker"),
        15,
    )
    t_kill = time.time()
    killed = mh.kill_host(host)
    # its jobs: the attempts it had open when it died (a dead worker closes none)
    ids = [
        r["id"]
        for r in await store.fetch(
            "SELECT job_id::text AS id FROM job_attempts WHERE worker_id = $1 AND finished_at IS NULL",
            f"h{host}-worker",
        )
    ]
    out.check(f"host {host}'s worker was running jobs", busy is not None and bool(ids), f"{len(ids)} jobs")
    others = [h for h in mh.hosts if h != host]
    if leader == host:
        out.leader_seconds = (await handover(mh, others, term, t_kill))[2]
    finished = await store.wait(
        "SELECT count(*) = cardinality($1::text[]) FROM jobs j WHERE j.id::text = ANY($1) "
        "AND j.status = 'SUCCEEDED' AND EXISTS (SELECT 1 FROM job_attempts a WHERE "
        "a.job_id = j.id AND a.worker_id <> $2 AND a.exit_code = 0)",
        60,
        ids,
        f"h{host}-worker",
    )
    finished = None if finished is None else time.time() - t_kill
    out.check(
        f"host {host}'s jobs finished elsewhere",
        finished is not None,
        f"{len(ids)} jobs in {time.time() - t_kill:.1f}s",
    )
    if restart:
        mh.restart_host(host)
        back = await until(lambda: mh.cluster_info(host), 60)
        out.check(f"host {host} serves again after its restart", back is not None, secs(back))
    out.figure = f"{killed} processes killed; its {len(ids)} running jobs done elsewhere {secs(finished)} later" + (
        " (it led" + (", etcd's raft leader too)" if raft == host else ")") if leader == host else ""
    )
    return out


async def redis_failover(mh: MultiHost, store: Store) -> Outcome:
    """kill -9 the Redis primary: the sentinels promote the replica, every program follows, no job is lost."""
    out = Outcome("Redis failover (Sentinel)")
    group = mh.redis_group
    assert group is not None, "needs MultiHost(sentinel=True)"
    old_addr = await asyncio.to_thread(group.primary_addr)
    old = await asyncio.to_thread(group.primary_name)
    t_kill = time.time()
    group.kill(old)
    try:
        new_addr = await asyncio.to_thread(group.wait_failover, old_addr or "", 30.0)
    except RuntimeError as exc:  # ServiceError: no new primary named
        out.check("the sentinels promote the replica", False, str(exc).splitlines()[0])
        return out
    promoted = time.time() - t_kill
    ran = await store.wait(
        "SELECT count(*) FROM jobs WHERE status = 'SUCCEEDED' AND schedule_id IS NULL "
        "AND created_at > to_timestamp($1)",
        60,
        t_kill,
    )
    recovered = None if ran is None else time.time() - t_kill
    following = await store.wait(
        "SELECT count(DISTINCT worker_id) = $2 FROM job_attempts WHERE started_at > to_timestamp($1)",
        30,
        t_kill + promoted,
        len(mh.hosts),
    )
    out.check("the sentinels promote the replica", True, f"{old_addr} -> {new_addr} in {promoted:.1f}s")
    out.check("a job submitted after the kill ran", recovered is not None, secs(recovered))
    out.check("every worker claims from the new primary", following is not None, secs(following))
    await asyncio.to_thread(group.restart, old)  # back as a replica of the new primary
    out.figure = (
        f"primary {old_addr} -> {new_addr}: promoted {promoted:.1f}s, jobs run again {secs(recovered)} after the kill"
    )
    return out
