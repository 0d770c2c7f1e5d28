"""``python -m webui``: the web UI on WEBUI_ADDR (default 127.0.0.1:8080), talking to the servers over gRPC."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from jobcluster.channels import ChannelSecurity, SecurityError
from jobcluster.failover import AioChannels, configured_servers, split_list
from jobcluster.logs import setup_logging
from jobcluster.settings import ConfigError, load_or_exit
from jobcluster.wording import plain
from webui.app import create_app
from webui.config import UIConfig, ui_config

log = logging.getLogger("webui")


def _login_note(config: UIConfig) -> str:
    ways = [w for w, on in (("password", config.password is not None), ("server token", config.token_login)) if on]
    if not config.login_required:
        return "no login (loopback, no password, no tokens)"
    return "login with " + " or ".join(ways)


def _proxy_note(config: UIConfig) -> str:
    if not config.trusted_proxies:
        return "X-Forwarded-For believed from nobody"
    return "X-Forwarded-For believed from " + ", ".join(config.trusted_proxies)


def run() -> None:
    parser = argparse.ArgumentParser(prog="python -m webui", description=plain(__doc__))
    parser.add_argument("--addr", help="host:port to listen on (default WEBUI_ADDR)")
    parser.add_argument("--servers", help="host:port,... (default SERVERS, then .servers, then localhost:50051)")
    args = parser.parse_args()
    settings = load_or_exit()
    try:
        config = ui_config(settings, args.addr or settings.webui_addr)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    servers = configured_servers(split_list(args.servers), settings.servers)
    try:
        # The UI's own calls carry AUTH_TOKEN and use TLS_CA; a token login's calls carry that token instead.
        connector = AioChannels(ChannelSecurity.from_settings(settings).for_servers(servers))
    except SecurityError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    setup_logging("webui", settings.log_level, settings.log_format)
    log.info(
        "web UI on %s (servers: %s; %s; names: %s; %s)",
        config.url(),
        ", ".join(servers),
        _login_note(config),
        ", ".join(sorted(config.names)),
        _proxy_note(config),
    )
    # proxy_headers off: uvicorn would believe X-Forwarded-For from loopback (any local user); the app
    # believes it from WEBUI_TRUSTED_PROXIES only.
    uvicorn.run(
        create_app(servers, connector, config),
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        ssl_certfile=config.tls_cert or None,
        ssl_keyfile=config.tls_key or None,
    )


if __name__ == "__main__":
    run()
