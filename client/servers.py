"""Which servers the client talks to (one list to submit to, one to ask for status), and how:
the token and TLS settings it reaches them with.

The pool that calls them, failing over when a server is down, is :mod:`jobcluster.failover`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import grpc

from jobcluster.channels import ChannelSecurity
from jobcluster.failover import configured_servers, split_list
from jobcluster.settings import read_env

#: What to do when the servers refuse the client's token.
AUTH_HINTS = {
    grpc.StatusCode.UNAUTHENTICATED: "set AUTH_TOKEN (in the environment or .env) to a token the servers accept",
    grpc.StatusCode.PERMISSION_DENIED: "the role of AUTH_TOKEN does not allow this: use a token with a "
    "stronger role (read < submit < admin)",
}


def resolve(
    flag_servers: str | None,
    flag_submit: str | None,
    flag_status: str | None,
    env: dict[str, str] | None = None,
    servers_file: str = ".servers",
) -> tuple[list[str], list[str]]:
    """``(submit servers, status servers)``: flags, then SUBMIT_SERVER/STATUS_SERVERS/SERVERS, then .servers."""
    env = dict(os.environ) if env is None else env
    servers = configured_servers(split_list(flag_servers), split_list(env.get("SERVERS")), servers_file=servers_file)
    submit = split_list(flag_submit) or split_list(env.get("SUBMIT_SERVER")) or servers
    status = split_list(flag_status) or split_list(env.get("STATUS_SERVERS")) or servers
    return submit, status


def channel_security(
    servers: Sequence[str], env: Mapping[str, str] | None = None, servers_file: str = ".servers"
) -> ChannelSecurity:
    """AUTH_TOKEN and the TLS settings from the environment or ``.env``; for servers that ``make start TLS=1``
    started (all listed in ``.servers``) and no TLS_CA set, its CA in ``.run/tls``."""
    env = read_env() if env is None else env
    return ChannelSecurity.from_env(env).for_servers(servers, servers_file)
