"""``python -m webui``: the web UI on WEBUI_ADDR (default 127.0.0.1:8080), talking to the servers over gRPC."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from jobcluster.failover import configured_servers, split_list
from jobcluster.logs import setup_logging
from jobcluster.settings import load_or_exit
from webui.app import create_app

log = logging.getLogger("webui")


def run() -> None:
    parser = argparse.ArgumentParser(prog="python -m webui", description=__doc__)
    parser.add_argument("--addr", help="host:port to listen on (default WEBUI_ADDR)")
    parser.add_argument("--servers", help="host:port,... (default SERVERS, then .servers, then localhost:50051)")
    args = parser.parse_args()
    settings = load_or_exit()
    addr = args.addr or settings.webui_addr
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        print(f"configuration error: WEBUI_ADDR must be host:port, got {addr!r}", file=sys.stderr)
        sys.exit(2)
    servers = configured_servers(split_list(args.servers), settings.servers)
    setup_logging("webui", settings.log_level, settings.log_format)
    log.info("web UI on http://%s (servers: %s)", addr, ", ".join(servers))
    uvicorn.run(create_app(servers), host=host, port=int(port), log_level="warning", access_log=False)


if __name__ == "__main__":
    run()
