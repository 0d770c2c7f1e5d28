"""Charts as inline SVG, drawn on the server from GetStats (no script, nothing loaded from elsewhere: the
Content-Security-Policy stays ``default-src 'self'``). Colours come from classes in style.css, never from
``style`` attributes, which that policy would block.

Each data point is an element with ``data-*`` attributes (its minute or bucket and its count) and a
``<title>`` a browser shows on hover.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from markupsafe import Markup, escape

from jobcluster.pb import scheduler_pb2 as pb

WIDTH, HEIGHT, PAD = 640, 150, 28
#: Stacked bottom to top.
FINISHED_ORDER = ("SUCCEEDED", "FAILED", "CANCELLED")
DEPTH_SERIES = ("pending", "processing", "delayed", "dlq")


def _hhmm(ms: int) -> str:
    return time.strftime("%H:%M", time.gmtime(ms / 1000)) + " UTC"


def _frame(kind: str, label: str, top: int, inner: str, first: str, last: str) -> Markup:
    return Markup(
        f'<svg class="chart {kind}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<line class="axis" x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - 4}" y2="{HEIGHT - PAD}"/>'
        f'<text class="tick" x="2" y="12">{top}</text><text class="tick" x="2" y="{HEIGHT - PAD}">0</text>'
        f'<text class="tick" x="{PAD}" y="{HEIGHT - 8}">{escape(first)}</text>'
        f'<text class="tick end" x="{WIDTH - 4}" y="{HEIGHT - 8}">{escape(last)}</text>{inner}</svg>'
    )


def finished_per_minute(minutes: Sequence[pb.MinuteStats]) -> Markup:
    """Stacked bars: jobs that ended in each minute, by status."""
    if not minutes:
        return Markup("")
    totals = [sum(c.count for c in m.finished) for m in minutes]
    top = max(1, *totals)
    step = (WIDTH - 4 - PAD) / len(minutes)
    plot = HEIGHT - 2 * PAD
    parts = []
    for i, m in enumerate(minutes):
        counts = {c.status: c.count for c in m.finished}
        y = float(HEIGHT - PAD)
        for status in FINISHED_ORDER:
            n = counts.get(status, 0)
            if not n:
                continue
            h = max(1.0, plot * n / top)
            y -= h
            parts.append(
                f'<rect class="bar s-{status}" x="{PAD + i * step + 1:.1f}" y="{y:.1f}" '
                f'width="{max(1.0, step - 2):.1f}" height="{h:.1f}" data-minute="{m.minute_ms}" '
                f'data-status="{status}" data-n="{n}"><title>{_hhmm(m.minute_ms)}: {n} {status}</title></rect>'
            )
    label = f"Jobs finished per minute by status, last {len(minutes)} minutes"
    return _frame("finished", label, top, "".join(parts), f"-{len(minutes)} min", "now")


def queue_depths(minutes: Sequence[pb.MinuteStats]) -> Markup:
    """Lines: the queue depths the leader sampled, the last sample of each minute."""
    sampled = [(i, m) for i, m in enumerate(minutes) if m.has_depths]
    if not minutes:
        return Markup("")
    top = max([1, *(getattr(m, s) for _, m in sampled for s in DEPTH_SERIES)])
    step = (WIDTH - 4 - PAD) / len(minutes)
    plot = HEIGHT - 2 * PAD
    parts = []
    for series in DEPTH_SERIES:
        points = [(PAD + (i + 0.5) * step, HEIGHT - PAD - plot * getattr(m, series) / top, m) for i, m in sampled]
        if not points:
            continue
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
            parts.append(f'<polyline class="line q-{series}" points="{path}"/>')
        parts += [
            f'<circle class="point q-{series}" cx="{x:.1f}" cy="{y:.1f}" r="2.5" data-minute="{m.minute_ms}" '
            f'data-series="{series}" data-n="{getattr(m, series)}"><title>{_hhmm(m.minute_ms)}: '
            f"{series} {getattr(m, series)}</title></circle>"
            for x, y, m in points
        ]
    label = f"Queue depths, last {len(minutes)} minutes"
    return _frame("depths", label, top, "".join(parts), f"-{len(minutes)} min", "now")


def _bucket_label(bound: float, previous: float) -> str:
    def short(s: float) -> str:
        if s < 1:
            return f"{s * 1000:g} ms"
        if s < 60:
            return f"{s:g} s"
        if s < 3600:
            return f"{s / 60:g} min"
        return f"{s / 3600:g} h"

    return f"> {short(previous)}" if bound == 0 else f"≤ {short(bound)}"


def durations(buckets: Sequence[pb.DurationBucket]) -> Markup:
    """Bars: how many of the jobs ran how long (the buckets of GetStats)."""
    if not buckets or not any(b.count for b in buckets):
        return Markup("")
    top = max(b.count for b in buckets)
    step = (WIDTH - 4 - PAD) / len(buckets)
    plot = HEIGHT - 2 * PAD
    parts = []
    previous = 0.0
    for i, b in enumerate(buckets):
        label = _bucket_label(b.up_to_seconds, previous)
        previous = b.up_to_seconds or previous
        h = plot * b.count / top
        x = PAD + i * step
        parts.append(
            f'<rect class="hbar" x="{x + 2:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{step - 4:.1f}" '
            f'height="{h:.1f}" data-bucket="{escape(label)}" data-n="{b.count}"><title>{escape(label)}: '
            f"{b.count} job{'' if b.count == 1 else 's'}</title></rect>"
            f'<text class="tick mid" x="{x + step / 2:.1f}" y="{HEIGHT - PAD + 12}">{escape(label)}</text>'
        )
    return Markup(
        f'<svg class="chart histogram" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="How long the jobs ran" '
        f'xmlns="http://www.w3.org/2000/svg"><line class="axis" x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - 4}" '
        f'y2="{HEIGHT - PAD}"/><text class="tick" x="2" y="12">{top}</text>{"".join(parts)}</svg>'
    )
