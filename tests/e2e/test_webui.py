"""The web UI in a real browser: Debian's Chromium driven by Playwright, against real processes."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from jobcluster.devtools.services import free_port, port_open
from tests.e2e.conftest import Cluster, job_status, submit
from tests.helpers import group_members, wait_for_sync

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture
def ui(cluster: Cluster):
    _, a = cluster.server()
    _, b = cluster.server()
    cluster.worker("ui-worker")
    port = free_port()
    proc = cluster._spawn("webui", ["-m", "webui", "--addr", f"127.0.0.1:{port}", "--servers", f"{a},{b}"])
    wait_for_sync(lambda: port_open(port) or proc.popen.poll() is not None, timeout=30, what="web UI listening")
    assert proc.popen.poll() is None, proc.log()
    yield {"url": f"http://127.0.0.1:{port}", "servers": [a, b], "proc": proc}


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
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
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
            "(t) => document.getElementById('output').textContent.trim() === t", arg=expected, timeout=15_000)
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
    await page.wait_for_url(re.compile(r"/dlq$"))
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
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_a_post_without_the_csrf_token_is_refused(ui, cluster):
    status, body = _post(ui["url"] + "/submit", {"submit_server": ui["servers"][0],
                                                "status_server": ui["servers"][0], "command": "echo csrf"})
    assert status == 403 and "security token" in body


async def test_a_submit_server_that_is_not_configured_is_refused(ui, page):
    await page.goto(ui["url"] + "/")
    token = await page.locator("input[name=csrf]").first.get_attribute("value")
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in (await page.context.cookies()))
    status, body = _post(ui["url"] + "/submit", {"csrf": token, "submit_server": "10.0.0.1:50051",
                                                "status_server": ui["servers"][0], "command": "echo relay"},
                         cookie=cookies)
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
    req = urllib.request.Request(ui["url"] + "/api/jobs", data=json.dumps({"command": "echo api"}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    created = json.load(urllib.request.urlopen(req))
    await wait_until(lambda: json.load(urllib.request.urlopen(f"{ui['url']}/api/jobs/{created['id']}"))["status"]
                  == "SUCCEEDED", timeout=20, what="api job done")
    listed = json.load(urllib.request.urlopen(ui["url"] + "/api/jobs?status=SUCCEEDED"))
    assert any(j["id"] == created["id"] for j in listed["jobs"])
    leader = json.load(urllib.request.urlopen(ui["url"] + "/api/leader"))
    assert leader["leader"] in ui["servers"]
