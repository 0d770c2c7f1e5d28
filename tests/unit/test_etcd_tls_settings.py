"""ETCD_CA, ETCD_CERT, ETCD_KEY: when the programs speak TLS to etcd, and what a bad file says."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobcluster.etcd_client import EtcdTls, TlsClient, etcd_client, etcd_tls
from jobcluster.settings import ConfigError, Settings

PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("env", [{"ETCD_CERT": "/c"}, {"ETCD_KEY": "/k"}])
def test_a_client_certificate_without_its_key_is_refused_by_name(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="ETCD_CERT and ETCD_KEY go together"):
        Settings.from_env(env)


def test_no_tls_setting_means_plaintext() -> None:
    s = Settings.from_env({})
    assert etcd_tls(s) is None
    assert not isinstance(etcd_client("127.0.0.1", 2379, 1, tls=etcd_tls(s)), TlsClient)


def test_the_files_are_read_at_once_and_the_key_stays_out_of_reprs(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "c.key"):
        (tmp_path / name).write_bytes(PEM.replace(b"CERTIFICATE", b"PRIVATE KEY" if name == "c.key" else b"X"))
    s = Settings.from_env(
        {"ETCD_CA": str(tmp_path / "ca.pem"), "ETCD_CERT": str(tmp_path / "c.pem"), "ETCD_KEY": str(tmp_path / "c.key")}
    )
    tls = etcd_tls(s)
    assert tls is not None and tls.key is not None and b"PRIVATE KEY" in tls.key
    assert "PRIVATE KEY" not in repr(tls)
    assert isinstance(etcd_client("127.0.0.1", 2379, 1, tls=tls), TlsClient)


def test_an_https_endpoint_alone_means_tls_with_the_systems_roots() -> None:
    assert etcd_tls(Settings.from_env({"ETCD_ENDPOINTS": "https://etcd.example:2379"})) == EtcdTls()


@pytest.mark.parametrize(
    ("content", "message"), [(None, "ETCD_CA=.*: cannot read it"), (b"not a certificate", "ETCD_CA=.*: not a PEM file")]
)
def test_a_missing_or_wrong_file_is_a_config_error_naming_the_setting(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        etcd_tls(Settings.from_env({"ETCD_CA": str(path)}))
