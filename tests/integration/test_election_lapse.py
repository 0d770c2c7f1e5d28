"""A leader whose local deadline passed without an etcd error leads again once its lease is renewed.

Found by `make chaos`: around an etcd restart a renewal can be answered after the
local deadline (last renewal sent + TTL - margin) passed, with no error raised.
The leader loop's term ended, and wait_leading() never woke again although the
election kept renewing the lease and holding the key: no server led, for minutes.
"""

from __future__ import annotations

import asyncio
import time

from jobcluster.election import Election
from jobcluster.settings import Settings
from tests.helpers import wait_for


async def test_wait_leading_wakes_when_a_renewal_restores_a_lapsed_deadline(settings: Settings) -> None:
    s = settings
    election = Election(s.etcd_endpoints, s.election_namespace, s.election_key, s.lease_ttl, identity="lapse-1")
    election.start()
    try:
        await wait_for(election.leading, timeout=10, what="elected")
        # The injected fault: the last renewal answered too late, so the local deadline has just passed.
        election._lease_valid_until = time.monotonic()
        assert not election.leading()
        async with asyncio.timeout(3 * election.ttl):  # the next renewal is due within TTL/3
            await election.wait_leading()
        assert election.leading()
    finally:
        await election.resign()
