"""The metrics' documentation and dashboard match the metrics (jobcluster/metrics.py), the web UI serves its
own /metrics without a login, and a wrong metrics address is refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from jobcluster import metrics
from jobcluster.settings import ConfigError, Settings
from tests.unit.fake_jobservice import SERVERS, FakeConnector, ui_client
from webui.config import ui_config

ROOT = Path(__file__).resolve().parents[2]


def _ours() -> dict[str, str]:
    """Every jobcluster_* metric defined: its documented name (counters with _total) -> its type."""
    found = {}
    for family in REGISTRY.collect():
        if family.name.startswith("jobcluster_"):
            name = family.name + ("_total" if family.type == "counter" else "")
            found[name] = family.type
    return found


def _series(name: str, kind: str) -> set[str]:
    """The series names a metric is scraped as (a histogram's _bucket, _count, _sum)."""
    return {name + s for s in ("_bucket", "_count", "_sum")} if kind == "histogram" else {name}


def test_every_metric_is_in_the_operations_table_and_nothing_else_is():
    text = (ROOT / "docs/operations.md").read_text()
    table = set(re.findall(r"^\| `(jobcluster_[a-z_]+)` \|", text, re.M))
    assert table == set(_ours()), f"docs/operations.md metrics table vs jobcluster/metrics.py: {table ^ set(_ours())}"
    assert len(_ours()) >= 16


def test_every_metric_the_dashboard_uses_exists():
    dashboard = json.loads((ROOT / "docs/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bjobcluster_[a-z_]+", expr)}
    known = {series for name, kind in _ours().items() for series in _series(name, kind)}
    assert used and used <= known, f"the dashboard uses metrics that do not exist: {used - known}"
    for needed in ("jobcluster_jobs_finished_total", "jobcluster_queue_depth", "jobcluster_leader"):
        assert needed in used


def test_the_web_ui_serves_its_metrics_without_a_login():
    config = ui_config(Settings(), "127.0.0.1:8080", password="a long enough password")
    assert config.login_required
    for client in ui_client(FakeConnector(SERVERS), config):
        assert client.get("/jobs").status_code in (302, 303)  # pages want the login
        client.get("/api/health")
        reply = client.get("/metrics")
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(reply.text)}
        counted = {
            tuple(sorted(s.labels.items())): s.value
            for s in families["jobcluster_webui_requests"].samples
            if s.name.endswith("_total")
        }
        assert counted[(("code", "200"), ("method", "GET"))] >= 1  # /api/health, counted before this scrape


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"metrics_addr": "nonsense"}, "METRICS_ADDR=nonsense: give host:port"),
        ({"metrics_addr": "127.0.0.1:70000"}, "METRICS_ADDR"),
        ({"metrics_port": 70000}, "METRICS_PORT=70000"),
    ],
)
def test_a_wrong_metrics_address_is_named(fields, message):
    with pytest.raises(ConfigError) as err:
        metrics.metrics_address(Settings(**fields))
    assert message in str(err.value)


def test_the_metrics_address():
    assert metrics.metrics_address(Settings()) is None
    assert metrics.metrics_address(Settings(metrics_port=9101)) == ("127.0.0.1", 9101)
    assert metrics.metrics_address(Settings(metrics_addr="[::1]:9102")) == ("::1", 9102)
    assert metrics.metrics_address(Settings(metrics_addr="10.0.0.5:9103", metrics_port=1)) == ("10.0.0.5", 9103)
