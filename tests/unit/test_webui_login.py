"""The web UI's login: who gets in, with what, for how long, and whose token its calls carry."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Iterator

import httpx2
import pytest
from httpx2 import Response
from starlette.applications import Starlette
from starlette.testclient import TestClient

from jobcluster.settings import ConfigError, Settings
from tests.unit.fake_jobservice import SERVERS, FakeConnector, csrf, ui_client
from webui import sessions
from webui.app import create_app
from webui.auth import SESSION_COOKIE
from webui.config import UIConfig, password_digest, ui_config
from webui.pages.login import safe_next
from webui.sessions import GLOBAL_FREE_FAILURES, GLOBAL_MAX_DELAY, MAX_FAILURES

A, B = SERVERS
URL = "http://jobs.example:8080"
PASSWORD = "correct horse battery"
ADMIN, READER = "t-admin-" + "a" * 32, "t-read-" + "r" * 32
TTL = 3600.0
EXPOSED = UIConfig(
    host="192.0.2.10",
    port=8080,
    names=frozenset({"192.0.2.10", "jobs.example"}),
    password=password_digest(PASSWORD),
    token_login=True,
    session_ttl=TTL,
)


class Clock:
    """The sessions' and rate limit's time, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def exposed(fake: FakeConnector, clock: Clock) -> Iterator[TestClient]:
    """A UI beyond loopback, with a password and token login, in front of servers that check tokens."""
    fake.cluster.accepted_tokens = {ADMIN, READER}
    fake.cluster.read_only = {READER}
    yield from ui_client(fake, EXPOSED, clock, base_url=URL)


def log_in(client: TestClient, **fields: str) -> Response:
    client.get("/login")
    return client.post("/login", data={"csrf": client.cookies["jobcluster_csrf"], **fields})


def submit(client: TestClient, command: str = "echo hi") -> Response:
    return client.post("/submit", data={"csrf": csrf(client), "command": command})


# --- without a session ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/jobs", "/dlq", "/schedules", "/cluster", "/jobs/j-1"])
def test_a_page_sends_you_to_the_login_first(exposed: TestClient, fake: FakeConnector, path: str) -> None:
    r = exposed.get(path)
    assert r.status_code == 303
    assert r.headers["location"] in ("/login", f"/login?next={path.replace('/', '%2F')}")
    assert not any(s.calls for s in fake.servers.values())


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/api/jobs"),
        ("GET", "/api/jobs/j-1"),
        ("POST", "/api/jobs"),
        ("GET", "/api/cluster"),
        ("GET", "/jobs/j-1/events"),
    ],
)
def test_the_api_answers_401_without_a_login(exposed: TestClient, fake: FakeConnector, method: str, path: str) -> None:
    r = exposed.request(method, path, json={"command": "id"} if method == "POST" else None)
    assert r.status_code == 401 and "Log in first" in r.json()["error"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert not any(s.calls for s in fake.servers.values())


def test_a_form_post_without_a_login_changes_nothing(exposed: TestClient, fake: FakeConnector) -> None:
    exposed.get("/login")
    r = exposed.post("/submit", data={"csrf": exposed.cookies["jobcluster_csrf"], "command": "id"})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert not fake.servers[A].asked("SubmitJob")


def test_health_the_login_page_and_the_stylesheet_stay_open(exposed: TestClient) -> None:
    assert exposed.get("/api/health").status_code == 200
    assert exposed.get("/static/style.css").status_code == 200
    page = exposed.get("/login")
    assert page.status_code == 200
    assert '<label for="password">Password</label>' in page.text and 'for="token"' in page.text
    assert 'href="/jobs"' not in page.text  # no navigation before the login


def test_a_loopback_ui_without_a_password_needs_no_login(client: TestClient) -> None:
    assert client.get("/").status_code == 200
    assert client.get("/login").headers["location"] == "/"


def test_a_loopback_ui_of_a_cluster_with_tokens_asks_for_one(fake: FakeConnector) -> None:
    fake.cluster.accepted_tokens = {ADMIN}
    for ui in ui_client(fake, UIConfig(token_login=True)):
        assert ui.get("/").headers["location"] == "/login"
        assert ui.get("/api/jobs").status_code == 401
        assert not any(s.calls for s in fake.servers.values())
        assert '<label for="token">Server token</label>' in ui.get("/login").text
        assert log_in(ui, token=ADMIN).status_code == 303
        assert ui.get("/jobs").status_code == 200


def test_a_loopback_ui_with_a_password_asks_for_it(fake: FakeConnector) -> None:
    config = UIConfig(password=password_digest(PASSWORD))
    for ui in ui_client(fake, config):
        assert ui.get("/jobs").headers["location"] == "/login?next=%2Fjobs"
        assert log_in(ui, password=PASSWORD).status_code == 303
        assert ui.get("/jobs").status_code == 200


# --- the password -----------------------------------------------------------------------------


def test_the_password_logs_in_and_goes_back_where_you_were(exposed: TestClient, fake: FakeConnector) -> None:
    exposed.get("/login?next=%2Fjobs%3Fstatus%3DFAILED")
    r = exposed.post(
        "/login", data={"csrf": exposed.cookies["jobcluster_csrf"], "password": PASSWORD, "next": "/jobs?status=FAILED"}
    )
    assert r.status_code == 303 and r.headers["location"] == "/jobs?status=FAILED"
    cookie = r.headers["set-cookie"].lower()
    assert f"{SESSION_COOKIE}=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert "secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    assert f"max-age={int(TTL)}" in cookie
    page = exposed.get("/jobs")
    assert page.status_code == 200 and "Log out" in page.text and "the password" in page.text


def test_a_password_session_calls_with_the_uis_own_token(exposed: TestClient, fake: FakeConnector) -> None:
    log_in(exposed, password=PASSWORD)
    assert submit(exposed).status_code == 303
    assert fake.servers[A].tokens_for("SubmitJob") == [None]  # no metadata of ours: the pool's AUTH_TOKEN


def test_a_wrong_password_is_refused(exposed: TestClient, fake: FakeConnector) -> None:
    r = log_in(exposed, password=PASSWORD + "x")
    assert r.status_code == 401 and "Wrong password." in r.text
    assert SESSION_COOKIE not in exposed.cookies
    assert exposed.get("/jobs").status_code == 303


def test_an_empty_login_says_what_to_enter(exposed: TestClient) -> None:
    r = log_in(exposed)
    assert r.status_code == 400 and "Enter the password or a server token." in r.text


def test_the_login_form_needs_its_csrf_token(exposed: TestClient) -> None:
    exposed.get("/login")
    r = exposed.post("/login", data={"password": PASSWORD})
    assert r.status_code == 403 and SESSION_COOKIE not in exposed.cookies


def test_over_tls_the_session_cookie_is_secure(fake: FakeConnector) -> None:
    config = UIConfig(password=password_digest(PASSWORD), tls_cert="c.pem", tls_key="k.pem")
    for ui in ui_client(fake, config, base_url="https://127.0.0.1:8080"):
        assert "secure" in log_in(ui, password=PASSWORD).headers["set-cookie"].lower()


# --- failed logins per address ----------------------------------------------------------------


def test_too_many_failed_logins_make_the_address_wait(exposed: TestClient, clock: Clock) -> None:
    for _ in range(MAX_FAILURES):
        assert log_in(exposed, password="wrong password").status_code == 401
    r = log_in(exposed, password=PASSWORD)  # even the right one, while the address waits
    assert r.status_code == 429 and "Too many failed logins from testclient: try again in 60 s." in r.text
    assert SESSION_COOKIE not in exposed.cookies
    clock.now += 30
    assert log_in(exposed, password=PASSWORD).status_code == 429
    clock.now += 30
    assert log_in(exposed, password=PASSWORD).status_code == 303


def test_a_good_login_does_not_count_as_a_failure(exposed: TestClient) -> None:
    for _ in range(MAX_FAILURES + 2):
        assert log_in(exposed, password=PASSWORD).status_code == 303


PROXY = "192.0.2.50"
WRONG_PASSWORD = {"password": "wrong password"}


async def logins(
    app: Starlette, forwarded_for: list[str], fields: dict[str, str], peer: str = PROXY, at_once: bool = True
) -> list[tuple[int, str]]:
    """One POST of /login with ``fields`` per entry, from ``peer``, each with ``X-Forwarded-For: <entry>``
    (none for ""): all at once, or one after another; the status and page of each."""
    transport = httpx2.ASGITransport(app=app, client=(peer, 40000))
    async with httpx2.AsyncClient(transport=transport, base_url=URL) as client:
        await client.get("/login")
        form = {"csrf": client.cookies["jobcluster_csrf"], **fields}

        async def post(address: str) -> tuple[int, str]:
            r = await client.post("/login", data=form, headers={"X-Forwarded-For": address} if address else {})
            return r.status_code, r.text

        if at_once:
            return list(await asyncio.gather(*(post(a) for a in forwarded_for)))
        return [await post(a) for a in forwarded_for]


def statuses(answers: list[tuple[int, str]]) -> Counter[int]:
    return Counter(status for status, _ in answers)


@pytest.mark.parametrize("fields", [{"password": "wrong password"}, {"token": "t-guessed-" + "g" * 32}])
async def test_concurrent_wrong_logins_get_no_more_tries_than_one_after_another(
    fake: FakeConnector, clock: Clock, fields: dict[str, str]
) -> None:
    fake.cluster.accepted_tokens = {ADMIN}
    app = create_app(SERVERS, fake, EXPOSED, clock)
    answers = await logins(app, [""] * 30, fields)
    assert statuses(answers) == {401: MAX_FAILURES, 429: 30 - MAX_FAILURES}
    # Each try is counted before it is checked: only the counted ones reached the servers.
    asked = sum(len(s.tokens_for("GetClusterInfo")) for s in fake.servers.values())
    assert asked == (2 * MAX_FAILURES if "token" in fields else 0)  # a made-up token first, then this one


async def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(fake: FakeConnector, clock: Clock) -> None:
    spoofed = [f"10.9.0.{i}" for i in range(30)]
    answers = await logins(create_app(SERVERS, fake, EXPOSED, clock), spoofed, WRONG_PASSWORD)
    assert statuses(answers) == {401: MAX_FAILURES, 429: 30 - MAX_FAILURES}
    assert all(f"Too many failed logins from {PROXY}:" in page for status, page in answers if status == 429)

    behind_proxy = dataclasses.replace(EXPOSED, trusted_proxies=(f"{PROXY}/32",))
    app = create_app(SERVERS, fake, behind_proxy, clock)
    answers = await logins(app, spoofed, WRONG_PASSWORD)
    assert statuses(answers) == {401: 30}  # each forwarded client has its own count
    answers = await logins(app, ["10.9.0.1"] * 5 + ["198.51.100.7, 10.9.0.2"], WRONG_PASSWORD)
    assert statuses(answers[:5]) == {401: MAX_FAILURES - 1, 429: 1}
    assert "Too many failed logins from 10.9.0.1:" in next(page for status, page in answers if status == 429)
    assert answers[5][0] == 401  # the proxy's own entry (the last) is the client: 10.9.0.2, once


async def test_an_ipv6_client_is_counted_by_its_64(fake: FakeConnector, clock: Clock) -> None:
    app = create_app(SERVERS, fake, EXPOSED, clock)
    answers = [
        (await logins(app, [""], WRONG_PASSWORD, peer=f"2001:db8:0:1::{i}"))[0] for i in range(1, MAX_FAILURES + 2)
    ]
    assert statuses(answers) == {401: MAX_FAILURES, 429: 1}
    assert "Too many failed logins from 2001:db8:0:1::/64:" in answers[-1][1]


async def test_many_failures_from_many_addresses_slow_every_login_down_but_lock_nobody_out(
    fake: FakeConnector, clock: Clock
) -> None:
    app = create_app(SERVERS, fake, dataclasses.replace(EXPOSED, trusted_proxies=(f"{PROXY}/32",)), clock)
    waited: list[float] = []

    async def sleep(seconds: float) -> None:  # the slowdown's clock: noted, not slept
        waited.append(seconds)

    app.state.auth.sleep = sleep
    crowd = [f"10.8.{i // 200}.{i % 200}" for i in range(GLOBAL_FREE_FAILURES + 40)]
    answers = await logins(app, crowd, WRONG_PASSWORD, at_once=False)
    assert statuses(answers) == {401: len(crowd)}
    assert len(waited) == len(crowd) - GLOBAL_FREE_FAILURES and waited[0] == pytest.approx(0.1)
    assert waited == sorted(waited) and max(waited) == GLOBAL_MAX_DELAY
    waited.clear()
    [(status, _)] = await logins(app, ["203.0.113.9"], {"password": PASSWORD})
    assert status == 303 and waited == [GLOBAL_MAX_DELAY]  # slowed, never refused
    clock.now += sessions.FAILURE_WINDOW
    waited.clear()
    [(status, _)] = await logins(app, ["203.0.113.9"], {"password": PASSWORD})
    assert status == 303 and waited == []


def test_tries_being_checked_count_until_they_end(clock: Clock) -> None:
    failures = sessions.FailedLogins(clock, limit=2)
    assert failures.begin("a") == 0 and failures.begin("a") == 0
    with pytest.raises(sessions.TooManyFailures) as caught:
        failures.begin("a")  # two tries of "a" still being checked
    assert caught.value.wait == 60
    failures.end("a", failed=False)  # a good one, forgotten
    failures.begin("a")
    failures.end("a", failed=True)
    failures.end("a", failed=True)
    clock.now += 59
    assert failures.wait("a") == 1
    failures.begin("b")  # another address is not held back


# --- a server token ---------------------------------------------------------------------------


def test_a_token_logs_in_and_its_calls_carry_it(exposed: TestClient, fake: FakeConnector) -> None:
    r = log_in(exposed, token=ADMIN)
    assert r.status_code == 303 and r.headers["location"] == "/"
    # The check: a made-up token first (refused), then this one (accepted), on the same server.
    probe, checked = fake.servers[A].tokens_for("GetClusterInfo")
    assert probe is not None and probe.startswith("Bearer not-a-token-") and checked == f"Bearer {ADMIN}"
    assert submit(exposed).status_code == 303
    assert fake.servers[A].tokens_for("SubmitJob") == [f"Bearer {ADMIN}"]
    exposed.get("/jobs")
    exposed.get("/cluster")
    assert fake.servers[B].tokens_for("ListJobs") + fake.servers[A].tokens_for("ListJobs") == [f"Bearer {ADMIN}"]


def test_a_read_token_cannot_submit(exposed: TestClient, fake: FakeConnector) -> None:
    assert log_in(exposed, token=READER).status_code == 303
    r = submit(exposed)
    assert r.status_code == 403 and "role read may not call SubmitJob" in r.text
    assert exposed.get("/jobs").status_code == 200


def test_a_token_shorter_than_32_characters_is_refused_without_asking_the_servers(
    exposed: TestClient, fake: FakeConnector
) -> None:
    r = log_in(exposed, token="t" * 31)
    assert r.status_code == 401 and "The servers refused this token." in r.text
    assert not any(s.calls for s in fake.servers.values())


def test_a_wrong_token_is_refused_and_counted(exposed: TestClient, fake: FakeConnector) -> None:
    r = log_in(exposed, token="t-guessed")
    assert r.status_code == 401 and "The servers refused this token." in r.text
    for _ in range(MAX_FAILURES - 1):
        log_in(exposed, token="t-guessed")
    assert log_in(exposed, token=ADMIN).status_code == 429


@pytest.mark.parametrize("token", ["two words", "t-\u00e9t\u00e9", "t-\x01", "t" * 5000])
def test_a_token_that_cannot_be_metadata_is_refused_before_any_call(
    exposed: TestClient, fake: FakeConnector, token: str
) -> None:
    r = exposed.get("/api/jobs", headers={"Authorization": f"Bearer {token}".encode()})
    assert r.status_code == 401 and r.json() == {"error": "The servers refused this token."}
    assert not any(s.calls for s in fake.servers.values())


def test_a_token_proves_nothing_when_the_servers_check_none(exposed: TestClient, fake: FakeConnector) -> None:
    fake.cluster.accepted_tokens = None
    r = log_in(exposed, token="anything-at-all-" + "x" * 32)
    assert r.status_code == 401 and "accepted a made-up token" in r.text
    assert SESSION_COOKIE not in exposed.cookies


def test_a_token_cannot_be_checked_while_no_server_answers(exposed: TestClient, fake: FakeConnector) -> None:
    fake.down()
    r = log_in(exposed, token=ADMIN)
    assert r.status_code == 503 and "not answering" in r.text
    assert SESSION_COOKIE not in exposed.cookies


def test_a_ui_without_tokens_takes_none(fake: FakeConnector) -> None:
    config = UIConfig(host="192.0.2.10", names=frozenset({"jobs.example"}), password=password_digest(PASSWORD))
    for ui in ui_client(fake, config, base_url=URL):
        assert 'for="token"' not in ui.get("/login").text
        assert log_in(ui, token=ADMIN).status_code == 400
        r = ui.get("/api/jobs", headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 401 and "does not take server tokens" in r.json()["error"]


# --- the JSON API with a bearer token ---------------------------------------------------------


def test_the_api_takes_a_bearer_token_and_calls_with_it(exposed: TestClient, fake: FakeConnector) -> None:
    r = exposed.post("/api/jobs", json={"command": "echo api"}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 201
    assert fake.servers[A].tokens_for("SubmitJob") == [f"Bearer {ADMIN}"]
    r = exposed.get("/api/jobs", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200
    # Checked once, then trusted for a while: two GetClusterInfo calls (made-up token, this one) in all.
    assert len(fake.servers[A].tokens_for("GetClusterInfo") + fake.servers[B].tokens_for("GetClusterInfo")) == 2


def test_the_api_refuses_a_wrong_bearer_token(exposed: TestClient, fake: FakeConnector) -> None:
    r = exposed.post("/api/jobs", json={"command": "id"}, headers={"Authorization": "Bearer t-guessed"})
    assert r.status_code == 401 and r.json() == {"error": "The servers refused this token."}
    assert not fake.servers[A].asked("SubmitJob")
    for _ in range(MAX_FAILURES - 1):
        exposed.get("/api/jobs", headers={"Authorization": "Bearer t-guessed"})
    r = exposed.get("/api/jobs", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 429 and "Too many failed logins" in r.json()["error"]


def test_a_bearer_token_does_not_open_the_pages(exposed: TestClient) -> None:
    assert exposed.get("/jobs", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 303


# --- sessions: logout, expiry, a new id per login ---------------------------------------------


def test_logout_ends_the_session_for_good(exposed: TestClient, fake: FakeConnector) -> None:
    log_in(exposed, password=PASSWORD)
    old = exposed.cookies[SESSION_COOKIE]
    r = exposed.post("/logout", data={"csrf": exposed.cookies["jobcluster_csrf"]})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert SESSION_COOKIE not in exposed.cookies
    exposed.cookies.set(SESSION_COOKIE, old)  # replaying the old cookie does not help
    assert exposed.get("/jobs").status_code == 303


def test_a_session_expires(exposed: TestClient, clock: Clock) -> None:
    log_in(exposed, password=PASSWORD)
    clock.now += TTL - 1
    assert exposed.get("/jobs").status_code == 200
    clock.now += 1
    r = exposed.get("/jobs")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_each_login_is_a_new_session_and_ends_the_old(exposed: TestClient) -> None:
    log_in(exposed, password=PASSWORD)
    first = exposed.cookies[SESSION_COOKIE]
    log_in(exposed, password=PASSWORD)
    second = exposed.cookies[SESSION_COOKIE]
    assert first != second and len(second) >= 43  # 256 random bits
    exposed.cookies.clear()
    exposed.cookies.set(SESSION_COOKIE, first)
    assert exposed.get("/jobs").status_code == 303


def test_a_made_up_session_id_is_no_session(exposed: TestClient) -> None:
    exposed.cookies.set(SESSION_COOKIE, "x" * 43)
    assert exposed.get("/jobs").status_code == 303


@pytest.mark.parametrize(
    "target,expected",
    [
        ("/jobs?status=FAILED", "/jobs?status=FAILED"),
        ("", "/"),
        (None, "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("jobs", "/"),
    ],
)
def test_after_the_login_only_a_path_of_this_site(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


# --- bounded in memory ------------------------------------------------------------------------


def test_sessions_are_bounded_expired_first_then_oldest(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 3)
    store = sessions.Sessions(ttl=10, clock=clock)
    old = store.start("password")
    clock.now += 5
    kept = [store.start("password"), store.start("token", ADMIN)]
    clock.now += 6  # `old` has expired, the others have not
    newest = store.start("password")
    assert store.get(old.id) is None and all(store.get(s.id) for s in [*kept, newest])
    store.start("password")  # full of live sessions: the oldest goes
    assert store.get(kept[0].id) is None and store.get(kept[1].id) is not None


def test_failed_logins_are_bounded(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    monkeypatch.setattr(sessions, "MAX_TRACKED_ADDRESSES", 2)
    failures = sessions.FailedLogins(clock, limit=1)
    for address in ("a", "b", "c"):
        failures.failed(address)
    assert failures.wait("a") == 0 and failures.wait("c") == 60  # the oldest address was forgotten


# --- settings ---------------------------------------------------------------------------------


def test_a_short_auth_token_stops_the_ui_at_start() -> None:
    with pytest.raises(ConfigError, match=r"^AUTH_TOKEN: the token has 5 characters; a token needs at least 32 "):
        ui_config(Settings(auth_token="short"), "127.0.0.1:8080")
    assert ui_config(Settings(auth_token="s" * 32), "127.0.0.1:8080").token_login


def test_trusted_proxies_are_addresses_or_networks() -> None:
    assert ui_config(Settings(), "127.0.0.1:8080").trusted_proxies == ()
    settings = Settings.from_env({"WEBUI_TRUSTED_PROXIES": "10.0.0.5, 10.1.0.0/16,::1,[fd00::1]"})
    assert ui_config(settings, "127.0.0.1:8080").trusted_proxies == (
        "10.0.0.5/32",
        "10.1.0.0/16",
        "::1/128",
        "fd00::1/128",
    )
    with pytest.raises(ConfigError, match="WEBUI_TRUSTED_PROXIES: 'proxy.example' is not an address or a network"):
        ui_config(Settings(webui_trusted_proxies=("10.0.0.5", "proxy.example")), "127.0.0.1:8080")
    with pytest.raises(ConfigError, match="WEBUI_TRUSTED_PROXIES: '\\*' is not"):
        ui_config(Settings(webui_trusted_proxies=("*",)), "127.0.0.1:8080")
