"""`make soak MINUTES=30`: constant load and one kill -9 a minute; RSS and open fds of every program, and their slope.

Private Redis, PostgreSQL and etcd, 3 servers and 2 workers (restarted by a
supervisor when killed). Every SAMPLE seconds it reads /proc/<pid>/status (VmRSS)
and /proc/<pid>/fd of each server, worker and service. At the end it prints, per
program, its RSS and fds at the start and end of its longest life (after a
warm-up) and the least-squares slope, and exits 1 when one grows steadily:
the slope is positive, the last third of the samples all lie above the first
third, and the growth passes a floor (RSS 4 MiB and 5 %, fds 5).

    PYTHONPATH=. .venv/bin/python scripts/soak.py [--minutes 30] [--rate 20] [--kill-every 60] [--sample 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import asyncpg

from devtools import services as svc
from devtools.chaos import CHAOS_SETTINGS, Cluster, call
from devtools.chaos_checks import table
from jobcluster.pb import scheduler_pb2 as pb

COMMANDS = [("true", 1), ("echo soak; sleep 0.5", 1), ("exit 1", 1), ("head -c 2000 /dev/zero | od", 1)]
Sample = tuple[float, int, int, int]  # (seconds since start, pid, RSS KiB, fds)


async def load(cluster: Cluster, rate: int, stop: asyncio.Event) -> int:
    """``rate`` jobs a second in one SubmitJobs call each second; how many were submitted."""
    sent, t0, n = 0, time.monotonic(), 0
    while not stop.is_set():
        jobs = [pb.Job(command=c, max_retries=r) for c, r in random.choices(COMMANDS, k=rate)]
        await call(cluster, "SubmitJobs", lambda stub: stub.SubmitJobs(pb.JobBatch(jobs=jobs), timeout=10))
        sent += rate
        n += 1
        await asyncio.sleep(max(0.0, t0 + n - time.monotonic()))
    return sent


async def kills(cluster: Cluster, every: float, stop: asyncio.Event) -> list[str]:
    """kill -9 one server or worker every ``every`` seconds, each in turn (so each lives long between kills)."""
    order = list(cluster.programs.values())
    random.shuffle(order)
    done, i = [], 0
    while True:
        try:
            async with asyncio.timeout(every):
                await stop.wait()
            return done
        except TimeoutError:
            victim = order[i % len(order)]
            i += 1
            if victim.kill():
                done.append(victim.name)


async def sampler(cluster: Cluster, every: float, stop: asyncio.Event, out: dict[str, list[Sample]]) -> None:
    t0 = time.monotonic()
    while not stop.is_set():
        now = time.monotonic() - t0
        for name, (pid, rss, fds) in cluster.sample().items():
            out[name].append((now, pid, rss, fds))
        try:
            async with asyncio.timeout(every):
                await stop.wait()
        except TimeoutError:
            pass


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (per unit of x)."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def steady_growth(values: list[float], per_min: float, floor: float) -> bool:
    third = max(1, len(values) // 3)
    return per_min > 0 and min(values[-third:]) > max(values[:third]) and values[-1] - values[0] >= floor


def verdicts(samples: dict[str, list[Sample]], warmup: float) -> tuple[list[list[str]], int]:
    """One table row per program (its longest life after warm-up), and how many grew steadily."""
    rows, grew = [], 0
    for name in sorted(samples):
        lives: dict[int, list[Sample]] = defaultdict(list)
        for s in samples[name]:
            lives[s[1]].append(s)
        life = max(lives.values(), key=len)
        after = [s for s in life if s[0] - life[0][0] >= warmup] or life
        if len(after) < 4:
            rows.append([name, str(after[0][1]), str(len(after)), "-", "-", "-", "-", "too few samples"])
            continue
        rss = [s[2] / 1024 for s in after]
        fds = [float(s[3]) for s in after]
        rss_slope = slope([(s[0] / 60, v) for s, v in zip(after, rss)])
        fd_slope = slope([(s[0] / 60, v) for s, v in zip(after, fds)])
        bad = [
            what
            for what, hit in (
                ("RSS", steady_growth(rss, rss_slope, max(4.0, rss[0] * 0.05))),
                ("fds", steady_growth(fds, fd_slope, 5)),
            )
            if hit
        ]
        grew += bool(bad)
        rows.append(
            [
                name,
                str(after[0][1]),
                str(len(after)),
                f"{rss[0]:.1f} -> {rss[-1]:.1f}",
                f"{rss_slope:+.2f}",
                f"{fds[0]:.0f} -> {fds[-1]:.0f}",
                f"{fd_slope:+.2f}",
                "GROWS: " + ", ".join(bad) if bad else "flat",
            ]
        )
    return rows, grew


async def run(cluster: Cluster, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    samples: dict[str, list[Sample]] = defaultdict(list)
    supervisor = asyncio.create_task(cluster.supervise(stop))
    tasks = (
        asyncio.create_task(load(cluster, args.rate, stop)),
        asyncio.create_task(kills(cluster, args.kill_every, stop)),
        asyncio.create_task(sampler(cluster, args.sample, stop, samples)),
    )
    await asyncio.sleep(args.minutes * 60)
    stop.set()
    sent, killed, _ = await asyncio.gather(*tasks)
    await supervisor
    conn = await asyncpg.connect(cluster.services["postgres"].url)
    counts = dict(await conn.fetch("SELECT status, count(*) FROM jobs GROUP BY status"))
    await conn.close()
    warmup = args.warmup if args.warmup is not None else min(60.0, args.minutes * 60 * 0.2)
    rows, grew = verdicts(samples, warmup)
    print(
        f"\n{sent} jobs submitted in {args.minutes:g} min ({args.rate}/s); by status now: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    print(f"killed (-9, restarted by the supervisor): {', '.join(killed) or 'none'}")
    print(f"samples every {args.sample:g}s; each program's longest life, after {warmup:.0f}s of warm-up:\n")
    print(
        table(
            rows,
            ["program", "pid", "samples", "RSS MiB start -> end", "MiB/min", "fds start -> end", "fds/min", "verdict"],
        )
    )
    print(f"\n{grew} program(s) grew steadily", flush=True)
    return 1 if grew else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--rate", type=int, default=20, help="jobs submitted per second")
    p.add_argument("--kill-every", type=float, default=60)
    p.add_argument("--sample", type=float, default=10, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=None, help="seconds of each life not judged (default 60)")
    args = p.parse_args()
    # SIGTERM (a timeout, Ctrl-C's cousin) ends the run through the finally blocks: every process we started stops
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix="jobcluster-soak-"))
    os.chmod(root, 0o755)
    print(
        f"soak: {args.minutes:g} min, {args.rate} jobs/s, a kill every {args.kill_every:g}s, root {root}\n"
        "  settings: " + " ".join(f"{k}={v}" for k, v in CHAOS_SETTINGS.items()),
        flush=True,
    )
    code = 2
    try:
        with svc.private_services(root, pg_settings={"fsync": "off", "synchronous_commit": "off"}) as services:
            cluster = Cluster(root, services, servers=3, workers=2)
            try:
                cluster.start()
                code = asyncio.run(run(cluster, args))
            finally:
                cluster.stop_all()
        return code
    finally:
        if code == 0:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"logs kept in {root}")


if __name__ == "__main__":
    sys.exit(main())
