"""Measure leader failover on a running `make start` cluster: kills (or SIGTERMs) the leader.

    .venv/bin/python scripts/measure_failover.py kill    # kill -9 the leader
    .venv/bin/python scripts/measure_failover.py term    # SIGTERM the leader (it resigns)

Prints how long until etcd names another leader. `make start` again restarts the server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from jobcluster.credentials import etcd_auth
from jobcluster.election import read_leader
from jobcluster.etcd_client import etcd_tls
from jobcluster.settings import Settings


async def main(how: str) -> int:
    s = Settings.from_env()
    auth, tls = etcd_auth(s), etcd_tls(s)
    info = await read_leader(s.etcd_endpoints, s.election_namespace, s.election_key, auth=auth, tls=tls)
    if info is None:
        print("no leader right now", file=sys.stderr)
        return 1
    os.kill(info.pid, signal.SIGKILL if how == "kill" else signal.SIGTERM)
    started = time.monotonic()
    while time.monotonic() - started < 60:
        try:
            new = await read_leader(s.etcd_endpoints, s.election_namespace, s.election_key, auth=auth, tls=tls)
        except Exception:  # noqa: BLE001 - keep polling through hiccups
            new = None
        if new is not None and new.address != info.address:
            print(
                f"{how}: {info.address} -> {new.address} in {time.monotonic() - started:.3f}s "
                f"(LEASE_TTL={s.lease_ttl:g}s)"
            )
            return 0
        await asyncio.sleep(0.01)
    print("no new leader within 60 s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("kill", "term"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(sys.argv[1])))
