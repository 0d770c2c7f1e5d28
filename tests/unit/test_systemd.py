"""`make systemd`'s units: `systemd-analyze verify` finds nothing wrong, and would say so if it did.

Runs /usr/bin/systemd-analyze on units generated for this virtual environment
(so every ExecStart exists); skipped only where systemd-analyze is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import systemd
from jobcluster.settings import Settings

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed here (Debian package systemd); the units are not checked"
)
#: The units to verify: templates through one instance each.
INSTANCES = (
    "jobcluster-server@50051.service",
    "jobcluster-worker@1.service",
    "jobcluster-webui.service",
    "jobcluster.target",
)
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "systemd"
EXAMPLE_VENV = Path("/opt/jobcluster/.venv")


def _generate(out: Path, settings: Settings | None = None) -> dict[str, str]:
    units = systemd.render(systemd.UnitOptions(venv=Path(sys.prefix)), settings or Settings.from_env({}))
    systemd.write(out, units)
    return units


def _verify(out: Path) -> str:
    """What systemd-analyze verify says about the units in ``out`` (empty: nothing wrong)."""
    assert ANALYZE is not None
    # Exit 0 with a warning on stderr is how it reports an unknown key or a bad value: both count.
    done = subprocess.run(
        [ANALYZE, "verify", "--man=no", *(str(out / name) for name in INSTANCES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return (done.stdout + done.stderr).strip() + ("" if done.returncode == 0 else f"\n(exit {done.returncode})")


@needs_analyze
def test_generated_units_verify_clean(tmp_path: Path) -> None:
    _generate(tmp_path)
    assert _verify(tmp_path) == ""


@needs_analyze
@pytest.mark.parametrize(
    ("unit", "line", "broken"),
    [
        ("jobcluster-worker@.service", "KillMode=mixed", "KillMode=bogus"),
        ("jobcluster-worker@.service", "ProtectSystem=full", "ProtecSystem=full"),
        ("jobcluster-server@.service", "/bin/jobcluster-server ", "/bin/jobcluster-nothere "),
        ("jobcluster-webui.service", "[Install]", "[Instal]"),
    ],
)
def test_verify_reports_a_broken_unit(tmp_path: Path, unit: str, line: str, broken: str) -> None:
    units = _generate(tmp_path)
    assert line in units[unit]
    (tmp_path / unit).write_text(units[unit].replace(line, broken, 1))
    assert _verify(tmp_path) != ""


def test_worker_stop_outlasts_its_grace() -> None:
    """systemd must not SIGKILL a worker while it still lets running jobs finish (WORKER_SHUTDOWN_GRACE)."""
    settings = Settings.from_env({"WORKER_SHUTDOWN_GRACE": "2m"})
    unit = systemd.worker_unit(systemd.UnitOptions(venv=Path(sys.prefix)), settings)
    stop = re.search(r"^TimeoutStopSec=(\d+)s$", unit, re.M)
    assert stop and int(stop.group(1)) >= 120 + 10
    # SIGTERM to the worker alone (it stops its jobs itself); SIGKILL to anything left at the end.
    assert "KillMode=mixed" in unit
    # the launcher needs these to start a job as JOB_USER; kill, to end a job group of another uid.
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M)
    assert caps and {"CAP_SETUID", "CAP_SETGID", "CAP_KILL"} <= set(caps.group(1).split())
    assert "User=root" in unit


def test_servers_and_ui_run_unprivileged() -> None:
    units = systemd.render(systemd.UnitOptions(venv=Path(sys.prefix)), Settings.from_env({}))
    for name in ("jobcluster-server@.service", "jobcluster-webui.service"):
        assert "User=jobcluster" in units[name]
        assert re.search(r"^CapabilityBoundingSet=$", units[name], re.M), name


def test_committed_example_is_current() -> None:
    """docs/systemd/ is `make systemd` for /opt/jobcluster with the default settings."""
    units = systemd.render(systemd.UnitOptions(venv=EXAMPLE_VENV), Settings.from_env({}))
    for name, text in units.items():
        assert (EXAMPLE / name).read_text() == text, (
            f"docs/systemd/{name} is stale: .venv/bin/python -m devtools.systemd "
            f"--venv {EXAMPLE_VENV} --out docs/systemd --settings /dev/null"
        )
