"""A leader whose local deadline passed without an etcd error leads again once its lease is renewed.

Found by `make chaos`: around an etcd restart a renewal can be answered after the
local deadline (last renewal sent + TTL - margin) passed, with no error raised.
The leader loop's term ended, and wait_leading() never woke again although the
election kept renewing the lease and holding the key: no server led, for minutes.
"""

from __future__ import annotations

import asyncio
import time

import aetcd
import aetcd.watcher
import pytest

from jobcluster.election import STOP_GRACE, Election
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


@pytest.mark.long("a cost proof: etcd's raft index watched over idle seconds: ~3.5 s")
async def test_idle_elections_add_nothing_to_etcds_raft_log(settings: Settings) -> None:
    """Three servers, one leading, for several keepalive ticks each: the followers' safety-net check is a
    read, so etcd's raft log stays put (a transaction with a put, even one whose compare fails, is a
    raft entry etcd keeps in memory until its next snapshot: make soak saw its memory grow)."""
    s = settings
    elections = [
        Election(s.etcd_endpoints, s.election_namespace + "/raft-idle", s.election_key, 1.0, identity=f"idle-{n}")
        for n in range(3)
    ]
    host, port = s.etcd_endpoints[0].rsplit("//", 1)[-1].rsplit(":", 1)
    client = aetcd.Client(host=host, port=int(port), timeout=5)  # every call bounded: none may wait forever
    for election in elections:
        election.start()
    try:
        await wait_for(lambda: sum(e.leading() for e in elections) == 1, timeout=10, what="one leader")
        before = (await client.status()).raft_index
        renewals = [0] * 3
        seen = [e._lease_valid_until for e in elections]

        def ticked() -> bool:
            for n, e in enumerate(elections):
                if e._lease_valid_until != seen[n]:
                    seen[n] = e._lease_valid_until
                    renewals[n] += 1
            return min(renewals) >= 5

        await wait_for(ticked, timeout=20, interval=0.02, what="five keepalive ticks of each election")
        grown = (await client.status()).raft_index - before
        assert grown <= 2, f"raft log grew by {grown} entries over {sum(renewals)} idle keepalive ticks"
    finally:
        for election in elections:
            await election.resign()
        await client.close()


async def test_resign_returns_when_a_watch_loses_its_cancel(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11's asyncio.wait_for (in aetcd's watch set-up) drops a cancel that lands just as the watch is
    created; the follower's watch then waited for the leader key's deletion, and resign() for the watch: a follower
    resigned before the leader waited forever (seen as a 120 s hang of the test above on a loaded host)."""
    real_add_callback = aetcd.watcher.Watcher.add_callback

    async def add_callback_losing_a_cancel(self: aetcd.watcher.Watcher, *args: object, **kwargs: object) -> object:
        created = await real_add_callback(self, *args, **kwargs)
        try:  # the injected fault: the race's window, widened to 0.3 s
            await asyncio.sleep(0.3)
        except asyncio.CancelledError:
            pass  # what wait_for does when the watch is already created
        return created

    monkeypatch.setattr(aetcd.watcher.Watcher, "add_callback", add_callback_losing_a_cancel)
    s = settings
    elections = [
        Election(s.etcd_endpoints, s.election_namespace, s.election_key, 1.0, identity=f"lost-{n}") for n in range(3)
    ]
    for election in elections:
        election.start()
    try:
        await wait_for(lambda: sum(e.leading() for e in elections) == 1, timeout=10, what="one leader")
        seen = [e._lease_valid_until for e in elections]
        await wait_for(
            lambda: all(e._lease_valid_until > seen[n] for n, e in enumerate(elections)),
            timeout=10,
            what="each election past a watch set-up to its next renewal",
        )
    finally:
        for election in sorted(elections, key=Election.leading):  # followers first, the leader last
            async with asyncio.timeout(2 * STOP_GRACE + 5):  # its steps are bounded: revoke 2 s, close 2 s
                await election.resign()
