"""A private certificate authority and certificates for ``make start TLS=1`` and the tests.

    python -m devtools.tls server [DIR]        CA + server certificate (default DIR .run/tls)
    python -m devtools.tls client NAME [DIR]   a client certificate, for servers with TLS_CLIENT_CA
    python -m devtools.tls etcd [DIR]          etcd's own CA, its certificate, the programs' (.run/etcd-tls)

Made with the ``openssl`` command (Debian ships it; ``scripts/bootstrap.sh``
installs it when missing) rather than a Python package, so the project needs
no extra dependency and each step is a command an operator can read and rerun.
Keys are EC P-256, written mode 0600 in a directory of mode 0700. The server
certificate names 127.0.0.1, localhost and this host's name; it is made again
when those change or it expires within 30 days. The CA is kept as long as it
is valid, so a client that trusts ``ca.pem`` keeps working.

The etcd that ``make start`` runs has a CA of its own (:func:`ensure_etcd_tls`), so that no
certificate made for the gRPC servers' clients opens etcd: etcd 3.4 checks no password on lease
calls, and a certificate from this CA is all that stands between a local user and the leader's lease.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from jobcluster.etcd_client import EtcdTls

DEFAULT_DIR = Path(".run") / "tls"
ETCD_DIR = Path(".run") / "etcd-tls"
#: The programs' certificate for etcd. Its name is the certificate's CN, which etcd takes as the user name of a
#: request that carries no token: it must not be an etcd user, so that a request without a password is refused.
ETCD_CLIENT = "etcd-client"
ETCD_NAMES = ("127.0.0.1", "localhost")
CA_DAYS, CERT_DAYS = 3650, 825
RENEW_BEFORE = 30 * 24 * 3600  # seconds

CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = jobcluster
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = {sans}
[peer_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = {sans}
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
"""


class TlsError(RuntimeError):
    """openssl is missing or failed; the message says what to do."""


@dataclass(frozen=True)
class DevTls:
    """Where the files are: give servers ``cert``/``key`` (TLS_CERT/TLS_KEY), clients ``ca`` (TLS_CA)."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def key(self) -> Path:
        return self.directory / "server.key"

    @property
    def names_file(self) -> Path:
        return self.directory / "server.names"

    def server_env(self) -> dict[str, str]:
        """The settings that make a server speak TLS with these files."""
        return {"TLS_CERT": str(self.cert.resolve()), "TLS_KEY": str(self.key.resolve())}

    def client_env(self) -> dict[str, str]:
        """The setting that makes a client trust these servers."""
        return {"TLS_CA": str(self.ca.resolve())}

    def client_files(self, name: str) -> tuple[Path, Path]:
        """Client certificate ``name``: its certificate and key (see :func:`ensure_client_cert`)."""
        return self.directory / f"{name}.pem", self.directory / f"{name}.key"

    def etcd_client_env(self) -> dict[str, str]:
        """The settings that make the programs reach an etcd of :func:`ensure_etcd_tls` (absolute paths)."""
        cert, key = self.client_files(ETCD_CLIENT)
        return {"ETCD_CA": str(self.ca.resolve()), "ETCD_CERT": str(cert.resolve()), "ETCD_KEY": str(key.resolve())}

    def etcd_client_tls(self) -> EtcdTls:
        """The programs' certificate and this CA, read now, for a client of an etcd of :func:`ensure_etcd_tls`."""
        cert, key = self.client_files(ETCD_CLIENT)
        return EtcdTls(ca=self.ca.read_bytes(), cert=cert.read_bytes(), key=key.read_bytes())


def default_names() -> tuple[str, ...]:
    """What the server certificate is valid for: loopback by address and name, and this host's name."""
    return tuple(dict.fromkeys(["127.0.0.1", "localhost", socket.gethostname()]))


def _openssl(*args: str | Path) -> None:
    try:
        done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise TlsError("the openssl command is missing: apt-get install openssl (make deps does it)") from None
    if done.returncode != 0:
        raise TlsError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")


def _valid_for(cert: Path, seconds: int) -> bool:
    done = subprocess.run(
        ["openssl", "x509", "-checkend", str(seconds), "-noout", "-in", str(cert)], capture_output=True, check=False
    )
    return done.returncode == 0


def _config(tls: DevTls, names: tuple[str, ...]) -> Path:
    sans = ", ".join(f"IP:{n}" if n.replace(".", "").isdigit() or ":" in n else f"DNS:{n}" for n in names)
    path = tls.directory / "openssl.cnf"
    path.write_text(CONFIG.format(sans=sans))
    return path


def _new_key_and_request(key: Path, request: Path, config: Path, subject: str) -> None:
    _openssl(
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        request,
        "-subj",
        subject,
        "-config",
        config,
    )
    key.chmod(0o600)


def _sign(tls: DevTls, request: Path, out: Path, config: Path, extensions: str) -> None:
    _openssl(
        "x509",
        "-req",
        "-in",
        request,
        "-CA",
        tls.ca,
        "-CAkey",
        tls.ca_key,
        "-set_serial",
        f"0x{secrets.token_hex(16)}",
        "-days",
        str(CERT_DAYS),
        "-sha256",
        "-extfile",
        config,
        "-extensions",
        extensions,
        "-out",
        out,
    )
    request.unlink()


def _make_ca(tls: DevTls, config: Path) -> None:
    _openssl(
        "req",
        "-x509",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        tls.ca_key,
        "-out",
        tls.ca,
        "-days",
        str(CA_DAYS),
        "-sha256",
        "-subj",
        f"/CN=jobcluster private CA {socket.gethostname()}",
        "-config",
        config,
        "-extensions",
        "ca_ext",
    )
    tls.ca_key.chmod(0o600)
    tls.ca.chmod(0o644)


def ensure_server_tls(
    directory: Path = DEFAULT_DIR, names: tuple[str, ...] | None = None, *, peer: bool = False
) -> DevTls:
    """The CA and a server certificate in ``directory``: kept when still good, made when missing or stale.

    ``peer``: the certificate may also serve as a client's (etcd presents its peer certificate both ways).
    """
    names = names or default_names()
    tls = DevTls(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    config = _config(tls, names)
    new_ca = not (tls.ca.exists() and tls.ca_key.exists() and _valid_for(tls.ca, RENEW_BEFORE))
    if new_ca:
        _make_ca(tls, config)
    recorded = "\n".join(names) + ("\npeer" if peer else "")
    same_names = tls.names_file.exists() and tls.names_file.read_text() == recorded
    if new_ca or not same_names or not tls.key.exists() or not _valid_for(tls.cert, RENEW_BEFORE):
        request = directory / "server.csr"
        _new_key_and_request(tls.key, request, config, f"/CN={names[0]}")
        _sign(tls, request, tls.cert, config, "peer_ext" if peer else "server_ext")
        tls.names_file.write_text(recorded)
    return tls


def issue_client_cert(tls: DevTls, name: str) -> tuple[Path, Path]:
    """A client certificate ``<name>.pem`` and key ``<name>.key`` signed by the CA (for TLS_CLIENT_CA)."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise TlsError(f"client name {name!r}: use letters, digits, - and _")
    config = _config(tls, default_names())
    cert, key = tls.directory / f"{name}.pem", tls.directory / f"{name}.key"
    request = tls.directory / f"{name}.csr"
    _new_key_and_request(key, request, config, f"/CN={name}")
    _sign(tls, request, cert, config, "client_ext")
    return cert, key


def ensure_client_cert(tls: DevTls, name: str) -> tuple[Path, Path]:
    """Client certificate ``name`` of :func:`issue_client_cert`, kept while the CA signed it and it is valid."""
    cert, key = tls.client_files(name)
    signed = (
        key.exists()
        and cert.exists()
        and subprocess.run(
            ["openssl", "verify", "-CAfile", str(tls.ca), str(cert)], capture_output=True, check=False
        ).returncode
        == 0
    )
    if signed and _valid_for(cert, RENEW_BEFORE):
        return cert, key
    return issue_client_cert(tls, name)


def ensure_etcd_tls(directory: Path = ETCD_DIR) -> DevTls:
    """etcd's private CA, its certificate for clients and peers (loopback), and the programs' client certificate.

    etcd runs with ``cert``/``key`` on both ports and lets in only certificates of ``ca``
    (``--client-cert-auth``, ``--peer-client-cert-auth``); the programs present
    :data:`ETCD_CLIENT`. Keys are mode 0600 in ``directory`` (mode 0700): only its owner reaches etcd.
    """
    tls = ensure_server_tls(directory, ETCD_NAMES, peer=True)
    ensure_client_cert(tls, ETCD_CLIENT)
    return tls


def cluster_tls(directory: Path, wanted: bool, servers_running: bool) -> DevTls | None:
    """``make start``'s TLS: with ``TLS=1`` the files in ``directory`` (made when missing), else None.

    The directory exists only while the cluster uses TLS (the client trusts its CA
    for the servers in ``.servers``), so a start without TLS removes it. Switching
    while servers run would leave them speaking the other way: refused.
    """
    tls = DevTls(directory)
    if servers_running and tls.ca.exists() != wanted:
        now, asked = ("with", "without") if tls.ca.exists() else ("without", "with")
        raise TlsError(
            f"the servers make start started run {now} TLS; to start {asked} it, "
            f"make stop first (or make start{' TLS=1' if not wanted else ''})"
        )
    if wanted:
        return ensure_server_tls(directory)
    if directory.exists():
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()
    return None


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("server", "client", "etcd") or (argv[0] == "client" and len(argv) < 2):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if argv[0] == "server":
            tls = ensure_server_tls(Path(argv[1]) if len(argv) > 1 else DEFAULT_DIR)
            print(f"TLS_CERT={tls.cert.resolve()}\nTLS_KEY={tls.key.resolve()}\nTLS_CA={tls.ca.resolve()}")
        elif argv[0] == "etcd":
            tls = ensure_etcd_tls(Path(argv[1]) if len(argv) > 1 else ETCD_DIR)
            print("".join(f"{k}={v}\n" for k, v in tls.etcd_client_env().items()), end="")
        else:
            tls = DevTls(Path(argv[2]) if len(argv) > 2 else DEFAULT_DIR)
            if not tls.ca_key.exists():
                raise TlsError(f"no CA in {tls.directory}: run `python -m devtools.tls server` first")
            cert, key = issue_client_cert(tls, argv[1])
            print(
                f"TLS_CLIENT_CERT={cert.resolve()}\nTLS_CLIENT_KEY={key.resolve()}\n"
                f"servers: TLS_CLIENT_CA={tls.ca.resolve()}"
            )
    except TlsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
