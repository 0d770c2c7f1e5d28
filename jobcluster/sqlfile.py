"""Load SQL statements kept in named blocks (``-- name: x``) of a ``.sql`` file."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse_named_blocks(text: str) -> dict[str, str]:
    """Map each ``-- name:`` to the SQL below it, up to the next name."""
    parts = _NAME.split(text)
    blocks: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        sql = "\n".join(lines).strip().rstrip(";")
        if name in blocks:
            raise ValueError(f"SQL block {name!r} is defined twice")
        blocks[name] = sql
    return blocks


def load_queries(filename: str) -> dict[str, str]:
    """The named statements of ``jobcluster/sql/<filename>`` (one file per concern, e.g. ``jobs.sql``)."""
    text = resources.files("jobcluster.sql").joinpath(filename).read_text(encoding="utf-8")
    return parse_named_blocks(text)


def migrations() -> list[tuple[str, str]]:
    """``(version, sql)`` for each file of ``jobcluster/sql/migrations``, in order."""
    folder = resources.files("jobcluster.sql").joinpath("migrations")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]
