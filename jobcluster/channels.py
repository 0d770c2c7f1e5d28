"""Client channels to the servers: the token they send, TLS, and the message limits, in one place.

Every program that calls a server (client, web UI, ``make start``/``status``,
scripts) opens its channels with :func:`open_channel` or
:func:`open_aio_channel` and a :class:`ChannelSecurity` built from its
settings: ``AUTH_TOKEN`` travels as gRPC metadata ``authorization: Bearer
<token>`` on every call (unless the call carries its own), ``TLS_CA`` turns TLS
on, ``TLS_CLIENT_CERT``/``TLS_CLIENT_KEY`` add a client certificate, and the
limits of :mod:`jobcluster.limits` apply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

from jobcluster.limits import GRPC_OPTIONS
from jobcluster.settings import Settings

#: Where ``make start TLS=1`` keeps the CA that signed its servers' certificate.
DEV_CA = Path(".run") / "tls" / "ca.pem"
#: The servers ``make start`` started, one ``host:port`` a line.
SERVERS_FILE = Path(".servers")


class SecurityError(ValueError):
    """A client's token or TLS setting cannot be used; the message names the setting."""


def read_servers_file(path: str | Path = SERVERS_FILE) -> list[str]:
    """``host:port`` a line, as ``make start`` writes it; [] when there is no such file."""
    try:
        with open(path, encoding="utf-8") as f:
            return [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    except OSError:
        return []


def _read(path: str, name: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityError(f"{name}: cannot read {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class ChannelSecurity:
    """What a client needs to reach servers that take a token or speak TLS; the default is neither."""

    token: str = field(default="", repr=False)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ChannelSecurity:
        """AUTH_TOKEN, TLS_CA, TLS_CLIENT_CERT and TLS_CLIENT_KEY from ``env`` (the client's ``read_env()``)."""

        def get(name: str) -> str:
            return env.get(name, "").strip()

        return cls(get("AUTH_TOKEN"), get("TLS_CA"), get("TLS_CLIENT_CERT"), get("TLS_CLIENT_KEY"))

    @classmethod
    def from_settings(cls, s: Settings) -> ChannelSecurity:
        """The same settings, from a program's :class:`Settings`."""
        return cls(s.auth_token, s.tls_ca, s.tls_client_cert, s.tls_client_key)

    @property
    def tls(self) -> bool:
        return bool(self.ca_file)

    def for_servers(
        self, servers: Sequence[str], servers_file: str | Path = SERVERS_FILE, dev_ca: str | Path = DEV_CA
    ) -> ChannelSecurity:
        """With ``make start TLS=1``'s CA when TLS_CA is not set and every server is one ``make start`` started."""
        started = set(read_servers_file(servers_file))
        if self.ca_file or not servers or not started.issuperset(servers) or not Path(dev_ca).is_file():
            return self
        return replace(self, ca_file=str(Path(dev_ca).resolve()))

    def credentials(self) -> Any:
        """TLS channel credentials (``grpc.ChannelCredentials``), or None for plaintext.

        Raises :class:`SecurityError` naming the setting when a file cannot be read or a value is unusable.
        """
        if self.token and (not self.token.isascii() or not self.token.isprintable() or " " in self.token):
            raise SecurityError("AUTH_TOKEN must be printable ASCII without spaces")
        if bool(self.cert_file) != bool(self.key_file):
            raise SecurityError("TLS_CLIENT_CERT and TLS_CLIENT_KEY go together: set both or neither")
        if not self.ca_file:
            if self.cert_file:
                raise SecurityError("TLS_CLIENT_CERT is set but TLS_CA is not: set TLS_CA to use TLS")
            return None
        ca = _read(self.ca_file, "TLS_CA")
        cert = _read(self.cert_file, "TLS_CLIENT_CERT") if self.cert_file else None
        key = _read(self.key_file, "TLS_CLIENT_KEY") if self.key_file else None
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def hint(self) -> str:
        """What to check when no server answered: often a TLS or client-certificate mismatch."""
        if not self.tls:
            return (
                "if the servers use TLS, set TLS_CA to the CA certificate that signed theirs "
                f"(make start TLS=1 keeps it in {DEV_CA})"
            )
        return (
            "this client uses TLS (TLS_CA): check that the servers use TLS with a certificate signed by "
            "TLS_CA and valid for the address used, and set TLS_CLIENT_CERT/TLS_CLIENT_KEY when they "
            "require client certificates (TLS_CLIENT_CA)"
        )


def _metadata_with(metadata: Any, entry: tuple[str, str]) -> list[tuple[str, str]] | None:
    """The call's metadata plus ``entry``; None when the call already has its own ``authorization``."""
    pairs = list(metadata or ())
    if any(key == "authorization" for key, _ in pairs):
        return None
    return [*pairs, entry]


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds ``authorization: Bearer <token>`` to every call of a blocking channel."""

    def __init__(self, token: str) -> None:
        self._entry = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = _metadata_with(details.metadata, self._entry)
        return details if metadata is None else details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Callable[[Any, Any], Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[[Any, Any], Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


class _AioBearer:
    """Adds ``authorization: Bearer <token>`` to the calls of a grpc.aio channel."""

    def __init__(self, token: str) -> None:
        self._entry = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = _metadata_with(details.metadata, self._entry)
        if metadata is None:
            return details
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, grpc.aio.Metadata(*metadata), details.credentials, details.wait_for_ready
        )


# Two classes: grpc.aio files an interceptor under the first kind it is an instance of, only.
class _AioBearerUnary(_AioBearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Callable[[Any, Any], Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioBearerStream(_AioBearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Callable[[Any, Any], Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


def open_channel(address: str, security: ChannelSecurity = ChannelSecurity()) -> Any:
    """A blocking ``grpc.Channel`` to ``address`` with the token, TLS and limits of ``security``."""
    credentials = security.credentials()
    if credentials is None:
        channel = grpc.insecure_channel(address, options=GRPC_OPTIONS)
    else:
        channel = grpc.secure_channel(address, credentials, options=GRPC_OPTIONS)
    return grpc.intercept_channel(channel, _Bearer(security.token)) if security.token else channel


def open_aio_channel(address: str, security: ChannelSecurity = ChannelSecurity()) -> Any:
    """A ``grpc.aio.Channel`` to ``address`` with the token, TLS and limits of ``security``."""
    credentials = security.credentials()
    interceptors = [_AioBearerUnary(security.token), _AioBearerStream(security.token)] if security.token else None
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=GRPC_OPTIONS, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=GRPC_OPTIONS, interceptors=interceptors)
