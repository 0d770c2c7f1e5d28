"""Small pieces of wording shared by what the programs print."""

from __future__ import annotations


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``1 attempt``, ``2 attempts``, ``0 attempts`` (``many``: the plural when it is not noun + s)."""
    return f"{n} {noun if n == 1 else many or noun + 's'}"


def plain(doc: str | None) -> str:
    """A module docstring as ``--help`` shows it: without the reStructuredText ````code```` marks."""
    return (doc or "").replace("``", "")
