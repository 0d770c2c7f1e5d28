"""The locked etcd (``make start``'s, and the locked tests'): another local user reaches no lease.

etcd 3.4 checks no password on LeaseLeases and LeaseKeepAlive, nor on the peer port's ``/leases``
handler, so with plain ports any local user could list the leader's lease and keep it alive after
the leader died: then no server leads again (no cron, cleanup or reconciliation). Both ports now
take only clients with a certificate of etcd's private CA, whose keys only root can read; and no
log line names a lease.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aetcd import rpc

from devtools import services as svc
from devtools.tls import ETCD_CLIENT, DevTls
from jobcluster.credentials import EtcdAuth
from jobcluster.election import Election
from jobcluster.etcd_client import etcd_client
from tests.helpers import wait_for
from tests.other_user import run_all

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs commands as another user (nobody)")

PREFIX = "/closed/"
CURL = [
    "curl",
    "-sS",
    "--fail",
    "--http1.1",
    "--max-time",
    "4",
    "-X",
    "POST",
    "-H",
    "Content-Type: application/protobuf",
    "--data-binary",
    "@-",
    "-o",
    "/dev/null",
    "-w",
    "%{http_code}",
]


@pytest.fixture(scope="module")
def etcd() -> Iterator[svc.Service]:
    """etcd started locked, as make start and private_services(locked=True) start it."""
    root = Path(tempfile.mkdtemp(prefix="jobcluster-etcd-closed-"))
    os.chmod(root, 0o755)  # so that only the TLS directory's own mode keeps other users from the keys
    users = svc.EtcdUsers(
        root / "secrets" / "etcd_root_password",
        svc.Login("jobcluster", root / "secrets" / "etcd_password"),
        PREFIX,
        root / "etcd-tls",
    )
    service = svc.start_etcd(root / "etcd", svc.free_port(), svc.free_port(), root / "etcd.log", users=users)
    try:
        yield service
    finally:
        service.stop()
        shutil.rmtree(root, ignore_errors=True)


def _tls(etcd: svc.Service) -> DevTls:
    assert etcd.tls is not None
    return etcd.tls


def _election(etcd: svc.Service, ttl: float) -> Election:
    assert etcd.login is not None
    return Election(
        (etcd.url,),
        f"{PREFIX}{uuid.uuid4().hex[:12]}",
        "leader",
        ttl,
        identity="closed",
        auth=EtcdAuth(etcd.login.user, etcd.login.password),
        tls=_tls(etcd).etcd_client_tls(),
    )


async def _lease_of_key(etcd: svc.Service, election: Election) -> int:
    """The lease the leader key is bound to, read as the programs read (certificate and user)."""
    assert etcd.login is not None
    host, port = etcd.url.split(":")
    async with etcd_client(
        host, int(port), 3, EtcdAuth(etcd.login.user, etcd.login.password), _tls(etcd).etcd_client_tls()
    ) as client:
        kv = await client.get(election.key)
    assert kv is not None and kv.lease
    return int(kv.lease)


@pytest.fixture
async def leader(etcd: svc.Service) -> AsyncIterator[tuple[Election, int]]:
    """A leader elected through the locked etcd, and the id of its lease."""
    election = _election(etcd, ttl=10)
    election.start()
    try:
        await wait_for(election.leading, timeout=10, what="elected through the locked etcd")
        yield election, await _lease_of_key(etcd, election)
    finally:
        await election.resign()


def test_etcds_keys_are_for_root_alone(etcd: svc.Service) -> None:
    tls = _tls(etcd)
    assert stat.S_IMODE(tls.directory.stat().st_mode) == 0o700
    for key in (tls.ca_key, tls.key, tls.client_files(ETCD_CLIENT)[1]):
        info = key.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o600, os.geteuid()), key


@pytest.mark.long("runs etcdctl as another user against a leader's lease for its TTL: ~7 s")
async def test_another_user_can_neither_list_nor_renew_the_leaders_lease_on_the_client_port(
    etcd: svc.Service, leader: tuple[Election, int]
) -> None:
    _, lease = leader
    lease_hex = f"{lease:x}"  # etcdctl pads it with zeros to 16 digits: found in its output either way
    tls = _tls(etcd)
    cert, key = tls.client_files(ETCD_CLIENT)
    endpoint = f"--endpoints=127.0.0.1:{etcd.port}"
    files = [f"--cacert={tls.ca}", f"--cert={cert}", f"--key={key}"]
    commands = (["lease", "list"], ["lease", "keep-alive", "--once", lease_hex])
    # Root, with the files: both work, so the same commands below fail for want of a certificate alone.
    mine = run_all([["etcdctl", endpoint, *files, *command] for command in commands], as_other_user=False)
    assert all(a.succeeded for a in mine), "\n".join(map(str, mine))
    assert lease_hex in mine[0].output and f"{lease:016x} keepalived" in mine[1].output, mine  # (zero-padded)
    ways = (
        [],  # plaintext, as before
        ["--insecure-transport=false", "--insecure-skip-tls-verify"],  # TLS, no certificate
        files,
    )  # TLS, naming root's files
    theirs = run_all(
        [["etcdctl", endpoint, *way, *command] for way in ways for command in commands], as_other_user=True
    )
    reached = [a for a in theirs if a.succeeded or lease_hex in a.output]
    assert not reached, "another user reached the leader's lease:\n" + "\n".join(map(str, reached))


def test_another_user_cannot_renew_a_lease_on_the_peer_port(etcd: svc.Service, leader: tuple[Election, int]) -> None:
    _, lease = leader
    tls = _tls(etcd)
    cert, key = tls.client_files(ETCD_CLIENT)
    url = f"127.0.0.1:{etcd.extra['peer_port']}/leases"
    renewal = rpc.LeaseKeepAliveRequest(ID=lease).SerializeToString()
    # etcd's own certificate renews (so the request is right); the programs' may not use the peer port.
    mine = run_all(
        [
            [*CURL, "--cacert", str(tls.ca), "--cert", str(tls.cert), "--key", str(tls.key), f"https://{url}"],
            [*CURL, "--cacert", str(tls.ca), "--cert", str(cert), "--key", str(key), f"https://{url}"],
        ],
        as_other_user=False,
        stdin=renewal,
    )
    assert mine[0].succeeded and mine[0].output == "200", mine[0]
    assert not mine[1].succeeded, mine[1]
    theirs = run_all(
        [
            [*CURL, f"http://{url}"],
            [*CURL, "--insecure", f"https://{url}"],
            [*CURL, "--cacert", str(tls.ca), "--cert", str(tls.cert), "--key", str(tls.key), f"https://{url}"],
        ],
        as_other_user=True,
        stdin=renewal,
    )
    renewed = [a for a in theirs if a.succeeded]
    assert not renewed, "another user renewed the lease on the peer port:\n" + "\n".join(map(str, renewed))


async def test_no_log_line_names_a_lease(etcd: svc.Service, caplog: pytest.LogCaptureFixture) -> None:
    """Elected, its lease revoked from outside (so it says it lost it and takes a new one), elected again."""
    caplog.set_level(logging.DEBUG)
    election = _election(etcd, ttl=2)
    election.start()
    try:
        await wait_for(election.leading, timeout=10, what="elected")
        first = await _lease_of_key(etcd, election)
        host, port = etcd.url.split(":")
        assert etcd.login is not None
        async with etcd_client(
            host, int(port), 3, EtcdAuth(etcd.login.user, etcd.login.password), _tls(etcd).etcd_client_tls()
        ) as client:
            await client.revoke_lease(first)  # (a revocation, unlike a renewal, needs the user)
        await wait_for(lambda: caplog.text.count("elected leader") == 2, timeout=10, what="elected again")
        second = await _lease_of_key(etcd, election)
    finally:
        await election.resign()
    assert "lease expired" in caplog.text and first != second
    for lease in (first, second):
        assert f"{lease:x}" not in caplog.text.lower() and str(lease) not in caplog.text, caplog.text
