"""The docs name only things that exist, and every setting is documented.

Reads README.md, docs/*.md, webui/README.md, the Makefile and .env.example, and
looks at :class:`jobcluster.settings.Settings`; reads a few constants and the
leader's duty list from the code's syntax trees (nothing else is imported). No
other I/O.
"""

from __future__ import annotations

import ast
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
    # socket words (the job launcher's, design.md)
    "SCM_RIGHTS",
    "SOCK_SEQPACKET",
    # make variables (Makefile), not read by the programs
    "SERVER_COUNT",
    "WORKER_COUNT",
    "BASE_PORT",
    "CMD",
    "FILE",
    # what a job sees in its environment (worker/shell.py)
    "JOB_ID",
    "JOB_ATTEMPT",
    "JOBCLUSTER_JOB_MARK",
    "SAFE_ENV",
    "LC_ALL",
    "LC_CTYPE",
    # gRPC status codes and health states
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "FAILED_PRECONDITION",
    "DEADLINE_EXCEEDED",
    "RESOURCE_EXHAUSTED",
    "PERMISSION_DENIED",
    "NOT_SERVING",
    # etcdctl's and redis-cli's own variables; the client's usage line (argparse metavar)
    "ETCDCTL_API",
    "REDISCLI_AUTH",
    "JOBS_JSON",
    # Linux capabilities named in the docs
    "CAP_SYS_CHROOT",
    # make variables of make logs and make bench
    "ALL",
    "SCALE",
    "ROUNDS",
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
    assert not problems, (
        f"{_rel(doc)} names setting(s) that do not exist (or add them to NOT_SETTINGS "
        f"in this test if they are not settings): {'; '.join(problems)}"
    )


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
    covered = [r for r in rows if r.endswith((".py", ".c"))]
    folders = [r for r in rows if r.endswith("/")]
    for package in ("jobcluster", "scheduler_server", "worker", "client", "webui", "devtools"):
        for module in sorted([*(ROOT / package).rglob("*.py"), *(ROOT / package).rglob("*.c")]):
            rel = _rel(module)
            if module.name == "__init__.py" and module.stat().st_size < 200:
                continue  # a package marker
            assert rel in covered or any(rel.startswith(f) for f in folders), (
                f"{rel} is not on the Layout map in docs/design.md"
            )


# --- drift between the docs and the code -----------------------------------------------------------------


def _phony_targets() -> list[str]:
    makefile = _text(ROOT / "Makefile").replace("\\\n", " ")
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE)
    assert phony, "the Makefile has no .PHONY line"
    return phony.group(1).split()


def test_every_phony_target_has_a_rule_and_a_row_in_the_operations_table() -> None:
    section = _text(OPERATIONS).split("## Make targets", 1)[1].split("\n## ", 1)[0]
    first_cells = re.findall(r"^\| ([^|]+) \|", section, re.MULTILINE)
    documented = {word for cell in first_cells for word in re.findall(r"`make ([a-z][a-z0-9-]*)", cell)}
    phony = _phony_targets()
    no_rule = sorted(set(phony) - _make_targets())
    assert not no_rule, f"the Makefile's .PHONY names target(s) with no rule: {', '.join(no_rule)}"
    missing = sorted(set(phony) - documented)
    assert not missing, f"docs/operations.md's make-target table lacks: {', '.join(missing)}"


def test_every_sql_file_is_on_the_layout_map() -> None:
    rows = _text(ROOT / "docs" / "design.md").splitlines()
    row = next(r for r in rows if r.startswith("| `jobcluster/sql/*.sql`"))
    listed = set(re.findall(r"`(\w+)`", row.split("|")[2]))
    files = {p.stem for p in (ROOT / "jobcluster" / "sql").glob("*.sql")}
    assert files == listed, f"docs/design.md's SQL list: lacks {sorted(files - listed)}, extra {sorted(listed - files)}"


def _tree(path: str) -> ast.Module:
    return ast.parse(_text(ROOT / path))


def _number(path: str, name: str) -> float:
    """A module-level constant ``NAME = <number>`` of the code."""
    for node in _tree(path).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]:
            return float(ast.literal_eval(node.value))
    raise AssertionError(f"{path} has no {name} = <number>")


def _method(path: str, cls: str, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    klass = next(n for n in _tree(path).body if isinstance(n, ast.ClassDef) and n.name == cls)
    return next(n for n in klass.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name)


def _diagram() -> str:
    """The README's first fenced block: the data-flow diagram."""
    block = re.search(r"^```\n(.*?)^```", _text(README), re.S | re.M)
    assert block, "README.md has no diagram"
    return block.group(1)


#: The leader's duties (those ``Leader.__init__`` hands its Runner, in order) -> their word in the README diagram.
LEADER_DUTIES = {
    "Promote": "promote",
    "Cleanup": "cleanup",
    "reconcile": "reconcile",
    "Cron": "cron",
    "expire": "retention",
    "KeepStats": "stats",
    "ForgetStats": "forget",
}


def test_the_readme_diagram_names_every_leader_duty_in_order() -> None:
    call = next(
        n
        for n in ast.walk(_method("scheduler_server/leader.py", "Leader", "__init__"))
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Runner"
    )
    assert isinstance(call.args[0], ast.List), "Leader.__init__ no longer hands its Runner a list of its duties"
    duties = [
        e.func.id if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) else getattr(e, "attr", "?")
        for e in call.args[0].elts
    ]
    assert set(duties) == set(LEADER_DUTIES), f"the leader runs {duties}: give each its word in LEADER_DUTIES"
    block = _diagram().split("\nleader ", 1)[1]
    shown = re.findall(r"^\s+── (\w+)[,:]", block, re.MULTILINE)
    assert shown == [LEADER_DUTIES[d] for d in duties], f"README's leader duties {shown}, the code's {duties}"


def test_every_interval_in_the_readme_diagram_is_the_codes() -> None:
    tick = _number("scheduler_server/duties.py", "TICK")
    promote = _number("worker/worker.py", "PROMOTE_INTERVAL")
    stats = _number("scheduler_server/stats.py", "SAMPLE_EVERY")
    forget = _number("scheduler_server/stats.py", "FORGET_EVERY")
    reconcile = ast.unparse(_method("scheduler_server/leader.py", "Reconcile", "__init__"))
    assert "settings.reconcile_after / 2" in reconcile, "the leader reconciles at another interval: fix README"
    claims = {
        f"leader (one server, elected through etcd), a round every {tick:g} s": "the leader's round (TICK)",
        f"── every {promote:g} s: ids in delayed_jobs": "the worker's promotion (PROMOTE_INTERVAL)",
        "── reconcile, every RECONCILE_AFTER / 2:": "reconciliation",
        f"── stats, every {stats:g} s:": "the charts' samples (SAMPLE_EVERY)",
        f"── forget, every {forget:g} s:": "forgetting old samples (FORGET_EVERY)",
    }
    diagram = _diagram()
    wrong = [what for claim, what in claims.items() if claim not in diagram]
    assert not wrong, f"README's diagram states another interval than the code for: {', '.join(wrong)}"
    stated = re.findall(r"every [^:\n]+:", diagram)
    assert len(stated) == len(claims), f"an interval in README's diagram that this test does not check: {stated}"


def test_the_burst_flag_is_documented_as_the_worker_says() -> None:
    call = next(
        n
        for n in ast.walk(_tree("worker/__main__.py"))
        if isinstance(n, ast.Call) and [getattr(a, "value", None) for a in n.args] == ["--burst"]
    )
    help_text = next(ast.literal_eval(k.value) for k in call.keywords if k.arg == "help")
    ops = " ".join(_text(OPERATIONS).split())
    assert f"(`--burst`: {help_text})" in ops, f"docs/operations.md should say what `-h` says of --burst: {help_text}"


def _needs_the_checkout_on_the_path(script: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether scripts/<script>.py imports the dev tools, itself or through a sibling script."""
    text = _text(ROOT / "scripts" / f"{script}.py")
    imported = re.findall(r"^\s*from (\w+) import", text, re.MULTILINE)
    siblings = {m for m in imported if (ROOT / "scripts" / f"{m}.py").exists()} - seen - {script}
    return bool(re.search(r"^\s*(?:from|import) devtools\b", text, re.MULTILINE)) or any(
        _needs_the_checkout_on_the_path(s, seen | {script}) for s in siblings
    )


@pytest.mark.parametrize("doc", [*DOCS, *sorted((ROOT / "scripts").glob("*.py"))], ids=_rel)
def test_every_script_command_shown_finds_the_dev_tools(doc: Path) -> None:
    text = _text(doc) if doc.suffix == ".py" else _code(_text(doc))
    wrong = sorted(
        {
            m.group(2)
            for m in re.finditer(r"(PYTHONPATH=\S+ )?(?:\S*/)?python3? +scripts/(\w+)\.py", text)
            if not m.group(1) and _needs_the_checkout_on_the_path(m.group(2))
        }
    )
    assert not wrong, (
        f"{_rel(doc)} runs scripts/{{{', '.join(wrong)}}}.py without the checkout on the path "
        "(devtools/ is not installed): write `PYTHONPATH=. .venv/bin/python scripts/...`"
    )
