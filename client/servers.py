"""Which servers the client talks to: one list to submit to, one to ask for status.

The pool that calls them, failing over when a server is down, is :mod:`jobcluster.failover`.
"""

from __future__ import annotations

import os

from jobcluster.failover import configured_servers, split_list


def resolve(flag_servers: str | None, flag_submit: str | None, flag_status: str | None,
            env: dict[str, str] | None = None, servers_file: str = ".servers") -> tuple[list[str], list[str]]:
    """``(submit servers, status servers)``: flags, then SUBMIT_SERVER/STATUS_SERVERS/SERVERS, then .servers."""
    env = dict(os.environ) if env is None else env
    servers = configured_servers(split_list(flag_servers), split_list(env.get("SERVERS")),
                                 servers_file=servers_file)
    submit = split_list(flag_submit) or split_list(env.get("SUBMIT_SERVER")) or servers
    status = split_list(flag_status) or split_list(env.get("STATUS_SERVERS")) or servers
    return submit, status
