"""`make bench`'s figures: what one round measures, issue 11's goals, and the table printed at the end."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


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
    celery_start: Latency
    jc_single: Rate  # end to end, single SubmitJob calls
    jc_batched: Rate  # end to end, SubmitJobs of 1,000
    jc_submit: Rate  # SubmitJob alone, no workers running
    jc_submit_lat: Latency
    jc_stored: Rate  # SubmitJobs alone: jobs stored per second
    jc_start: Latency


def _span(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}–{fmt.format(hi)}"


def _met(rounds: Sequence[Round], ok: Callable[[Round], bool]) -> str:
    n = sum(1 for r in rounds if ok(r))
    return f"{'met' if n == len(rounds) else 'NOT met'} ({n}/{len(rounds)} rounds)"


def table(rounds: Sequence[Round]) -> str:
    """Issue 11's table, a range over the rounds per figure, each goal beside it and whether it is met."""

    def col(get: Callable[[Round], float], fmt: str = "{:,.0f}") -> str:
        return _span([get(r) for r in rounds], fmt)

    single = [r.jc_single.per_s / r.celery_e2e.per_s for r in rounds]
    batched = [r.jc_batched.per_s / r.celery_e2e.per_s for r in rounds]
    ms = "{:.1f}"
    rows = [
        (
            "end to end, single SubmitJob calls (16 in flight)",
            f"{col(lambda r: r.celery_e2e.per_s)} jobs/s",
            f"{col(lambda r: r.jc_single.per_s)} jobs/s",
            f"{_span(single, '{:.2f}')}×",
            "≥ 1.5× Celery",
            _met(rounds, lambda r: r.jc_single.per_s >= 1.5 * r.celery_e2e.per_s),
        ),
        (
            "end to end, SubmitJobs batches of 1,000",
            "same",
            f"{col(lambda r: r.jc_batched.per_s)} jobs/s",
            f"{_span(batched, '{:.2f}')}×",
            "≥ 2× Celery and ≥ 1,000/s",
            _met(rounds, lambda r: r.jc_batched.per_s >= max(2 * r.celery_e2e.per_s, 1000)),
        ),
        (
            "SubmitJob alone, 16 in flight, one server",
            "—",
            f"{col(lambda r: r.jc_submit.per_s)}/s, p99 {col(lambda r: r.jc_submit_lat.p99, ms)} ms",
            "",
            "≥ 2,500/s, p99 ≤ 15 ms",
            _met(rounds, lambda r: r.jc_submit.per_s >= 2500 and r.jc_submit_lat.p99 <= 15),
        ),
        (
            "SubmitJobs stored (batches of 1,000)",
            "—",
            f"{col(lambda r: r.jc_stored.per_s)} jobs/s",
            "",
            "≥ 50,000 jobs/s",
            _met(rounds, lambda r: r.jc_stored.per_s >= 50_000),
        ),
        (
            "submit → start at 100 jobs/s",
            f"p50 {col(lambda r: r.celery_start.p50, ms)} ms, p99 {col(lambda r: r.celery_start.p99, ms)} ms",
            f"p50 {col(lambda r: r.jc_start.p50, ms)} ms, p99 {col(lambda r: r.jc_start.p99, ms)} ms",
            "",
            "p50 ≤ 1 ms, p99 ≤ 3 ms",
            _met(rounds, lambda r: r.jc_start.p50 <= 1 and r.jc_start.p99 <= 3),
        ),
    ]
    head = ("figure", "Celery", "jobcluster", "ratio", "goal", "met")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def round_line(i: int, r: Round) -> str:
    """One round's figures on one line, printed as the bench goes."""
    return (
        f"round {i}: Celery {r.celery_e2e.per_s:,.0f} jobs/s, start p50 {r.celery_start.p50:.1f} ms | "
        f"jobcluster single {r.jc_single.per_s:,.0f}, batched {r.jc_batched.per_s:,.0f} jobs/s, "
        f"SubmitJob {r.jc_submit.per_s:,.0f}/s p99 {r.jc_submit_lat.p99:.1f} ms, "
        f"stored {r.jc_stored.per_s:,.0f}/s, start p50 {r.jc_start.p50:.1f} p99 {r.jc_start.p99:.1f} ms"
    )
