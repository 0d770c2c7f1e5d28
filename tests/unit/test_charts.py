"""The charts' SVG (webui/charts.py) and the duration histogram (GetStats)."""

from __future__ import annotations

import re

from jobcluster.pb import scheduler_pb2 as pb
from scheduler_server.api.cluster import DURATION_BUCKETS, histogram
from webui import charts


def test_the_histogram_puts_each_duration_in_its_bucket():
    buckets = histogram([0.001, 0.01, 0.02, 0.5, 4, 4000, 90_000])
    assert len(buckets) == len(DURATION_BUCKETS) + 1 and buckets[-1].up_to_seconds == 0
    counts = {b.up_to_seconds: b.count for b in buckets}
    assert counts[0.01] == 2 and counts[0.1] == 1 and counts[0.5] == 1 and counts[5] == 1 and counts[0] == 2
    assert sum(counts.values()) == 7


def test_finished_bars_stack_by_status_with_their_counts():
    minutes = [pb.MinuteStats(minute_ms=60_000 * i) for i in range(3)]
    minutes[1].finished.add(status="SUCCEEDED", count=5)
    minutes[1].finished.add(status="FAILED", count=2)
    svg = str(charts.finished_per_minute(minutes))
    bars = re.findall(r'data-status="(\w+)" data-n="(\d+)"', svg)
    assert bars == [("SUCCEEDED", "5"), ("FAILED", "2")]
    assert "style=" not in svg and "<script" not in svg  # the CSP forbids inline styles and scripts


def test_depth_points_only_where_a_sample_was_taken():
    minutes = [pb.MinuteStats(minute_ms=60_000 * i) for i in range(4)]
    for m, n in zip(minutes[1:3], (7, 3)):
        m.has_depths, m.pending = True, n
    svg = str(charts.queue_depths(minutes))
    assert re.findall(r'data-series="pending" data-n="(\d+)"', svg) == ["7", "3"]
    assert svg.count("<polyline") == 4  # one line per series, each with two points


def test_a_histogram_with_nothing_to_show_draws_nothing():
    assert str(charts.durations(histogram([]))) == ""
    svg = str(charts.durations(histogram([0.2, 0.3])))
    assert re.findall(r'data-bucket="([^"]+)" data-n="2"', svg) == ["≤ 500 ms"]
