"""Render the web UI for the README: private services, a server, a worker, some jobs, Chromium. Writes the
jobs page to OUT and the cluster page (its charts) beside it, as ``<OUT stem>-cluster.png``.

    PYTHONPATH=. .venv/bin/python scripts/screenshot.py docs/screenshot.png      (make screenshot)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devtools import services as svc
from devtools.cluster import wait_healthy
from devtools.job_user import job_user_env
from jobcluster.channels import open_channel
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc


def main(out: Path) -> int:
    root = Path(tempfile.mkdtemp(prefix="jobcluster-shot-"))
    os.chmod(root, 0o755)
    procs: list[subprocess.Popen] = []
    try:
        with svc.private_services(root) as started:
            port, ui_port = svc.free_port(), svc.free_port()
            env = {
                **os.environ,
                **job_user_env(os.environ.get("JOB_USER", "")),
                "DATABASE_URL": started["postgres"].url,
                "REDIS_ADDR": started["redis"].url,
                "ETCD_ENDPOINTS": started["etcd"].url,
                "LEASE_TTL": "3s",
                "RETRY_BACKOFF_BASE": "0.1s",
            }
            server = f"127.0.0.1:{port}"
            for args in (
                ["-m", "scheduler_server", "--port", str(port)],
                ["-m", "worker", "--id", "demo-worker-1"],
                ["-m", "webui", "--addr", f"127.0.0.1:{ui_port}", "--servers", server],
            ):
                with open(root / f"{args[1]}.log", "w") as log:
                    procs.append(
                        subprocess.Popen(
                            [sys.executable, *args], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT
                        )
                    )
            if wait_healthy([server], timeout=60):
                raise SystemExit(f"server {server} did not become ready; see {root}/scheduler_server.log")
            with open_channel(server) as channel:
                stub = pb_grpc.JobServiceStub(channel)
                jobs = [
                    ("backup", "echo 'backing up /var/www'; sleep 0.3; echo 'done: 412 files'", 0),
                    ("report", "date -u +'report for %F'", 0),
                    ("lint", "echo 'E501 line too long' >&2; exit 1", 1),
                    ("greet", "echo 'Hello, World!'", 0),
                    ("slow", "sleep 30", 0),
                ]
                for name, command, retries in jobs:
                    stub.SubmitJob(pb.Job(name=name, command=command, max_retries=retries), timeout=5)
                stub.SubmitJobs(
                    pb.JobBatch(
                        jobs=[
                            pb.Job(name=f"batch-{i}", command=f"sleep 0.{i % 7}; echo {i}", max_retries=0)
                            for i in range(40)
                        ]
                    ),
                    timeout=10,
                )
                stub.CreateSchedule(pb.Schedule(name="nightly", cron="0 3 * * *", command="echo nightly"), timeout=5)
            time.sleep(12)  # the jobs run, and the leader counts them for the charts (every 10 s)
            cluster_out = out.with_name(f"{out.stem}-cluster{out.suffix}")
            asyncio.run(
                _shoot(
                    [(f"http://127.0.0.1:{ui_port}/jobs", out), (f"http://127.0.0.1:{ui_port}/cluster", cluster_out)]
                )
            )
            print(f"wrote {out} and {cluster_out}")
            if os.environ.get("SHOT_LOGS"):
                for f in root.glob("*.log"):
                    print(f"==> {f}\n{f.read_text()[-3000:]}")
            return 0
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


async def _shoot(pages: list[tuple[str, Path]]) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = await browser.new_page(viewport={"width": 1200, "height": 760})
        for url, out in pages:
            await page.goto(url)
            out.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(out))
        await browser.close()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot.png")))
