"""The lock files: every dependency, direct and transitive, pinned with its hashes.

    python scripts/lock.py             rewrite requirements/*.lock from pyproject.toml (make lock; needs PyPI)
    python scripts/lock.py --check     fail when pyproject.toml and the locks disagree (offline)
    python scripts/lock.py --installed fail when this interpreter's packages differ from requirements/dev.lock

``dev.lock`` is what ``make deps`` installs: the project's dependencies, its ``dev`` extra, pip and the
build backend (the project is installed without build isolation, so nothing is fetched unpinned).
``bench.lock`` adds the ``bench`` extra (Celery, for ``make bench`` only) with every shared pin equal.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"
UV = "uv==0.13.10"
PIP = "pip==26.3"
PYTHON = "3.11"
# Each lock: the extras it holds beyond the project's own dependencies.
EXTRAS = {"dev": ("dev",), "bench": ("dev", "bench")}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def pyproject() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def wanted(lock: str) -> list[Requirement]:
    """What ``lock`` must satisfy: the project's dependencies, its extras, the build backend and pip."""
    project = pyproject()
    deps: dict[str, list[str]] = project["project"]["optional-dependencies"]  # type: ignore[index]
    reqs = list(project["project"]["dependencies"])  # type: ignore[index]
    for extra in EXTRAS[lock]:
        reqs += deps[extra]
    reqs += project["build-system"]["requires"]  # type: ignore[index]
    reqs.append(PIP)
    return [Requirement(r) for r in reqs]


def pins(path: Path, here: bool = False) -> dict[str, tuple[str, int]]:
    """{canonical name: (version, number of hashes)} of a lock file; ``here``: only what this interpreter
    installs from it (environment markers evaluated)."""
    found: dict[str, tuple[str, int]] = {}
    name = None
    for line in path.read_text().splitlines():
        m = _PIN.match(line)
        if m and here and m.group(4) and not Marker(m.group(4)).evaluate():
            name = None
        elif m:
            name = canonicalize_name(m.group(1))
            found[name] = (m.group(3), 0)
        elif name and line.strip().startswith("--hash=sha256:"):
            version, hashes = found[name]
            found[name] = (version, hashes + 1)
    return found


def problems(lock: str) -> list[str]:
    """Why ``requirements/<lock>.lock`` does not match pyproject.toml (empty when it does)."""
    path = LOCKS / f"{lock}.lock"
    if not path.exists():
        return [f"{path.relative_to(ROOT)} is missing: run `make lock`"]
    locked = pins(path)
    out = []
    for name, (version, hashes) in sorted(locked.items()):
        if hashes == 0:
            out.append(f"{path.name}: {name}=={version} has no hash")
    for req in wanted(lock):
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        if name not in locked:
            out.append(f"{path.name}: {req} (pyproject.toml) is not locked: run `make lock`")
        elif not req.specifier.contains(locked[name][0], prereleases=True):
            out.append(
                f"{path.name}: {name}=={locked[name][0]} does not satisfy {req} (pyproject.toml): run `make lock`"
            )
    return out


def check() -> list[str]:
    found = [p for lock in EXTRAS for p in problems(lock)]
    dev, bench = pins(LOCKS / "dev.lock"), pins(LOCKS / "bench.lock") if (LOCKS / "bench.lock").exists() else {}
    for name, (version, _) in dev.items():
        if name in bench and bench[name][0] != version:
            found.append(f"bench.lock pins {name}=={bench[name][0]}, dev.lock {version}: run `make lock`")
    return found


def installed() -> list[str]:
    """Packages of this interpreter whose version differs from dev.lock (the project itself excluded)."""
    out = []
    for name, (version, _) in sorted(pins(LOCKS / "dev.lock", here=True).items()):
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{name}=={version} is locked but not installed")
            continue
        if have != version:
            out.append(f"{name} {have} is installed, dev.lock pins {version}")
    return out


def compile_locks() -> None:
    """Rewrite both locks with uv (installed into this interpreter's environment when missing)."""
    if subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True).returncode != 0:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", UV], check=True)
    LOCKS.mkdir(exist_ok=True)
    project = pyproject()
    # the build backend and pip, which [project] does not list
    extra_in = LOCKS / "build-and-pip.in"
    extra_in.write_text("\n".join([*project["build-system"]["requires"], PIP]) + "\n")  # type: ignore[index]
    # Celery 5.7 pins python-dateutil 2.9.0.post0 and croniter 7 wants 4.0.0; Celery runs on 4.0.0
    # (make bench), so the bench lock keeps dev.lock's.
    override = LOCKS / "bench-overrides.txt"
    try:
        for lock, extras in EXTRAS.items():
            more: list[str] = []
            if lock != "dev":
                override.write_text(f"python-dateutil=={pins(LOCKS / 'dev.lock')['python-dateutil'][0]}\n")
                more = ["-c", "requirements/dev.lock", "--override", str(override.relative_to(ROOT))]
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "uv",
                    "pip",
                    "compile",
                    "-q",
                    "--generate-hashes",
                    "--python-version",
                    PYTHON,
                    "--universal",
                    "--no-header",
                    "--annotation-style",
                    "line",
                    "--index-url",
                    "https://pypi.org/simple",
                    *[a for e in extras for a in ("--extra", e)],
                    *more,
                    "-o",
                    f"requirements/{lock}.lock",
                    "pyproject.toml",
                    str(extra_in.relative_to(ROOT)),
                ],
                check=True,
                cwd=ROOT,
            )
            path = LOCKS / f"{lock}.lock"
            path.write_text(
                f"# {lock}.lock: written by `make lock` (scripts/lock.py) from pyproject.toml; do not edit.\n"
                f"# Installed with pip --require-hashes (make {'bench' if lock == 'bench' else 'deps'}).\n"
                + path.read_text()
            )
    finally:
        extra_in.unlink(missing_ok=True)
        override.unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="the locks against pyproject.toml")
    mode.add_argument("--installed", action="store_true", help="this environment against dev.lock")
    args = parser.parse_args()
    if args.check or args.installed:
        found = check() if args.check else installed()
        for line in found:
            print(line, file=sys.stderr)
        return 1 if found else 0
    compile_locks()
    found = check()
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
