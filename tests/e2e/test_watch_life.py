"""A job page outlives WATCH_MAX_LIFE: the browser watches again when a stream ends without a final event."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster, submit
from tests.e2e.test_webui import CHROMIUM, browser, page, start_ui  # noqa: F401 -- fixtures

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


@pytest.mark.long("waits out several watch-stream lifetimes in a browser: ~9 s")
async def test_the_job_page_follows_a_job_across_several_watch_streams(cluster: Cluster, page):  # noqa: F811
    _, address = cluster.server(WATCH_MAX_LIFE="1s")
    cluster.worker("life-worker")
    ui = start_ui(cluster, [address])
    job_id = submit(address, command="for i in 1 2 3 4; do echo $i; sleep 0.8; done")
    await page.goto(f"{ui['url']}/jobs/{job_id}?server={address}")
    # Each stream lives 1 s; the job runs about 3 s, so only watching again shows its end.
    await page.locator("#status").filter(has_text="SUCCEEDED").wait_for(timeout=20_000)
    assert (await page.locator("#output").inner_text()).split() == ["1", "2", "3", "4"]
