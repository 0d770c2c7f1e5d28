"""The etcd client of every program: aetcd's, over TLS with a client certificate when the settings ask for it.

etcd 3.4 checks no password on lease calls (LeaseKeepAlive, LeaseLeases, and the peer port's
``/leases``), so the etcd that ``make start`` runs lets in only clients that present a certificate
of its private CA (``--client-cert-auth``; see :func:`devtools.tls.ensure_etcd_tls`).
aetcd 1.0.0 opens insecure channels only: :class:`TlsClient` is its client with the channel opened
by ``grpc.aio.secure_channel`` instead. The user and password (ETCD_USER, ETCD_PASSWORD_FILE) are
still sent on top, as before.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aetcd
import aetcd.exceptions
import grpc
from aetcd import rpc

from jobcluster.credentials import EtcdAuth
from jobcluster.settings import ConfigError, Settings

#: Longest PEM file we read (a CA bundle may hold many certificates).
MAX_PEM_BYTES = 1 << 20


@dataclass(frozen=True)
class EtcdTls:
    """What a TLS connection to etcd trusts and presents, as PEM bytes (``ca`` None: the system's roots)."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)

    def credentials(self) -> Any:
        """gRPC channel credentials for these files."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def _pem(setting: str, path: str) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{setting}={path}: cannot read it ({exc.strerror or exc})") from None
    if b"-----BEGIN " not in data or len(data) > MAX_PEM_BYTES:
        raise ConfigError(f"{setting}={path}: not a PEM file; is it the right file?")
    return data


def etcd_tls(settings: Settings) -> EtcdTls | None:
    """ETCD_CA, ETCD_CERT and ETCD_KEY, read now; None (plaintext) when neither ETCD_CA nor ETCD_CERT is set
    and no endpoint says ``https://``."""
    wanted = settings.etcd_ca or settings.etcd_cert or any(e.startswith("https://") for e in settings.etcd_endpoints)
    if not wanted:
        return None
    return EtcdTls(
        ca=_pem("ETCD_CA", settings.etcd_ca),
        cert=_pem("ETCD_CERT", settings.etcd_cert),
        key=_pem("ETCD_KEY", settings.etcd_key),
    )


class TlsClient(aetcd.Client):  # type: ignore[misc]  # aetcd publishes no types
    """``aetcd.Client`` whose channel is TLS with ``tls``'s certificates.

    ``connect`` is aetcd 1.0.0's own, step for step, with ``secure_channel`` in place of
    ``insecure_channel`` (aetcd has no hook for the channel); every other method is aetcd's.
    """

    _is_connecting: bool  # aetcd's, set in its __init__

    def __init__(self, tls: EtcdTls, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._credentials = tls.credentials()

    async def connect(self) -> None:
        """Open the TLS channel, log in when a user is set, and make the stubs (as aetcd's connect does)."""
        try:
            await self._connect()
        except rpc.AioRpcError as exc:
            aetcd.exceptions._handle_exception(exc)  # raises aetcd's error for the status, as aetcd does

    async def _connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:  # another task is connecting: wait for it
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        try:
            self._is_connecting = True
            self.channel = rpc.secure_channel(
                f"{self._host}:{self._port}", self._credentials, options=self._options.items()
            )
            if self._username is not None and self._password is not None:
                self.auth_stub = rpc.AuthStub(self.channel)
                reply = await self.auth_stub.Authenticate(
                    rpc.AuthenticateRequest(name=self._username, password=self._password), timeout=self._timeout
                )
                self.metadata = (("token", reply.token),)
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata)
            self._connected.set()
        finally:
            self._is_connecting = False


def etcd_client(
    host: str, port: int, timeout: int, auth: EtcdAuth | None = None, tls: EtcdTls | None = None
) -> aetcd.Client:
    """An aetcd client for ``host:port`` (not connected yet): TLS when ``tls`` is given, logged in with ``auth``."""
    login: dict[str, Any] = {} if auth is None else {"username": auth.user, "password": auth.password}
    if tls is None:
        return aetcd.Client(host=host, port=port, timeout=timeout, **login)
    return TlsClient(tls, host=host, port=port, timeout=timeout, **login)
