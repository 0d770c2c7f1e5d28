"""``python -m scheduler_server``: serve JobService on SERVER_HOST:SERVER_PORT until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import replace

from jobcluster import clock
from jobcluster.logs import setup_logging
from jobcluster.settings import ConfigError, Settings, load_or_exit
from jobcluster.wording import plain
from scheduler_server.server import SchedulerServer

log = logging.getLogger("server")


async def main(settings: Settings) -> int:
    try:
        server = SchedulerServer(settings)
        await server.start()
    except (RuntimeError, OSError, ConfigError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(server.wait(), name="grpc-wait")
    stopper = asyncio.create_task(stop.wait(), name="signal-wait")
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    await server.stop()
    waiter.cancel()
    stopper.cancel()
    return 0


def run() -> None:
    parser = argparse.ArgumentParser(prog="python -m scheduler_server", description=plain(__doc__))
    parser.add_argument("--port", type=int, help="listen port (default SERVER_PORT)")
    parser.add_argument("--host", help="listen address (default SERVER_HOST, 127.0.0.1)")
    args = parser.parse_args()
    settings = load_or_exit()
    if args.port is not None:
        settings = replace(settings, server_port=args.port)
    if args.host:
        settings = replace(settings, server_host=args.host)
    setup_logging(f"server:{settings.server_port}", settings.log_level, settings.log_format)
    clock.set_skew_ms(settings.test_clock_skew_ms)
    sys.exit(asyncio.run(main(settings)))


if __name__ == "__main__":
    run()
