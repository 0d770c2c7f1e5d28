"""The web UI's Host and Origin checks (DNS rebinding, cross-site posts) and the settings behind them."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from jobcluster.settings import ConfigError, Settings
from tests.unit.fake_jobservice import SERVERS, FakeConnector, csrf
from webui.config import UIConfig, is_loopback, read_password_file, ui_config
from webui.guard import same_origin, split_host

A, B = SERVERS
EVIL = "http://evil.example:8080"
TOKEN = "t" * 32


# --- Host: DNS rebinding ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/jobs", "/api/jobs", "/api/health", "/static/style.css", "/login"])
def test_a_request_to_a_foreign_host_is_refused_with_400(client: TestClient, fake: FakeConnector, path: str) -> None:
    r = client.get(path, headers={"Host": "evil.example:8080"})
    assert r.status_code == 400
    assert "Host not allowed" in r.text and "WEBUI_HOSTS" in r.text and "evil.example" in r.text
    assert not any(s.calls for s in fake.servers.values())
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]


def test_a_rebinding_page_cannot_post_a_job(client: TestClient, fake: FakeConnector) -> None:
    # The browser thinks the page and the UI are both evil.example: same origin, Host evil.example.
    r = client.post("/api/jobs", json={"command": "id"}, headers={"Host": "evil.example:8080", "Origin": EVIL})
    assert r.status_code == 400 and "WEBUI_HOSTS" in r.json()["error"]
    assert not fake.servers[A].asked("SubmitJob")


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080", "[::1]:8080", "localhost"])
def test_the_loopback_names_are_the_loopback_uis_own(client: TestClient, host: str) -> None:
    assert client.get("/", headers={"Host": host}).status_code == 200


def test_a_request_without_a_host_is_refused(client: TestClient) -> None:
    assert client.get("/", headers={"Host": ""}).status_code == 400


def test_webui_hosts_adds_names() -> None:
    config = ui_config(Settings(webui_hosts=("Jobs.Example.com.", "[2001:db8::1]")), "127.0.0.1:8080")
    assert config.names == {"127.0.0.1", "localhost", "::1", "jobs.example.com", "2001:db8::1"}


def test_a_ui_on_one_address_answers_to_that_address_only() -> None:
    config = ui_config(Settings(auth_token=TOKEN), "192.0.2.10:8080")
    assert config.names == {"192.0.2.10"}


def test_a_ui_on_every_address_answers_to_loopback_and_webui_hosts() -> None:
    config = ui_config(Settings(auth_token=TOKEN, webui_hosts=("jobs.example.com",)), "0.0.0.0:8080")
    assert config.names == {"127.0.0.1", "localhost", "::1", "jobs.example.com"}


# --- Origin: cross-site requests that change something -------------------------------------


def test_a_form_post_from_another_origin_is_refused_with_403(client: TestClient, fake: FakeConnector) -> None:
    token = csrf(client)
    r = client.post("/submit", data={"csrf": token, "command": "id"}, headers={"Origin": EVIL})
    assert r.status_code == 403 and "Origin refused" in r.text and EVIL in r.text
    assert not fake.servers[A].asked("SubmitJob")


def test_an_api_post_from_another_origin_is_refused_with_403(client: TestClient, fake: FakeConnector) -> None:
    r = client.post("/api/jobs", json={"command": "id"}, headers={"Origin": EVIL})
    assert r.status_code == 403 and "Origin refused" in r.json()["error"]
    assert not fake.servers[A].asked("SubmitJob")


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:3000",  # another program on this machine: same site, other origin
        "null",  # a sandboxed frame or a file
        "http://127.0.0.1.evil.example:8080",
    ],
)
def test_near_misses_of_the_origin_are_refused(client: TestClient, fake: FakeConnector, origin: str) -> None:
    r = client.post("/api/jobs", json={"command": "id"}, headers={"Origin": origin})
    assert r.status_code == 403
    assert not fake.servers[A].asked("SubmitJob")


def test_without_an_origin_the_referer_decides(client: TestClient, fake: FakeConnector) -> None:
    r = client.post("/api/jobs", json={"command": "id"}, headers={"Referer": f"{EVIL}/page"})
    assert r.status_code == 403
    r = client.post("/api/jobs", json={"command": "id"}, headers={"Referer": "http://127.0.0.1:8080/"})
    assert r.status_code == 201


def test_the_uis_own_origin_may_post(client: TestClient, fake: FakeConnector) -> None:
    token = csrf(client)
    r = client.post("/submit", data={"csrf": token, "command": "echo ok"}, headers={"Origin": "http://127.0.0.1:8080"})
    assert r.status_code == 303 and fake.servers[A].asked("SubmitJob")


def test_reading_is_not_refused_for_its_origin(client: TestClient) -> None:
    assert client.get("/jobs", headers={"Origin": EVIL}).status_code == 200


def test_the_csrf_token_is_still_required_from_the_own_origin(client: TestClient, fake: FakeConnector) -> None:
    r = client.post("/submit", data={"command": "id"}, headers={"Origin": "http://127.0.0.1:8080"})
    assert r.status_code == 403 and "security token" in r.text
    assert not fake.servers[A].asked("SubmitJob")


@pytest.mark.parametrize(
    "origin,host,same",
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
        ("https://jobs.example.com", "jobs.example.com", True),  # behind a proxy on 443
        ("https://jobs.example.com:443", "jobs.example.com:443", True),
        ("http://[::1]:8080", "[::1]:8080", True),
        ("http://127.0.0.1:8081", "127.0.0.1:8080", False),
        ("http://jobs.example.com.evil:80", "jobs.example.com", False),
        ("not a url", "127.0.0.1:8080", False),
    ],
)
def test_same_origin(origin: str, host: str, same: bool) -> None:
    assert same_origin(origin, host) is same


def test_split_host() -> None:
    assert split_host("[::1]:8080") == ("::1", 8080)
    assert split_host("Example.COM.") == ("example.com", None)
    assert split_host("::1") == ("::1", None)


# --- Refusing to start ------------------------------------------------------------------------


def test_a_ui_beyond_loopback_without_a_login_refuses_to_start() -> None:
    with pytest.raises(ConfigError) as refused:
        ui_config(Settings(), "192.0.2.10:8080")
    message = str(refused.value)
    assert "WEBUI_ADDR=192.0.2.10:8080 is not loopback" in message
    assert "WEBUI_PASSWORD_FILE" in message and "AUTH_TOKEN" in message


def test_a_ui_on_every_address_needs_webui_hosts() -> None:
    with pytest.raises(ConfigError, match="WEBUI_HOSTS"):
        ui_config(Settings(auth_token=TOKEN), "0.0.0.0:8080")


@pytest.mark.parametrize("addr", ["8080", "host:port", "[::1]", "127.0.0.1:0", "127.0.0.1:70000"])
def test_a_bad_address_names_webui_addr(addr: str) -> None:
    with pytest.raises(ConfigError, match="WEBUI_ADDR must be host:port"):
        ui_config(Settings(), addr)


def test_which_uis_need_a_login() -> None:
    assert not ui_config(Settings(), "127.0.0.1:8080").login_required  # as before tokens existed
    assert ui_config(Settings(), "127.0.0.1:8080", password="a password").login_required  # optional on loopback
    # A cluster with tokens: an open loopback UI would lend its own token to every local user and job.
    assert ui_config(Settings(auth_token=TOKEN), "localhost:8080").login_required
    assert ui_config(Settings(auth_tokens_file="tokens"), "127.0.0.1:8080").login_required
    assert ui_config(Settings(auth_tokens_file="tokens"), "192.0.2.10:8080").login_required
    assert is_loopback("127.0.0.2") and is_loopback("::1") and not is_loopback("192.0.2.10")


def test_tls_makes_the_ui_https() -> None:
    config = ui_config(Settings(tls_cert="c.pem", tls_key="k.pem"), "127.0.0.1:8443")
    assert config.tls and config.url() == "https://127.0.0.1:8443"
    assert UIConfig().url() == "http://127.0.0.1:8080"


def test_the_password_file_must_be_private_and_long_enough(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("correct horse battery\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_password_file(str(path))
    path.chmod(0o600)
    assert read_password_file(str(path)) == "correct horse battery"
    path.write_text("short\n")
    with pytest.raises(ConfigError, match="at least 8 characters"):
        read_password_file(str(path))
    with pytest.raises(ConfigError, match="WEBUI_PASSWORD_FILE: cannot read"):
        read_password_file(str(tmp_path / "missing"))


def test_the_password_is_not_in_the_configs_repr() -> None:
    assert "hunter22" not in repr(ui_config(Settings(), "127.0.0.1:8080", password="hunter22"))
