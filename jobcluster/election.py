"""Leader election through etcd: a small recipe in the manner of etcd's ``concurrency`` package.

Every server runs one :class:`Election`. It holds its own lease (LEASE_TTL) and
keeps it alive every TTL/3. To lead, it creates the key
``ELECTION_NAMESPACE/ELECTION_KEY`` bound to that lease in a create-if-absent
transaction; the key's create revision is the term's **fencing token**, larger
for every later term. Followers watch the key and campaign the moment it is
deleted (resignation, or lease expiry). As a safety net for a watch stream
that died without telling us, every keepalive tick also reads the key and
tries the transaction when it is free (a read every TTL/3: unlike a transaction
with a put, a read adds nothing to etcd's raft log).

A leader only *acts* while :meth:`Election.leading` is true: it was elected and
its lease was last renewed (counting from when the renewal was *sent*) less
than ``TTL - margin`` ago. So when etcd is unreachable, or this process was
paused (SIGSTOP), it stops acting before its lease can have expired and before
anyone else can have been elected. Writes that must not come from an old term
carry the token and are checked in PostgreSQL (see ``Store.fence``).

etcd down or restarted: every step retries with backoff; the lease usually
survives an etcd restart (etcd keeps leases on disk), so the same server leads
again once it can renew. :meth:`resign` revokes the lease, which deletes the key
at once: a follower takes over within a round trip.

The lease id is never logged: etcd 3.4 renews any lease for whoever can reach its
ports and names the id (no password asked), so it is as good as a key to keep a dead
leader's lease alive. make start's etcd lets in only clients with its certificate
(``tls``, see :mod:`jobcluster.etcd_client`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aetcd
import aetcd.exceptions

from jobcluster.credentials import EtcdAuth
from jobcluster.etcd_client import EtcdTls, etcd_client

log = logging.getLogger("election")

#: etcd client errors that mean "etcd not reachable right now" (retry), as opposed to bugs.
ETCD_ERRORS: tuple[type[BaseException], ...] = (aetcd.exceptions.ClientError, OSError, TimeoutError)

#: Longest wait for a cancelled task of ours to end (each is cancelled again every RECANCEL_EVERY).
STOP_GRACE = 2.0
RECANCEL_EVERY = 0.5


async def _cancel_and_wait(tasks: Iterable[asyncio.Task[Any] | None], grace: float = STOP_GRACE) -> bool:
    """Cancel ``tasks`` and wait for them to end, at most ``grace`` seconds; False if one is still running.

    One cancel is not always enough: Python 3.11's ``asyncio.wait_for`` (inside aetcd's watch set-up) returns
    its result instead of raising when the cancel lands just as the watch is created, and the task then
    waits on, for the leader key's deletion (which, during resign(), may wait for this very resign).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    pending = {t for t in tasks if t is not None and not t.done()}
    for t in pending:  # how each ends is moot now (a watch that outlives this ends when its client closes)
        t.add_done_callback(_discard_outcome)
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            return False
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY, left))
    return True


def _discard_outcome(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True)
class LeaderInfo:
    """Who leads, as written in the leader key."""

    identity: str
    address: str
    pid: int
    host: str
    since_ms: int
    token: int  # create revision of the key: the term's fencing token

    @classmethod
    def from_kv(cls, value: bytes, create_revision: int) -> "LeaderInfo":
        try:
            d = json.loads(value)
        except ValueError:
            d = {"identity": value.decode(errors="replace")}
        return cls(
            identity=str(d.get("identity", "")),
            address=str(d.get("address", "")),
            pid=int(d.get("pid", 0)),
            host=str(d.get("host", "")),
            since_ms=int(d.get("since_ms", 0)),
            token=create_revision,
        )


def _split(endpoint: str) -> tuple[str, int]:
    ep = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = ep.rpartition(":")
    return (host or "127.0.0.1"), int(port or 2379)


class Election:
    """Campaign for leadership until :meth:`close`; :meth:`leading` says whether to act now."""

    def __init__(
        self,
        endpoints: Sequence[str],
        namespace: str,
        key: str,
        ttl: float,
        identity: str,
        address: str = "",
        auth: EtcdAuth | None = None,
        tls: EtcdTls | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self.auth = auth
        self.tls = tls
        self.endpoints = [_split(e) for e in endpoints]
        self.key = f"{namespace.rstrip('/')}/{key}".encode()
        self.ttl = max(2, math.ceil(ttl))  # etcd's smallest lease TTL is 2 s
        self.margin = max(0.5, self.ttl / 5)  # stop acting this long before the lease could end
        self.identity = identity
        self.address = address
        self.token = 0
        self._endpoint = 0
        self._client: aetcd.Client | None = None
        self._lease_id = 0
        self._lease_valid_until = 0.0  # monotonic: last renewal *sent* + its TTL
        self._elected = False
        self._closed = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.since_ms = 0

    # --- what the leader loops use ----------------------------------------------

    def leading(self) -> bool:
        """True while this process may act as leader (elected, lease surely alive)."""
        return self._elected and time.monotonic() < self._lease_valid_until - self.margin

    async def wait_leading(self) -> None:
        """Return once this process leads."""
        while not self.leading():
            self._changed.clear()
            if self.leading():
                return
            await self._changed.wait()

    def seconds_left(self) -> float:
        return max(0.0, self._lease_valid_until - self.margin - time.monotonic()) if self._elected else 0.0

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="election")

    async def resign(self) -> None:
        """Stop campaigning; if leading, revoke the lease so a follower takes over at once."""
        self._closed = True
        was = self._elected
        self._set_elected(False)
        if not await _cancel_and_wait([self._task]):
            log.warning("the election task did not stop within %.0fs; closing its client under it", STOP_GRACE)
        if self._client is not None and self._lease_id:
            try:
                async with asyncio.timeout(2):
                    await self._client.revoke_lease(self._lease_id)
                if was:
                    log.info("resigned: lease revoked, leadership handed over")
            except ETCD_ERRORS as exc:  # TimeoutError is one of them
                log.warning("could not revoke the lease (%s); the key expires within %ds", exc, self.ttl)
        await self._close_client()

    # --- internals ----------------------------------------------------------------

    def _set_elected(self, elected: bool, token: int = 0) -> None:
        if elected and not self._elected:
            self.token = token
            self.since_ms = int(time.time() * 1000)
            log.info("elected leader (term token %d, ttl %ds)", token, self.ttl)
        elif not elected and self._elected:
            log.warning("no longer leader (term token %d)", self.token)
        self._elected = elected
        self._changed.set()

    async def _connect(self) -> aetcd.Client:
        if self._client is None:
            host, port = self.endpoints[self._endpoint % len(self.endpoints)]
            client = etcd_client(host, port, max(1, self.ttl // 3), self.auth, self.tls)
            await client.connect()
            self._client = client
        return self._client

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                async with asyncio.timeout(2):
                    await client.close()
            except Exception:  # noqa: BLE001 - closing a broken channel; nothing to do
                pass

    async def _run(self) -> None:
        delay = 0.2
        while not self._closed:
            try:
                await self._campaign_forever()
            except ETCD_ERRORS as exc:
                if self._elected and not self.leading():
                    self._set_elected(False)
                log.warning(
                    "etcd unavailable (%s); retrying in %.1fs%s",
                    exc or type(exc).__name__,
                    delay,
                    f", still leading for {self.seconds_left():.1f}s" if self.leading() else "",
                )
                await self._close_client()
                self._endpoint += 1
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
                continue
            delay = 0.2

    async def _grant(self, client: aetcd.Client) -> None:
        sent = time.monotonic()
        lease = await client.lease(self.ttl)
        self._lease_id = lease.id
        self._lease_valid_until = sent + lease.ttl

    async def _campaign_forever(self) -> None:
        client = await self._connect()
        if not self._lease_id:
            await self._grant(client)
        elif time.monotonic() >= self._lease_valid_until:
            # etcd unreachable for longer than the TTL: the lease has likely expired, and a transaction naming it
            # fails ("requested lease not found") on every retry, so nobody would ever lead again. Ask first.
            await self._keepalive(client)
        interval = self.ttl / 3
        while not self._closed:
            leader = await self._try_acquire(client)
            watch_revision = leader.header.revision + 1 if leader is not None else 0
            # Keep our lease alive; followers also watch the key for its deletion.
            watcher = (
                asyncio.create_task(self._watch_delete(client, watch_revision), name="election-watch")
                if leader is not None
                else None
            )
            try:
                ticker = asyncio.create_task(asyncio.sleep(interval), name="election-tick")
                waits = {ticker} | ({watcher} if watcher else set())
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if watcher is not None and watcher in done:
                    watcher.result()  # re-raises a broken stream: campaign again from the top
            finally:
                stopped = await _cancel_and_wait((ticker, watcher))
            if not stopped:  # a watch that lost its cancel: closing the client (in _run) ends its stream
                raise aetcd.exceptions.ConnectionFailedError("the leader-key watch did not stop when cancelled")
            await self._keepalive(client)

    async def _keepalive(self, client: aetcd.Client) -> None:
        sent = time.monotonic()
        reply = await client.refresh_lease(self._lease_id)
        if reply is None or reply.TTL <= 0:
            log.warning("our lease expired; taking a new one")
            self._lease_id = 0
            self._set_elected(False)
            await self._grant(client)
            return
        self._lease_valid_until = sent + reply.TTL
        # A renewal answered after the local deadline (etcd restarting) makes leading() true again
        # without an election: wake wait_leading(), or the leader loop never starts a term again.
        self._changed.set()

    async def _try_acquire(self, client: aetcd.Client) -> Any:
        """Create the key if absent. Returns None when we lead, else the current holder's kv."""
        # A read first, and the transaction only when the key is free: a transaction with a put is a raft
        # proposal even when its compare fails (a log entry etcd holds in memory until its next snapshot,
        # 100,000 entries away), and every server asks every TTL/3. A read is not (make soak saw etcd's
        # memory grow ~0.1 MiB a minute from these).
        kv = await client.get(self.key)
        if kv is None:
            value = json.dumps(
                {
                    "identity": self.identity,
                    "address": self.address,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since_ms": int(time.time() * 1000),
                }
            ).encode()
            ok, responses = await client.transaction(
                compare=[client.transactions.create(self.key) == 0],
                success=[client.transactions.put(self.key, value, lease=self._lease_id)],
                failure=[client.transactions.get(self.key)],
            )
            if ok:
                self._set_elected(True, responses[0].response_put.header.revision)
                return None
            kvs = responses[0] if responses else []
            if not kvs:
                return await self._try_acquire(client)  # deleted between compare and get: try again
            _, kv = kvs[0]
        if kv.lease == self._lease_id:
            # Our own key from before an etcd hiccup: we still lead this term.
            if not self._elected:
                await self._keepalive(client)  # how long the lease really has left
                if self._lease_id == kv.lease:
                    self._set_elected(True, kv.create_revision)
            return None
        if self._elected:
            self._set_elected(False)
        return kv

    async def _watch_delete(self, client: aetcd.Client, start_revision: int) -> None:
        """Return when the leader key is deleted (raise if the stream breaks)."""
        watch = await client.watch(self.key, start_revision=start_revision or None)
        try:
            async for event in watch:
                if event.kind == "DELETE":
                    return
        finally:
            try:
                await watch.cancel()
            except Exception:  # noqa: BLE001 - the stream may already be gone
                pass
        raise aetcd.exceptions.ConnectionFailedError("watch stream ended")


async def read_leader(
    endpoints: Sequence[str],
    namespace: str,
    key: str,
    timeout: float = 2.0,
    auth: EtcdAuth | None = None,
    tls: EtcdTls | None = None,
) -> LeaderInfo | None:
    """Who leads now, read from etcd (None: nobody). Raises ETCD_ERRORS when etcd does not answer
    (or refuses ``auth`` or the TLS handshake)."""
    last: BaseException | None = None
    for endpoint in endpoints:
        host, port = _split(endpoint)
        client = etcd_client(host, port, max(1, int(timeout)), auth, tls)
        try:
            async with asyncio.timeout(timeout):
                await client.connect()
                got = await client.get(f"{namespace.rstrip('/')}/{key}".encode())
            return LeaderInfo.from_kv(got.value, got.create_revision) if got is not None else None
        except ETCD_ERRORS as exc:
            last = exc
        finally:
            try:
                async with asyncio.timeout(timeout):
                    await client.close()
            except Exception:  # noqa: BLE001 - TimeoutError among them: nothing more to do
                pass
    assert last is not None
    raise last
