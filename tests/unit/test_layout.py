"""The library is exactly what the programs import (docs/design.md, Layout).

Reads the import statements of the code (no import runs): ``jobcluster/`` imports nothing from the programs
or the dev tools, the programs import nothing from the dev tools, and every library module is reached from
a program.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = "jobcluster"
PROGRAMS = ("scheduler_server", "worker", "client", "webui")
DEVTOOLS = "devtools"
#: packages of data, read through importlib.resources (jobcluster/sqlfile.py), not imported
DATA_PACKAGES = {"jobcluster.sql", "jobcluster.sql.migrations"}


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(*packages: str) -> dict[str, Path]:
    return {_name(p): p for package in packages for p in sorted((ROOT / package).rglob("*.py"))}


def _imported(name: str, path: Path) -> set[str]:
    """Every module name an import statement of ``path`` names (``from a import b`` names ``a`` and ``a.b``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _importing(packages: tuple[str, ...], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Module of ``packages`` -> what it imports from ``forbidden`` (top-level names), for those that do."""
    found = {
        name: sorted(n for n in _imported(name, path) if _top(n) in forbidden)
        for name, path in _modules(*packages).items()
    }
    return {name: names for name, names in found.items() if names}


def test_the_library_imports_no_program_and_no_dev_tool() -> None:
    wrong = _importing((LIBRARY,), (*PROGRAMS, DEVTOOLS, "tests"))
    assert not wrong, wrong


def test_no_program_imports_the_dev_tools() -> None:
    wrong = _importing(PROGRAMS, (DEVTOOLS, "tests"))
    assert not wrong, wrong


def test_every_library_module_is_imported_by_a_program() -> None:
    modules = _modules(LIBRARY, *PROGRAMS)
    graph = {}
    for name, path in modules.items():
        named = _imported(name, path)
        # importing a package's module runs the package's __init__ too
        parents = {".".join(n.split(".")[:i]) for n in named for i in range(1, n.count(".") + 1)}
        graph[name] = (named | parents) & modules.keys()
    seen: set[str] = set()
    todo = [name for name in modules if _top(name) in PROGRAMS]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    unused = sorted(name for name in modules if _top(name) == LIBRARY and name not in seen | DATA_PACKAGES)
    assert not unused, f"library modules no program imports (move them to devtools/ or delete them): {unused}"


def test_the_wheel_leaves_the_dev_tools_out() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    include = text.split("[tool.setuptools.packages.find]", 1)[1].split("include = [", 1)[1].split("]", 1)[0]
    patterns = {p.strip().strip('"') for p in include.split(",") if p.strip()}
    assert patterns == {f"{p}*" for p in (LIBRARY, *PROGRAMS)}, patterns
    assert not (ROOT / LIBRARY / DEVTOOLS).exists()
