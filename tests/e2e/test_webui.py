"""The web UI in a real browser: Debian's Chromium driven by Playwright, against real processes."""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import os
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from devtools.services import free_port, port_open
from tests.e2e.conftest import Cluster, job_status, submit
from tests.helpers import group_members, wait_for, wait_for_sync

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def start_ui(cluster: Cluster, servers: list[str], scheme: str = "http", **env: str) -> dict:
    """``python -m webui`` on a free loopback port for ``servers``, listening; ``env`` adds settings."""
    port = free_port()
    proc = cluster._spawn(
        "webui", ["-m", "webui", "--addr", f"127.0.0.1:{port}", "--servers", ",".join(servers)], **env
    )
    wait_for_sync(lambda: port_open(port) or proc.popen.poll() is not None, timeout=30, what="web UI listening")
    assert proc.popen.poll() is None, proc.log()
    return {"url": f"{scheme}://127.0.0.1:{port}", "port": port, "servers": servers, "proc": proc}


@pytest.fixture
def ui(cluster: Cluster):
    _, a = cluster.server()
    _, b = cluster.server()
    cluster.worker("ui-worker")
    yield start_ui(cluster, [a, b])


@pytest.fixture(scope="module")
async def browser():
    # The async API: the sync one runs its own event loop, which the async fixtures cannot share.
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture
async def page(browser):
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    pg = await context.new_page()
    yield pg
    await context.close()


async def wait_until(cond, timeout: float = 20, what: str = "condition"):
    """Like wait_for_sync, but lets the event loop (and so the browser connection) run."""
    from tests.helpers import wait_for

    return await wait_for(lambda: asyncio.to_thread(cond), timeout=timeout, what=what)


def _not_blank(path: Path) -> bool:
    """A PNG of a rendered page has many distinct colours; a blank one has one or two."""
    import zlib

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # Decompress the IDAT chunks and count distinct byte values in the pixel data.
    pos, idat = 8, b""
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    pixels = zlib.decompress(idat)
    return len(set(pixels[::7])) > 20 and len(data) > 5000


async def test_submit_from_the_form_and_see_it_succeed_live(ui, page, tmp_path):
    await page.goto(ui["url"] + "/")
    await page.get_by_label("Submit server").select_option(ui["servers"][1])
    await page.get_by_label("Status server").select_option(ui["servers"][0])
    await page.get_by_label("Command").fill("echo hello")
    await page.get_by_role("button", name="Submit").click()
    await page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}\?server="))
    await page.locator("#status").filter(has_text="SUCCEEDED").wait_for(timeout=20_000)
    assert (await page.locator("#output").inner_text()).strip() == "hello"
    shot = tmp_path / "job.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert _not_blank(shot)


async def test_output_appears_line_by_line(ui, page):
    job_id = submit(ui["servers"][0], command="for i in 1 2 3; do echo $i; sleep 1; done")
    await page.goto(f"{ui['url']}/jobs/{job_id}?server={ui['servers'][0]}")
    seen = []
    for expected in ("1", "1\n2", "1\n2\n3"):
        await page.wait_for_function(
            "(t) => document.getElementById('output').textContent.trim() === t", arg=expected, timeout=15_000
        )
        seen.append(expected)
        if expected != "1\n2\n3":
            assert await page.locator("#status").inner_text() == "RUNNING"
    await page.locator("#status").filter(has_text="SUCCEEDED").wait_for(timeout=15_000)
    assert seen == ["1", "1\n2", "1\n2\n3"]


async def test_cancel_a_running_job_from_its_page(ui, page, tmp_path):
    pgid = tmp_path / "pgid"
    job_id = submit(ui["servers"][0], command=f"echo $$ > {pgid}; sleep 60")
    await page.goto(f"{ui['url']}/jobs/{job_id}?server={ui['servers'][0]}")
    await page.locator("#status").filter(has_text="RUNNING").wait_for(timeout=20_000)
    await page.get_by_role("button", name="Cancel").click()
    await page.locator("#status").filter(has_text="CANCELLED").wait_for(timeout=20_000)
    group = int(pgid.read_text())
    await wait_until(lambda: not group_members(group), timeout=15, what="no process of the job left")


async def test_retry_a_dead_letter_from_the_dlq_page(ui, page, tmp_path):
    marker = tmp_path / "ok"
    job_id = submit(ui["servers"][0], command=f"[ -f {marker} ] && echo second-time-lucky || exit 3", max_retries=0)
    await wait_until(lambda: job_status(ui["servers"][0], job_id).status == "FAILED", timeout=20, what="FAILED")
    await page.goto(ui["url"] + "/dlq")
    assert job_id[:8] in (await page.content())
    shot = tmp_path / "dlq.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert _not_blank(shot)
    marker.write_text("")
    await page.get_by_role("button", name=f"Retry {job_id}").click()
    await page.wait_for_url(re.compile(r"/dlq\?retried=1$"))
    assert await page.get_by_role("status").inner_text() == "1 job sent back to the queue."  # feedback
    await wait_until(lambda: job_status(ui["servers"][0], job_id).status == "SUCCEEDED", timeout=20, what="retried")
    assert "dlq_tasks is empty" in (await page.content())


async def test_job_output_and_command_are_escaped(ui, page):
    job_id = submit(ui["servers"][0], command="echo '<script>alert(1)</script>'", name="<b>bold</b>")
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    await page.goto(f"{ui['url']}/jobs/{job_id}?server={ui['servers'][0]}")
    await page.locator("#status").filter(has_text="SUCCEEDED").wait_for(timeout=20_000)
    assert (await page.locator("#output").inner_text()).strip() == "<script>alert(1)</script>"
    assert await page.locator("#job-name").inner_text() == "<b>bold</b>"
    response = await page.goto(ui["url"] + "/jobs")
    assert response.status == 200 and "&lt;script&gt;" in (await response.text())
    assert not dialogs
    assert "default-src 'self'" in urllib.request.urlopen(ui["url"] + "/").headers["Content-Security-Policy"]


def _post(url: str, data: dict, cookie: str = "") -> tuple[int, str]:
    body = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in data.items()).encode()
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
    )
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_a_post_without_the_csrf_token_is_refused(ui, cluster):
    status, body = _post(
        ui["url"] + "/submit",
        {"submit_server": ui["servers"][0], "status_server": ui["servers"][0], "command": "echo csrf"},
    )
    assert status == 403 and "security token" in body


async def test_a_submit_server_that_is_not_configured_is_refused(ui, page):
    await page.goto(ui["url"] + "/")
    token = await page.locator("input[name=csrf]").first.get_attribute("value")
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in (await page.context.cookies()))
    status, body = _post(
        ui["url"] + "/submit",
        {"csrf": token, "submit_server": "10.0.0.1:50051", "status_server": ui["servers"][0], "command": "echo relay"},
        cookie=cookies,
    )
    assert status == 400 and "is not one of the configured servers" in body


async def test_every_page_renders_and_the_json_api_answers(ui, page, tmp_path):
    submit(ui["servers"][0], command="echo listed")
    for name in ("submit", "jobs", "dlq", "schedules", "cluster"):
        response = await page.goto(ui["url"] + ("/" if name == "submit" else f"/{name}"))
        assert response.status == 200, (name, await response.text())
        shot = tmp_path / f"{name}.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert _not_blank(shot), name
        assert "Traceback" not in (await page.content())
    # Filters: text and time, from the form.
    await page.goto(ui["url"] + "/jobs")
    await page.get_by_label("Command contains").fill("listed")
    await page.get_by_label("Created").select_option("1h")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url(re.compile(r"text=listed"))
    rows = await page.locator("tbody tr").all_inner_texts()
    assert len(rows) == 1 and "echo listed" in rows[0], rows
    health = json.load(urllib.request.urlopen(ui["url"] + "/api/health"))
    assert health["status"] == "ok"
    req = urllib.request.Request(
        ui["url"] + "/api/jobs",
        data=json.dumps({"command": "echo api"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    created = json.load(urllib.request.urlopen(req))
    await wait_until(
        lambda: json.load(urllib.request.urlopen(f"{ui['url']}/api/jobs/{created['id']}"))["status"] == "SUCCEEDED",
        timeout=20,
        what="api job done",
    )
    listed = json.load(urllib.request.urlopen(ui["url"] + "/api/jobs?status=SUCCEEDED"))
    assert any(j["id"] == created["id"] for j in listed["jobs"])
    leader = json.load(urllib.request.urlopen(ui["url"] + "/api/leader"))
    assert leader["leader"] in ui["servers"]


# --- beyond loopback: names, origins, login, HTTPS ----------------------------------------------

PASSWORD = "correct horse battery"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by openssl (as an operator would)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def ui_login(cluster: Cluster, tmp_path: Path):
    """The web UI over HTTPS (TLS_CERT/TLS_KEY), asking for the password of WEBUI_PASSWORD_FILE."""
    _, a = cluster.server()
    cluster.worker("ui-login-worker")
    password_file = tmp_path / "webui.pw"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    cert, key = _self_signed(tmp_path)
    ui = start_ui(
        cluster, [a], scheme="https", WEBUI_PASSWORD_FILE=str(password_file), TLS_CERT=str(cert), TLS_KEY=str(key)
    )
    ui["tls"] = ssl.create_default_context(cafile=str(cert))
    yield ui


def _status(url: str, context: ssl.SSLContext | None = None, **request: object) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, **request), context=context) as r:  # type: ignore[arg-type]
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_log_in_submit_and_log_out_over_https(ui_login, browser):
    context = await browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    try:
        await page.goto(ui_login["url"] + "/jobs")
        await page.wait_for_url(re.compile(r"/login\?next=%2Fjobs$"))
        await page.get_by_label("Password").fill("not the password")
        await page.get_by_role("button", name="Log in").click()
        assert await page.get_by_role("alert").inner_text() == "Wrong password."
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_url(re.compile(r"/jobs$"))
        [session] = [c for c in await context.cookies() if c["name"] == "jobcluster_session"]
        assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
        await page.get_by_role("link", name="Submit").click()
        await page.wait_for_url(re.compile(r"/$"))
        await page.get_by_label("Command", exact=True).fill("echo behind a login")
        await page.get_by_role("button", name="Submit").click()
        await page.locator("#status").filter(has_text="SUCCEEDED").wait_for(timeout=20_000)
        assert (await page.locator("#output").inner_text()).strip() == "behind a login"
        await page.get_by_role("button", name="Log out").click()
        await page.wait_for_url(re.compile(r"/login$"))
        await page.goto(ui_login["url"] + "/jobs")
        await page.wait_for_url(re.compile(r"/login\?next=%2Fjobs$"))
    finally:
        await context.close()


async def test_the_real_ui_refuses_foreign_hosts_origins_and_anonymous_calls(ui_login):
    url, tls, port = ui_login["url"], ui_login["tls"], ui_login["port"]
    status, body = _status(url + "/api/health", tls, headers={"Host": f"evil.example:{port}"})
    assert status == 400 and "WEBUI_HOSTS" in body
    assert _status(url + "/api/health", tls)[0] == 200  # open, for load balancers
    status, body = _status(
        url + "/api/jobs",
        tls,
        data=json.dumps({"command": "id"}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Origin": "http://evil.example"},
    )
    assert status == 403 and "Origin refused" in body
    status, body = _status(url + "/api/jobs", tls)
    assert status == 401 and "Log in first" in body


def test_an_exposed_web_ui_without_a_login_refuses_to_start(tmp_path: Path):
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the check must come before any bind.
    env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "webui", "--addr", f"192.0.2.1:{free_port()}", "--servers", "127.0.0.1:1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "WEBUI_ADDR=192.0.2.1" in r.stderr and "is not loopback" in r.stderr
    assert "WEBUI_PASSWORD_FILE" in r.stderr and "AUTH_TOKEN" in r.stderr


# --- with servers that check tokens: whose role applies ----------------------------------------

ADMIN_TOKEN = "ui-admin-" + "a" * 32
READ_TOKEN = "alice-read-" + "r" * 32


@pytest.fixture
def ui_tokens(cluster: Cluster, tmp_path: Path):
    """A server that takes AUTH_TOKENS_FILE (an admin and a read token), and the web UI in front of it,
    with the admin token as its own AUTH_TOKEN and a password."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ADMIN_TOKEN} admin webui\n{READ_TOKEN} read alice\n")
    tokens.chmod(0o600)
    _, a = cluster.server(AUTH_TOKENS_FILE=str(tokens))
    cluster.worker("ui-token-worker")
    password_file = tmp_path / "webui.pw"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    yield start_ui(cluster, [a], AUTH_TOKEN=ADMIN_TOKEN, WEBUI_PASSWORD_FILE=str(password_file))


class Visitor:
    """A browser without a screen: cookies kept, redirects followed, forms posted with their CSRF token."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> tuple[int, str]:
        return self._open(urllib.request.Request(self.url + path))

    def post(self, path: str, form: dict[str, str], csrf_from: str = "/login") -> tuple[int, str]:
        _, page = self.get(csrf_from)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf, page
        data = urllib.parse.urlencode({"csrf": csrf.group(1), **form}).encode()
        return self._open(urllib.request.Request(self.url + path, data=data, method="POST"))

    def _open(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self.opener.open(request) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def test_a_token_login_acts_with_its_role_and_a_password_login_with_the_uis(ui_tokens):
    url, [server] = ui_tokens["url"], ui_tokens["servers"]
    by_password = Visitor(url)
    assert by_password.post("/login", {"password": PASSWORD})[0] == 200
    status, page = by_password.post(
        "/submit", {"command": "echo by password", "submit_server": server, "status_server": server}, csrf_from="/"
    )
    assert status == 200 and "echo by password" in page  # the job's page: the UI's own (admin) token

    reader = Visitor(url)
    status, page = reader.post("/login", {"token": "not-" + READ_TOKEN})
    assert status == 401 and "The servers refused this token." in page
    assert reader.post("/login", {"token": READ_TOKEN})[0] == 200
    status, page = reader.get("/jobs")
    assert status == 200 and "echo by password" in page  # reading is allowed
    status, page = reader.post(
        "/submit", {"command": "echo by reader", "submit_server": server, "status_server": server}, csrf_from="/"
    )
    assert status == 403 and "the token of alice has role read; SubmitJob needs role submit" in page, page

    def api(token: str, body: dict) -> int:
        return _status(
            url + "/api/jobs",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )[0]

    assert api(ADMIN_TOKEN, {"command": "echo by api"}) == 201
    assert api(READ_TOKEN, {"command": "echo by api reader"}) == 403
    assert api("not-" + ADMIN_TOKEN, {"command": "echo guessed"}) == 401
    listed = json.loads(_status(url + "/api/jobs", headers={"Authorization": f"Bearer {READ_TOKEN}"})[1])
    commands = {j["command"] for j in listed["jobs"]}
    assert commands == {"echo by password", "echo by api"}


def _js_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return errors


async def test_destructive_buttons_ask_first(ui, page, redis_sync):
    import grpc

    from jobcluster import keys
    from jobcluster.pb import scheduler_pb2 as pb
    from jobcluster.pb import scheduler_pb2_grpc as pb_grpc

    errors = _js_errors(page)
    server = ui["servers"][0]
    dead = submit(server, command="exit 4", max_retries=0)
    await wait_until(lambda: redis_sync.lrange(keys.DLQ, 0, -1) == [dead], timeout=20, what="the dead letter")
    asked: list[str] = []
    answers = [False, True, False, True]  # dismiss, then accept; the same for the schedule

    async def answer(dialog):
        asked.append(dialog.message)
        await (dialog.accept() if answers[len(asked) - 1] else dialog.dismiss())

    page.on("dialog", answer)
    await page.goto(ui["url"] + "/dlq")
    await page.get_by_role("button", name="Purge all").click()
    await wait_until(lambda: len(asked) == 1, timeout=10, what="the question")
    assert "Purge all 1 dead letters?" in asked[0]
    assert redis_sync.lrange(keys.DLQ, 0, -1) == [dead]  # dismissed: nothing purged
    await page.get_by_role("button", name="Purge all").click()
    await page.wait_for_url(re.compile(r"/dlq\?purged=1$"))
    assert redis_sync.lrange(keys.DLQ, 0, -1) == []
    assert "1 id removed from dlq_tasks" in await page.get_by_role("status").inner_text()

    with grpc.insecure_channel(server) as channel:
        pb_grpc.JobServiceStub(channel).CreateSchedule(
            pb.Schedule(name="nightly", cron="0 3 * * *", command="true"), timeout=10
        )
    await page.goto(ui["url"] + "/schedules")
    await page.get_by_role("button", name="Delete").click()
    await wait_until(lambda: len(asked) == 3, timeout=10, what="the second question")
    assert "Delete schedule nightly?" in asked[2]
    await page.get_by_role("button", name="Delete").click()
    await page.wait_for_url(re.compile(r"/schedules$"))
    assert "no schedules yet" in await page.content()
    assert errors == []


@pytest.mark.long("waits for the pages' own refresh timers in a browser: ~9 s")
async def test_times_are_relative_pages_refresh_and_empty_output_says_so(ui, page):
    errors = _js_errors(page)
    server = ui["servers"][0]
    quiet = submit(server, command="true", name="quiet-one")
    await wait_until(lambda: job_status(server, quiet).status == "SUCCEEDED", timeout=20, what="the quiet job")
    await page.goto(ui["url"] + "/jobs")
    created = page.locator("tbody tr").first.locator("time")
    assert re.fullmatch(r"(just now|\d+ (s|min) ago)", await created.inner_text())
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z", await created.get_attribute("title"))
    later = submit(server, command="true", name="appears-by-itself")
    await page.get_by_text("appears-by-itself").wait_for(timeout=15_000)  # no reload: the page refreshed
    await page.goto(f"{ui['url']}/jobs/{quiet}?server={server}")
    await page.locator("#status").filter(has_text="SUCCEEDED").wait_for(timeout=10_000)
    placeholder = await page.evaluate(
        "getComputedStyle(document.getElementById('output'), '::before').getPropertyValue('content')"
    )
    assert placeholder == '"(no output)"'
    assert job_status(server, later).name == "appears-by-itself"
    with urllib.request.urlopen(ui["url"] + "/favicon.ico", timeout=10) as icon:
        assert icon.status == 200 and icon.headers["Content-Type"].startswith("image/svg+xml")
    await page.goto(ui["url"] + "/schedules")
    assert errors == []


async def test_the_submit_form_keeps_what_was_typed_when_refused(ui, page):
    await page.goto(ui["url"] + "/")
    await page.get_by_label("Command").fill("echo kept")
    await page.get_by_label("Name").fill("my name")
    await page.get_by_label("Timeout").fill("soon")
    await page.get_by_role("button", name="Submit").click()
    await page.get_by_role("alert").wait_for(timeout=10_000)
    assert "Timeout" in await page.get_by_role("alert").inner_text()
    assert await page.get_by_label("Command").input_value() == "echo kept"
    assert await page.get_by_label("Name").input_value() == "my name"
    assert await page.get_by_label("Timeout").input_value() == "soon"


async def test_charts_draw_the_jobs_run_from_the_store(ui, page):
    """The cluster page: jobs finished per minute by status and queue depths (the leader keeps them in
    PostgreSQL); the jobs page: how long the filtered jobs ran. Inline SVG, no script error."""
    errors = _js_errors(page)
    server = ui["servers"][0]
    ok = [submit(server, command="true", name="chart-ok") for _ in range(4)]
    bad = submit(server, command="exit 2", name="chart-bad", max_retries=0)
    await wait_until(
        lambda: (
            all(job_status(server, j).status == "SUCCEEDED" for j in ok) and job_status(server, bad).status == "FAILED"
        ),
        timeout=30,
        what="the jobs",
    )

    async def drawn(status: str) -> int:
        bars = page.locator(f"svg.chart.finished rect.bar[data-status='{status}']")
        return sum([int(await b.get_attribute("data-n")) for b in await bars.all()])

    await page.goto(ui["url"] + "/cluster")

    async def counted() -> bool:
        return (await drawn("SUCCEEDED"), await drawn("FAILED")) == (4, 1)

    # the leader recounts every 10 s; the page refreshes every 2 s
    await wait_for(counted, timeout=25, interval=0.5, what="the bars of 4 successes and 1 failure")
    points = page.locator("svg.chart.depths circle.point[data-series='dlq']")
    assert await points.count() >= 1 and await points.last.get_attribute("data-n") == "1"

    await page.goto(ui["url"] + "/jobs?text=chart-ok")
    hist = page.locator("svg.chart.histogram rect.hbar")
    assert sum([int(await b.get_attribute("data-n")) for b in await hist.all()]) == 4
    assert "newest 4 finished jobs" in await page.locator("figcaption").inner_text()
    assert errors == []


@pytest.mark.long("waits for a cron tick and a page's refresh timer in a browser: ~9 s")
async def test_truncated_output_unwrapped_cron_and_a_dead_letter_page_that_refreshes(ui, page, redis_sync):
    import grpc

    from jobcluster import keys
    from jobcluster.pb import scheduler_pb2 as pb
    from jobcluster.pb import scheduler_pb2_grpc as pb_grpc

    errors = _js_errors(page)
    server = ui["servers"][0]
    await page.goto(ui["url"] + "/dlq")  # empty now: the dead letter below must appear by itself
    assert "dlq_tasks is empty" in await page.content()
    dead = submit(server, command="exit 9", name="late-dead-letter", max_retries=0)
    await page.get_by_text("late-dead-letter").wait_for(timeout=15_000)
    assert redis_sync.lrange(keys.DLQ, 0, -1) == [dead]

    big = submit(server, command="head -c 600000 /dev/zero | tr '\\0' x")
    await wait_until(lambda: job_status(server, big).status == "SUCCEEDED", timeout=30, what="the big job")
    assert job_status(server, big).output_truncated
    await page.goto(f"{ui['url']}/jobs/{big}?server={server}")
    await page.locator("#truncated").wait_for(state="visible", timeout=10_000)
    assert "Truncated" in await page.locator("#truncated").inner_text()

    with grpc.insecure_channel(server) as channel:
        pb_grpc.JobServiceStub(channel).CreateSchedule(
            pb.Schedule(name="busy", cron="0,15,30,45 1,2,3,4,5,6,7,8,9,10 * * 1-5", command="true"), timeout=10
        )
    await page.goto(ui["url"] + "/schedules")
    cell = page.get_by_text("0,15,30,45 1,2,3,4,5,6,7,8,9,10 * * 1-5")
    assert await cell.evaluate("el => getComputedStyle(el).whiteSpace") == "nowrap"
    assert errors == []
