"""The lock files hold every dependency with its hashes, agree with pyproject.toml, and are what is installed.

Runs scripts/lock.py (offline): ``--check`` reads the locks against pyproject.toml, ``--installed`` this
interpreter's packages against requirements/dev.lock. A failure names the package and says to run
``make lock`` (on purpose) or ``make deps``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = [sys.executable, str(ROOT / "scripts" / "lock.py")]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LOCK, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_the_locks_agree_with_pyproject() -> None:
    done = run("--check")
    assert done.returncode == 0, done.stderr


def test_what_is_installed_is_exactly_the_lock() -> None:
    done = run("--installed")
    assert done.returncode == 0, done.stderr


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of pyproject.toml, the locks and the script, to break."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "lock.py", tmp_path / "scripts")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    return tmp_path


def check(copy: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(copy / "scripts" / "lock.py"), "--check"], capture_output=True, text=True, timeout=60
    )


def test_a_range_the_lock_does_not_satisfy_fails_the_check(copy: Path) -> None:
    pyproject = copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"aetcd==1.0.0"', '"aetcd>=1.1"'))
    done = check(copy)
    assert done.returncode == 1
    assert "aetcd==1.0.0 does not satisfy aetcd>=1.1" in done.stderr and "make lock" in done.stderr


def test_a_new_dependency_not_in_the_lock_fails_the_check(copy: Path) -> None:
    pyproject = copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"aetcd==1.0.0",', '"aetcd==1.0.0",\n    "nosuchpkg>=1",'))
    done = check(copy)
    assert done.returncode == 1
    assert "nosuchpkg>=1 (pyproject.toml) is not locked" in done.stderr


def test_a_pin_without_its_hash_fails_the_check(copy: Path) -> None:
    lock = copy / "requirements" / "dev.lock"
    kept, pin = [], ""
    for line in lock.read_text().splitlines(keepends=True):
        if not line.startswith((" ", "#")):
            pin = line
        if not (pin.startswith("croniter==") and line.strip().startswith("--hash")):
            kept.append(line)
    lock.write_text("".join(kept))
    done = check(copy)
    assert done.returncode == 1
    assert "croniter==7.0.0 has no hash" in done.stderr


def test_bench_and_dev_locks_pin_the_same_versions(copy: Path) -> None:
    bench = copy / "requirements" / "bench.lock"
    bench.write_text(bench.read_text().replace("\naetcd==1.0.0 ", "\naetcd==0.9.9 "))
    done = check(copy)
    assert done.returncode == 1
    assert "bench.lock pins aetcd==0.9.9, dev.lock 1.0.0" in done.stderr
