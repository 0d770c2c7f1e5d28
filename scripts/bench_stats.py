"""`make bench`'s figures: what one round measures, issue 11's goals, and the table printed at the end."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


def pct(values: Sequence[float], p: float) -> float:
    """The ``p`` quantile (0..1) of ``values``, nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


@dataclass(frozen=True)
class Rate:
    """``n`` jobs in ``seconds``."""

    n: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.n / self.seconds


@dataclass(frozen=True)
class Latency:
    """Milliseconds."""

    p50: float
    p99: float


@dataclass(frozen=True)
class Round:
    """Every figure of one round; Celery's and jobcluster's measured back to back."""

    celery_e2e: Rate
    celery_cpu: float  # µs of CPU per task: the worker and its children, Redis, the sending client
    celery_start: Latency
    jc_single: Rate  # end to end, single SubmitJob calls
    jc_batched: Rate  # end to end, SubmitJobs of 1,000
    jc_single_cpu: float  # µs of CPU per job: every process of the cluster and the client
    jc_batched_cpu: float
    jc_submit: Rate  # SubmitJob alone, no workers running
    jc_submit_lat: Latency
    jc_submit_server_cpu: float  # µs of the server's CPU per SubmitJob (its process alone)
    jc_stored: Rate  # SubmitJobs alone: jobs stored per second
    jc_start: Latency


def _span(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}–{fmt.format(hi)}"


def _ratios(values: Sequence[float]) -> str:
    """Median (min–max) of per-round ratios, as issue 20 asks them reported."""
    s = sorted(values)
    mid = s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
    return f"{mid:.2f}× ({s[0]:.2f}–{s[-1]:.2f})"


def _met(rounds: Sequence[Round], ok: Callable[[Round], bool]) -> str:
    n = sum(1 for r in rounds if ok(r))
    return f"{'met' if n == len(rounds) else 'NOT met'} ({n}/{len(rounds)} rounds)"


def table(rounds: Sequence[Round]) -> str:
    """Issue 20's table: a range over the rounds per figure, ratios to Celery as median (min–max) of the
    rounds', each goal ("must"; the aim in brackets) and in how many rounds the must was met."""

    def col(get: Callable[[Round], float], fmt: str = "{:,.0f}") -> str:
        return _span([get(r) for r in rounds], fmt)

    single = [r.jc_single.per_s / r.celery_e2e.per_s for r in rounds]
    batched = [r.jc_batched.per_s / r.celery_e2e.per_s for r in rounds]
    cpu = [min(r.jc_single_cpu, r.jc_batched_cpu) / r.celery_cpu for r in rounds]
    ms = "{:.1f}"
    rows = [
        (
            "CPU per job, every process summed, client included (single / batched)",
            f"{col(lambda r: r.celery_cpu / 1000, ms)} ms",
            f"{col(lambda r: r.jc_single_cpu / 1000, ms)} / {col(lambda r: r.jc_batched_cpu / 1000, ms)} ms",
            _ratios(cpu),
            "≤ Celery's ÷ 1.5 (aim ≤ 2 ms)",
            _met(rounds, lambda r: min(r.jc_single_cpu, r.jc_batched_cpu) * 1.5 <= r.celery_cpu),
        ),
        (
            "end to end, single SubmitJob calls (16 in flight)",
            f"{col(lambda r: r.celery_e2e.per_s)} jobs/s",
            f"{col(lambda r: r.jc_single.per_s)} jobs/s",
            _ratios(single),
            "≥ 1.0× Celery (aim ≥ 1.5×)",
            _met(rounds, lambda r: r.jc_single.per_s >= r.celery_e2e.per_s),
        ),
        (
            "end to end, SubmitJobs batches of 1,000",
            "same",
            f"{col(lambda r: r.jc_batched.per_s)} jobs/s",
            _ratios(batched),
            "≥ 1.0× Celery (aim ≥ 2× and ≥ 1,000/s)",
            _met(rounds, lambda r: r.jc_batched.per_s >= r.celery_e2e.per_s),
        ),
        (
            "SubmitJob alone, 16 in flight, one server",
            "—",
            f"{col(lambda r: r.jc_submit.per_s)}/s, p99 {col(lambda r: r.jc_submit_lat.p99, ms)} ms, "
            f"server CPU {col(lambda r: r.jc_submit_server_cpu / 1000, '{:.2f}')} ms a call",
            "",
            "server CPU ≤ 0.6 ms a call (aim ≤ 0.35 ms)",
            _met(rounds, lambda r: r.jc_submit_server_cpu <= 600),
        ),
        (
            "SubmitJobs stored (batches of 1,000)",
            "—",
            f"{col(lambda r: r.jc_stored.per_s)} jobs/s",
            "",
            "(aim ≥ 50,000 jobs/s)",
            _met(rounds, lambda r: r.jc_stored.per_s >= 50_000),
        ),
        (
            "submit → start at 100 jobs/s (Celery: send → task start; jobcluster: created_at → claim)",
            f"p50 {col(lambda r: r.celery_start.p50, ms)} ms, p99 {col(lambda r: r.celery_start.p99, ms)} ms",
            f"p50 {col(lambda r: r.jc_start.p50, ms)} ms, p99 {col(lambda r: r.jc_start.p99, ms)} ms",
            "",
            "p50 ≤ Celery's (aim ≤ half)",
            _met(rounds, lambda r: r.jc_start.p50 <= r.celery_start.p50),
        ),
    ]
    head = ("figure", "Celery", "jobcluster", "ratio", "goal", "met")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def round_line(i: int, r: Round) -> str:
    """One round's figures on one line, printed as the bench goes."""
    return (
        f"round {i}: Celery {r.celery_e2e.per_s:,.0f} jobs/s ({r.celery_cpu / 1000:.1f} ms CPU a task), "
        f"start p50 {r.celery_start.p50:.1f} ms | jobcluster single {r.jc_single.per_s:,.0f} "
        f"({r.jc_single_cpu / 1000:.1f} ms CPU a job), batched {r.jc_batched.per_s:,.0f} jobs/s "
        f"({r.jc_batched_cpu / 1000:.1f} ms), "
        f"SubmitJob {r.jc_submit.per_s:,.0f}/s p99 {r.jc_submit_lat.p99:.1f} ms, "
        f"stored {r.jc_stored.per_s:,.0f}/s, start p50 {r.jc_start.p50:.1f} p99 {r.jc_start.p99:.1f} ms"
    )


def cpu_seconds(root_pid: int) -> float:
    """CPU seconds (user + system) used so far by ``root_pid`` and its live descendants, with the children
    each has reaped (PostgreSQL's backends are children of its postmaster, a worker's jobs of its
    launcher): a cost per call that a loaded machine disturbs far less than a rate."""
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])
        used[pid] = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
    tree, todo = set(), [root_pid]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += [child for child, p in parent.items() if p == pid and child not in tree]
    return sum(used.get(pid, 0.0) for pid in tree)


class Cpu:
    """CPU the processes ``pids`` (each with its descendants) and this client spent between :meth:`mark`
    (at creation too) and :meth:`per` / :meth:`total_per`."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.mark()

    def mark(self) -> None:
        self.marked = [cpu_seconds(p) for p in self.pids]
        self.client = time.process_time()  # this process: the measuring client

    def used(self) -> tuple[list[float], float]:
        """CPU seconds each process used since the mark, and this client's."""
        return [cpu_seconds(p) - m for p, m in zip(self.pids, self.marked)], time.process_time() - self.client

    def per(self, n: int) -> str:
        """The first two processes (the server, PostgreSQL) and the client, per call, as words."""
        (server, postgres, *_), client = self.used()
        return (
            f"server {server * 1e6 / n:,.0f} µs, PostgreSQL {postgres * 1e6 / n:,.0f} µs, "
            f"client {client * 1e6 / n:,.0f} µs CPU"
        )

    def total_per(self, n: int) -> float:
        """Every process and the client: µs of CPU per job."""
        used, client = self.used()
        return (sum(used) + client) * 1e6 / n
