"""The docs name only things that exist, and every setting is documented.

Reads README.md, docs/*.md, webui/README.md, the Makefile and .env.example, and
looks at :class:`jobcluster.settings.Settings`. No other I/O.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from jobcluster.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "webui" / "README.md"]
README_MAX_LINES = 200

#: UPPER_CASE names the docs may use that are not settings, each with why.
NOT_SETTINGS = {
    # make variables (Makefile), not read by the programs
    "SERVER_COUNT", "WORKER_COUNT", "BASE_PORT", "CMD", "FILE",
    # what a job sees in its environment (worker/shell.py)
    "JOB_ID", "JOB_ATTEMPT", "JOBCLUSTER_JOB_MARK", "SAFE_ENV", "LC_ALL", "LC_CTYPE",
    # gRPC status codes and health states
    "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED",
    "PERMISSION_DENIED", "NOT_SERVING",
    # etcdctl's and redis-cli's own variables; the client's usage line (argparse metavar)
    "ETCDCTL_API", "REDISCLI_AUTH", "JOBS_JSON",
    # Linux capabilities named in the docs
    "CAP_SYS_CHROOT",
    # make variables of make logs and make bench
    "ALL", "SCALE", "ROUNDS",
}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _code(text: str) -> str:
    """The fenced code blocks and inline code spans of a Markdown text, one per line."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    inline = re.findall(r"`([^`\n]+)`", prose)
    return "\n".join([*fenced, *inline])


def _make_targets() -> set[str]:
    targets: set[str] = set()
    for line in _text(ROOT / "Makefile").splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+(?:\s+[A-Za-z0-9_.-]+)*)\s*:(?![:=])", line)
        if m and not line.startswith((".", "\t")):
            targets.update(m.group(1).split())
    return targets


def _setting_names() -> set[str]:
    return {f.name.upper() for f in dataclasses.fields(Settings) if f.name != "extra"}


def _env_example_keys() -> set[str]:
    keys: set[str] = set()
    for line in _text(ROOT / ".env.example").splitlines():
        m = re.match(r"^\s*(?:#\s*)?([A-Z][A-Z0-9_]*)=", line)
        if m:
            keys.add(m.group(1))
    return keys


def _mentions(name: str, text: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text) is not None


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_\[\]()]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", _text(path), flags=re.S | re.M)
    return {_slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose, flags=re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_every_make_target_named_exists(doc: Path) -> None:
    targets = _make_targets()
    missing = set()
    for command in re.findall(r"(?<![\w./-])make((?:[ \t]+[^\s`'\"|;&#]+)*)", _code(_text(doc))):
        words = [w for w in command.split() if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)]
        if words and re.match(r"^[a-z][a-z0-9-]*$", words[0]) and words[0] not in targets:
            missing.add(words[0])
    assert not missing, f"{_rel(doc)} names make target(s) the Makefile lacks: {', '.join(sorted(missing))}"


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_every_setting_named_exists(doc: Path) -> None:
    settings, example = _setting_names(), _env_example_keys()
    named = set(re.findall(r"(?<![A-Za-z0-9_])[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+(?![A-Za-z0-9_])", _text(doc)))
    unknown = sorted(n for n in named - NOT_SETTINGS if n not in settings or n not in example)
    problems = [f"{n} (in Settings: {n in settings}, in .env.example: {n in example})" for n in unknown]
    assert not problems, (f"{_rel(doc)} names setting(s) that do not exist (or add them to NOT_SETTINGS "
                          f"in this test if they are not settings): {'; '.join(problems)}")


def test_every_setting_is_documented() -> None:
    example = _env_example_keys()
    docs = _text(OPERATIONS) + _text(README)
    missing_example = sorted(_setting_names() - example)
    assert not missing_example, f".env.example lacks setting(s) of Settings: {', '.join(missing_example)}"
    undocumented = sorted(n for n in _setting_names() if not _mentions(n, docs))
    assert not undocumented, f"docs/operations.md and README.md never mention setting(s): {', '.join(undocumented)}"


def test_every_env_example_key_is_a_setting() -> None:
    extra = sorted(_env_example_keys() - _setting_names())
    assert not extra, f".env.example has key(s) that are not Settings fields: {', '.join(extra)}"


def test_readme_fits() -> None:
    lines = len(_text(README).splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, over {README_MAX_LINES}: move detail to docs/"


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_relative_links_resolve(doc: Path) -> None:
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", _text(doc), flags=re.S | re.M)
    broken = []
    for target in re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {_rel(dest)})")
    assert not broken, f"{_rel(doc)} has broken link(s): {'; '.join(broken)}"


def _layout_rows() -> list[str]:
    """The module column of the Layout table in docs/design.md."""
    section = _text(ROOT / "docs" / "design.md").split("## Layout", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)`", section, re.MULTILINE)


def test_the_layout_map_matches_the_tree() -> None:
    """Every path the map names exists, and every hand-written module of the code is on it."""
    rows = _layout_rows()
    assert rows, "docs/design.md has no Layout table"
    for row in rows:
        path = row.rstrip("/")
        assert list(ROOT.glob(path)), f"docs/design.md Layout names {row}, which does not exist"
    covered = [r for r in rows if r.endswith(".py")]
    folders = [r for r in rows if r.endswith("/")]
    for package in ("jobcluster", "scheduler_server", "worker", "client", "webui"):
        for module in sorted((ROOT / package).rglob("*.py")):
            rel = _rel(module)
            if module.name == "__init__.py" and module.stat().st_size < 200:
                continue  # a package marker
            assert rel in covered or any(rel.startswith(f) for f in folders), \
                f"{rel} is not on the Layout map in docs/design.md"
