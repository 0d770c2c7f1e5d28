"""``python -m worker``: run jobs from the queue until SIGTERM (or, with --burst, until none are left)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from jobcluster import clock, metrics
from jobcluster import queue as queue_mod
from jobcluster.aio import Stopped, retrying
from jobcluster.errors import POSTGRES_ERRORS
from jobcluster.hardening import make_non_dumpable
from jobcluster.logs import set_fields, setup_logging
from jobcluster.queue import Queue
from jobcluster.settings import ConfigError, Settings, load_or_exit
from jobcluster.store import Store
from jobcluster.wording import plain
from worker.heartbeat import WorkerIdInUse
from worker.launch import Launcher
from worker.sandbox import Sandbox
from worker.worker import Worker

log = logging.getLogger("worker")


async def _connect_store(settings: Settings, stop: asyncio.Event) -> Store | None:
    try:
        return await retrying(
            lambda: Store.connect(settings),
            what="connect to DATABASE_URL",
            errors=POSTGRES_ERRORS,
            stop=stop,
            first_delay=0.5,
            log=log,
        )
    except Stopped:
        return None


async def main(settings: Settings, burst: bool, sandbox: Sandbox) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    worker: Worker | None = None
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        stop.set()
        if worker is not None:
            worker.stop()
        if signals >= 2:
            log.warning("second signal: exiting now; running jobs are recovered at the next start")
            sys.exit(1)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    store = await _connect_store(settings, stop)
    if store is None:
        return 0
    redis = queue_mod.connect_from(settings)
    # Starts the jobs, and kills their sessions when this process dies, even by SIGKILL.
    launcher = Launcher.start(settings.effective_worker_id())
    try:
        worker = Worker(settings, store, Queue(redis), burst=burst, sandbox=sandbox, launcher=launcher)
        if stop.is_set():
            return 0
        await worker.run()
    except WorkerIdInUse as exc:
        log.error("%s", exc)
        return 2
    finally:
        launcher.close()
        await redis.aclose()
        await store.close()
    return 0


def run() -> None:
    parser = argparse.ArgumentParser(prog="python -m worker", description=plain(__doc__))
    parser.add_argument(
        "--burst",
        action="store_true",
        help="exit once the lanes it serves and the delayed set are empty and no job is in progress, "
        "its own or another worker's",
    )
    parser.add_argument("--concurrency", type=int, help="job slots (default WORKER_CONCURRENCY)")
    parser.add_argument("--id", help="worker id (default WORKER_ID, else <host>-<pid>)")
    args = parser.parse_args()
    settings = load_or_exit()
    overrides = {}
    if args.concurrency:
        overrides["worker_concurrency"] = args.concurrency
    if args.id:
        overrides["worker_id"] = args.id
    if overrides:
        from dataclasses import replace

        settings = replace(settings, **overrides)
    setup_logging("worker", settings.log_level, settings.log_format)
    set_fields(worker_id=settings.effective_worker_id())
    clock.set_skew_ms(settings.test_clock_skew_ms)
    # Jobs are this process's children: none may read its environment or memory through /proc.
    make_non_dumpable()
    try:
        sandbox = Sandbox.from_settings(settings)
        metrics.serve(settings, f"worker {settings.effective_worker_id()}")
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(settings, args.burst, sandbox)))


if __name__ == "__main__":
    run()
