"""`make multihost`: three hosts on this machine (network namespaces), partitioned, healed, killed; a table.

Host N is a network namespace with address 10.77.0.N on one bridge. Each host runs an etcd member, a server
and a worker (TLS, a token); host 1 also runs PostgreSQL, and Redis' primary (its replica on host 2, a
sentinel on each host; one plain Redis with --short or --no-sentinel), all with passwords. Jobs are submitted
throughout, each logging its start and end to a side-effect log, and a cron fires every 2 s. Scenarios:
partition host 2 while it leads, heal it, lose etcd quorum, kill -9 the Redis primary, kill -9 a whole host
(--short: no Redis failover, a shorter quorum loss). Prints one table (seconds to a new leader, jobs lost, jobs
run twice) and the checks; exits 1 on any violation.

    PYTHONPATH=. .venv/bin/python scripts/multihost.py [--short] [--keep] [--no-sentinel]   (root; ~2 min, --short ~1)
    PYTHONPATH=. .venv/bin/python scripts/multihost.py --cleanup             namespaces and files of crashed runs
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import datetime as dt
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from devtools import netns
from devtools.chaos_checks import Check, Facts, check_cron, run_checks, table
from devtools.multihost import MultiHost
from devtools.multihost_load import CRON, CRON_NAME, TERMINAL, Load, Store, call, lost_and_twice, marked
from devtools.multihost_scenarios import Outcome, heal, kill_host, partition, quorum_loss, redis_failover
from jobcluster.pb import scheduler_pb2 as pb

ROOTS = Path(tempfile.gettempdir())


def cleanup_leftovers() -> int:
    """Namespaces (and their processes) and data directories of runs that died without cleaning up (kill -9).

    The logs a failed run kept on purpose (its namespaces are gone) stay: delete them by hand."""
    names = netns.leftovers()
    for name in names:
        stuck = netns.remove(name)
        print(f"removed namespace {name}" + (f" (pids {stuck} still exiting 10 s after kill -9)" if stuck else ""))
    crashed = {name.rsplit("-", 1)[0] for name in names}
    for root in ROOTS.glob(f"jobcluster-multihost-{netns.PREFIX}-*"):
        if "-".join(root.name.split("-")[2:5]) in crashed:
            shutil.rmtree(root, ignore_errors=True)
            print(f"removed {root}")
    if not names:
        print("no namespaces of crashed runs")
    return 0


async def run(mh: MultiHost, short: bool) -> int:
    log = mh.root / "effects.log"
    store = Store(mh)
    load = Load(mh, log)
    saved = await call(
        mh,
        lambda stub, t: stub.CreateSchedule(
            pb.Schedule(name=CRON_NAME, cron=CRON, command=marked("true", log), max_retries=5), timeout=t
        ),
    )
    # The ticks owed start after the schedule was saved (by the server's clock), not when it was asked for:
    # a call that straddled a tick once made the check count that tick as missed.
    cron_start = dt.datetime.fromtimestamp(saved.created_at_ms / 1000, dt.UTC)
    stop = asyncio.Event()
    supervisor = asyncio.create_task(mh.supervise(stop), name="supervise")
    loader = asyncio.create_task(load.run(), name="load")
    scenarios = [("partition", lambda: partition(mh, store)), ("heal", lambda: heal(mh, store))]
    # quorum loss is what shows a leader that acts past its lease: it still reaches PostgreSQL and Redis
    scenarios.append(("quorum", lambda: quorum_loss(mh, store, load, outage=7.0 if short else 10.0)))
    if mh.redis_group is not None:
        scenarios.append(("redis", lambda: redis_failover(mh, store)))
    scenarios.append(("hostkill", lambda: kill_host(mh, store, load, restart=not short)))
    outcomes: dict[str, Outcome] = {}
    t0 = time.monotonic()
    for phase, scenario in scenarios:
        load.phase = phase
        print(f"[{time.monotonic() - t0:5.1f}s] {phase} ...", flush=True)
        outcomes[phase] = await scenario()
        print(f"[{time.monotonic() - t0:5.1f}s]   {outcomes[phase].figure}", flush=True)
    load.phase = "end"
    await asyncio.sleep(2.0)
    load.stop.set()
    await loader
    settled = await store.wait(
        f"SELECT count(*) = 0 FROM jobs WHERE schedule_id IS NULL AND status NOT IN {TERMINAL}", 90
    )
    await call(mh, lambda stub, t: stub.PauseSchedule(pb.ScheduleRef(name=CRON_NAME), timeout=t))
    cron_end = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=3)  # a tick due just now may not have fired yet
    await store.wait(f"SELECT count(*) = 0 FROM jobs WHERE status NOT IN {TERMINAL}", 30)
    stop.set()
    await supervisor
    facts = await store.facts(log, load, (cron_start, cron_end))
    key_of = {
        r["id"]: r["idempotency_key"]
        for r in await store.fetch("SELECT id::text AS id, idempotency_key FROM jobs WHERE idempotency_key IS NOT NULL")
    }
    return report(mh, outcomes, load, facts, key_of, settled is not None)


def report(
    mh: MultiHost, outcomes: dict[str, Outcome], load: Load, facts: Facts, key_of: dict[str, str], settled: bool
) -> int:
    rows, bad = [], 0
    for phase, out in outcomes.items():
        lost, twice, _ = lost_and_twice(facts, load.submitted.get(phase, []), key_of)
        failed = [c.name for c in out.checks if c.violations]
        bad += len(failed) + lost + twice
        rows.append(
            [
                out.name,
                "-" if out.leader_seconds is None else f"{out.leader_seconds:.2f}",
                str(len(load.submitted.get(phase, []))),
                str(lost),
                str(twice),
                out.figure,
                "ok" if not failed else "FAILED: " + "; ".join(failed),
            ]
        )
    print("\n" + table(rows, ["scenario", "new leader s", "jobs", "lost", "run twice", "what happened", "checks"]))
    print(
        "\n"
        + table(
            [
                [c.name, "ok" if not c.violations else "VIOLATED", c.detail]
                for out in outcomes.values()
                for c in out.checks
            ],
            ["scenario check", "result", "detail"],
        )
    )
    # run_checks' first check asks whether a leader acted after make chaos's faults: here, whether all ended
    checks = [Check("every job ended within 90 s of the last scenario", 0 if settled else 1), *run_checks(facts)[1:]]
    cron = check_cron(facts)
    print(
        "\n"
        + table(
            [
                [c.name, "ok" if not c.violations else f"{c.violations} VIOLATION(S)", c.detail]
                for c in checks
                if c.name != cron.name
            ]
            + [[cron.name, "ok" if not cron.violations else f"{cron.violations} VIOLATION(S)", cron.detail]],
            ["whole run", "result", "detail"],
        )
    )
    bad += sum(c.violations for c in checks)
    print(
        f"\n{sum(len(k) for k in load.submitted.values())} jobs submitted, {mh.restarts} program restarts by the "
        f"supervisor; {bad} violation(s)",
        flush=True,
    )
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--short", action="store_true", help="one Redis, no failover, a 7 s quorum loss (the make test version)"
    )
    p.add_argument("--keep", action="store_true", help="keep logs and data (kept anyway on a failure)")
    p.add_argument("--cleanup", action="store_true", help="remove what crashed runs left, then exit")
    p.add_argument(
        "--no-sentinel",
        action="store_true",
        help="one Redis on host 1, as --short has (by default: a primary on host 1, its replica on "
        "host 2, a sentinel on each host, and the Redis failover scenario)",
    )
    args = p.parse_args()
    if args.cleanup:
        return cleanup_leftovers()
    why = netns.unavailable()
    if why:
        print(f"multihost: cannot run here: {why}", file=sys.stderr)
        return 2
    net = netns.Network()
    root = Path(tempfile.mkdtemp(prefix=f"jobcluster-multihost-{net.tag}-"))
    root.chmod(0o755)  # the postgres user enters it; jobs (JOB_USER) append to the side-effect log
    (root / "effects.log").touch(mode=0o666)
    (root / "effects.log").chmod(0o666)
    code = 2

    def clean_up() -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # a second signal must not stop it half-way
            signal.signal(sig, signal.SIG_IGN)
        stuck = net.destroy()  # kills every process in our namespaces first, and waits until each has exited
        if stuck:
            print(f"processes {stuck} had not exited 10 s after kill -9", file=sys.stderr, flush=True)
        if code == 0 and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif root.exists():
            print(f"logs and data kept in {root}", flush=True)

    atexit.register(clean_up)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda signum, _: sys.exit(128 + signum))
    print(f"multihost: run {net.tag}, root {root}", flush=True)
    try:
        net.create()
        net.enter("obs")  # before any thread starts: this process is now a client on the hosts' network
        mh = MultiHost(net, root, sentinel=not (args.short or args.no_sentinel))
        t0 = time.monotonic()
        mh.start(leader_first=2)
        redis = "Redis primary on host 1, replica on host 2, a sentinel on each" if mh.sentinel else "Redis on host 1"
        print(
            f"3 hosts up in {time.monotonic() - t0:.1f}s: etcd x3, PostgreSQL on host 1, {redis}, a server and a "
            f"worker on each (TLS, token); settings: " + " ".join(f"{k}={v}" for k, v in mh.settings.items()),
            flush=True,
        )
        code = asyncio.run(run(mh, args.short))
        return code
    finally:
        clean_up()
        atexit.unregister(clean_up)


if __name__ == "__main__":
    sys.exit(main())
