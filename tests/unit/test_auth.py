"""Tokens, roles, refusal logging, audit lines, the exposure rule and the client's channel settings (no servers).

The real servers' answers (UNAUTHENTICATED, PERMISSION_DENIED, TLS) are in
tests/integration/test_auth.py and tests/e2e/test_auth.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import grpc
import pytest

from jobcluster.channels import ChannelSecurity, SecurityError
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.settings import ConfigError, Settings
from scheduler_server import audit
from scheduler_server.auth import (
    Crowded,
    RefusalLog,
    WrongTokens,
    check_exposure,
    is_loopback,
    peer_host,
    server_credentials,
)
from scheduler_server.tokens import RPC_ROLES, AuthConfigError, Role, Token, Tokens, bearer, load_tokens, parse_tokens

JOB_SERVICE_RPCS = set(pb.DESCRIPTOR.services_by_name["JobService"].methods_by_name)
SECRET = "s3cret-token-value-0123456789abcdef"
#: 32 characters and more, as every token must have.
ALPHA, BETA, GAMMA = "alpha-token-" + "a" * 20, "beta-token-" + "b" * 21, "gamma-token-" + "c" * 20


# --- the RPC -> role table -----------------------------------------------------------------


def test_every_rpc_of_the_proto_has_a_role_and_the_table_names_no_other() -> None:
    assert set(RPC_ROLES) == JOB_SERVICE_RPCS, (
        f"missing from RPC_ROLES: {sorted(JOB_SERVICE_RPCS - set(RPC_ROLES))}; "
        f"not in the proto: {sorted(set(RPC_ROLES) - JOB_SERVICE_RPCS)}"
    )


def test_roles_are_the_contract() -> None:
    by_role = {role: {rpc for rpc, r in RPC_ROLES.items() if r == role} for role in Role}
    assert by_role[Role.READ] == {
        "GetJobStatus",
        "ListJobs",
        "WatchJob",
        "ListDeadLetters",
        "ListSchedules",
        "GetClusterInfo",
        "GetStats",
    }
    assert by_role[Role.SUBMIT] == {"SubmitJob", "SubmitJobs", "CancelJob", "RunScheduleNow"}
    assert by_role[Role.ADMIN] == {
        "CreateSchedule",
        "DeleteSchedule",
        "PauseSchedule",
        "ResumeSchedule",
        "RetryDeadLetters",
        "PurgeDeadLetters",
    }
    assert Role.READ < Role.SUBMIT < Role.ADMIN


def test_every_rpc_that_changes_something_is_audited() -> None:
    assert set(audit.ACTIONS) == {rpc for rpc, role in RPC_ROLES.items() if role >= Role.SUBMIT}


# --- tokens --------------------------------------------------------------------------------


def test_a_tokens_file_with_comments_and_blank_lines() -> None:
    text = (
        f"# who may do what\n\n{ALPHA} admin alice\n  {BETA}   read   dashboard  \n"
        f"{GAMMA} SUBMIT ci  # the CI pipeline\n   # indented comment\n"
    )
    tokens = parse_tokens(text, "tokens.txt")
    assert tokens == [
        Token(ALPHA.encode(), Role.ADMIN, "alice"),
        Token(BETA.encode(), Role.READ, "dashboard"),
        Token(GAMMA.encode(), Role.SUBMIT, "ci"),
    ]


@pytest.mark.parametrize(
    "text, error",
    [
        ("onlytoken admin\n", r"f line 1: expected `token role name`, got 2 field\(s\)"),
        (f"{ALPHA} admin a\n{BETA} root b\n", r"f line 2: unknown role 'root'; roles are read, submit, admin"),
        (f"{ALPHA} admin a\n\n{ALPHA} read b\n", r"f line 3: the same token as line 1; each token must be unique"),
        ("tök" + "k" * 32 + " admin a\n", r"f line 1: a token must be printable ASCII without spaces"),
        (
            f"{ALPHA} admin a\n{'s' * 31} read b\n",
            r"f line 2: the token has 31 characters; a token needs at least 32 "
            r"\(make one with `openssl rand -hex 32`\)",
        ),
        ("not-a-token-" + "x" * 32 + " read b\n", r"f line 1: a token may not start with 'not-a-token-'"),
    ],
)
def test_a_bad_tokens_file_is_refused_by_line_without_showing_the_token(text: str, error: str) -> None:
    with pytest.raises(AuthConfigError, match=error) as caught:
        parse_tokens(text, "f")
    assert ALPHA not in str(caught.value) and "s" * 31 not in str(caught.value)


def test_auth_token_is_one_admin_token_and_a_tokens_file_takes_precedence(tmp_path: Path) -> None:
    assert load_tokens(Settings()) == []
    assert load_tokens(Settings(auth_token=SECRET)) == [Token(SECRET.encode(), Role.ADMIN, "AUTH_TOKEN")]
    path = tmp_path / "tokens"
    path.write_text(f"{SECRET}x read viewer\n")
    path.chmod(0o600)
    assert load_tokens(Settings(auth_token=SECRET, auth_tokens_file=str(path))) == [
        Token(f"{SECRET}x".encode(), Role.READ, "viewer")
    ]


def test_an_unusable_tokens_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="AUTH_TOKENS_FILE: cannot read .*missing"):
        load_tokens(Settings(auth_tokens_file=str(tmp_path / "missing")))
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n")
    with pytest.raises(AuthConfigError, match="holds no token"):
        load_tokens(Settings(auth_tokens_file=str(empty)))
    with pytest.raises(AuthConfigError, match="AUTH_TOKEN: a token must be printable ASCII"):
        load_tokens(Settings(auth_token="two words"))


def test_a_short_token_stops_the_server_naming_the_setting_or_line_and_the_minimum(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match=r"^AUTH_TOKEN: the token has 5 characters; a token needs at least 32"):
        load_tokens(Settings(auth_token="short"))
    path = tmp_path / "tokens"
    path.write_text(f"# admins\n{ALPHA} admin alice\nshort read viewer\n")
    path.chmod(0o600)
    with pytest.raises(
        AuthConfigError,
        match=rf"^AUTH_TOKENS_FILE {path} line 3: the token has 5 characters; "
        "a token needs at least 32",
    ):
        load_tokens(Settings(auth_tokens_file=str(path)))
    assert load_tokens(Settings(auth_token="t" * 32)) == [Token(b"t" * 32, Role.ADMIN, "AUTH_TOKEN")]


def test_a_readable_tokens_file_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{BETA} read viewer\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, "auth"):
        load_tokens(Settings(auth_tokens_file=str(path)))
    assert "can be read by other users (mode 644): chmod 600 it" in caplog.text
    assert BETA not in caplog.text


def test_a_token_is_found_only_when_equal() -> None:
    admin, reader = Token(b"admin-token", Role.ADMIN, "a"), Token(b"read-token", Role.READ, "r")
    tokens = Tokens([admin, reader])
    assert tokens.required and not Tokens([]).required
    assert tokens.find("admin-token") == admin
    assert tokens.find("read-token") == reader
    for wrong in ("", "admin", "admin-token2", "ADMIN-TOKEN", "read-token "):
        assert tokens.find(wrong) is None
    assert Tokens([Token(b"not-a-token-x", Role.ADMIN, "a")]).find("not-a-token-x") is None  # a probe, always


@pytest.mark.parametrize(
    "metadata, token",
    [
        ((("authorization", "Bearer abc"),), "abc"),
        ((("x-other", "1"), ("authorization", "bearer  abc ")), "abc"),
        ((("authorization", "Basic abc"),), None),
        ((("authorization", "Bearer "),), None),
        ((("authorization-bin", b"Bearer abc"),), None),
        ((), None),
        (None, None),
    ],
)
def test_the_bearer_token_of_the_metadata(metadata: tuple[tuple[str, object], ...] | None, token: str | None) -> None:
    assert bearer(metadata) == token  # type: ignore[arg-type]


# --- refused calls are logged once per peer per minute -------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refused_calls_are_logged_once_per_peer_per_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    refusals = RefusalLog(clock=clock)
    code = grpc.StatusCode.UNAUTHENTICATED
    with caplog.at_level(logging.WARNING, "auth"):
        logged = [
            refusals.refused(f"ipv4:10.0.0.1:{port}", "SubmitJob", code, "no token") for port in range(5000, 5010)
        ]
        assert logged == [True] + [False] * 9  # new connections (ports) of one host count as one peer
        assert refusals.refused("ipv6:[::1]:6000", "ListJobs", code, "no token")  # another peer: its own line
        clock.now += 59.9
        assert not refusals.refused("ipv4:10.0.0.1:5011", "SubmitJob", code, "no token")
        clock.now += 0.1
        assert refusals.refused("ipv4:10.0.0.1:5012", "SubmitJob", code, "no token")
    lines = [r.getMessage() for r in caplog.records if r.name == "auth"]
    assert lines == [
        "refused SubmitJob from ipv4:10.0.0.1:5000: UNAUTHENTICATED no token",
        "refused ListJobs from ipv6:[::1]:6000: UNAUTHENTICATED no token",
        "refused SubmitJob from ipv4:10.0.0.1:5012: UNAUTHENTICATED no token "
        "(and 10 more refused call(s) from this peer since the last such line)",
    ]


def test_the_refusal_log_forgets_peers_so_memory_stays_bounded() -> None:
    clock = Clock()
    refusals = RefusalLog(clock=clock)
    refusals.MAX_PEERS = 100
    for i in range(1000):
        refusals.refused(f"ipv4:10.0.{i // 250}.{i % 250}:1", "ListJobs", grpc.StatusCode.UNAUTHENTICATED, "x")
        assert len(refusals._peers) <= 100


def test_peer_host() -> None:
    assert peer_host("ipv4:127.0.0.1:5555") == "ipv4:127.0.0.1"
    assert peer_host("ipv6:[::1]:5555") == "ipv6:[::1]"
    assert peer_host("unix:/tmp/sock") == "unix:/tmp/sock"


# --- the audit line of each change ---------------------------------------------------------

JOB = "0b6f3c52-7d2e-4a7a-9a4e-1c2d3e4f5a6b"
SCHEDULE = pb.Schedule(id="sch-1", name="nightly\nsubmitted by=forged", created_at_ms=5, updated_at_ms=5)


@pytest.mark.parametrize(
    "rpc, request_, reply, line",
    [
        (
            "SubmitJob",
            pb.Job(command="true"),
            pb.JobResponse(job_id=JOB),
            f"submitted by=ci peer=P rpc=SubmitJob job={JOB}",
        ),
        (
            "SubmitJobs",
            pb.JobBatch(),
            pb.JobBatchResponse(jobs=[pb.JobResponse(job_id="a"), pb.JobResponse(job_id="b")]),
            "submitted by=ci peer=P rpc=SubmitJobs count=2 jobs=a,b",
        ),
        (
            "CancelJob",
            pb.JobId(id=JOB),
            pb.JobStatus(id=JOB, status="CANCELLED"),
            f"cancelled by=ci peer=P rpc=CancelJob job={JOB} status=CANCELLED",
        ),
        (
            "RetryDeadLetters",
            pb.DeadLettersRequest(all=True),
            pb.DeadLettersResult(count=1, ids=[JOB]),
            f"retried by=ci peer=P rpc=RetryDeadLetters count=1 jobs={JOB}",
        ),
        (
            "PurgeDeadLetters",
            pb.DeadLettersRequest(all=True),
            pb.DeadLettersResult(count=7),
            "purged by=ci peer=P rpc=PurgeDeadLetters count=7 jobs=all",
        ),
        (
            "PurgeDeadLetters",
            pb.DeadLettersRequest(ids=[JOB]),
            pb.DeadLettersResult(count=1, ids=[JOB]),
            f"purged by=ci peer=P rpc=PurgeDeadLetters count=1 jobs={JOB}",
        ),
        (
            "CreateSchedule",
            pb.Schedule(),
            SCHEDULE,
            r"schedule created by=ci peer=P rpc=CreateSchedule schedule=sch-1 name='nightly\\nsubmitted by=forged'",
        ),
        (
            "CreateSchedule",
            pb.Schedule(),
            pb.Schedule(id="s", name="n", created_at_ms=5, updated_at_ms=9),
            "schedule updated by=ci peer=P rpc=CreateSchedule schedule=s name='n'",
        ),
        (
            "DeleteSchedule",
            pb.ScheduleRef(name="n"),
            pb.Schedule(id="s", name="n"),
            "schedule deleted by=ci peer=P rpc=DeleteSchedule schedule=s name='n'",
        ),
        (
            "PauseSchedule",
            pb.ScheduleRef(name="n"),
            pb.Schedule(id="s", name="n"),
            "schedule paused by=ci peer=P rpc=PauseSchedule schedule=s name='n'",
        ),
        (
            "ResumeSchedule",
            pb.ScheduleRef(name="n"),
            pb.Schedule(id="s", name="n"),
            "schedule resumed by=ci peer=P rpc=ResumeSchedule schedule=s name='n'",
        ),
        (
            "RunScheduleNow",
            pb.ScheduleRef(name="n"),
            pb.JobResponse(job_id=JOB),
            f"schedule run by=ci peer=P rpc=RunScheduleNow schedule='n' job={JOB}",
        ),
    ],
)
def test_each_change_is_one_audit_line(
    rpc: str, request_: object, reply: object, line: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "audit"):
        audit.record(rpc, "ci", "P", request_, reply)
    [record] = [r for r in caplog.records if r.name == "audit"]
    assert record.getMessage() == line
    assert "\n" not in record.getMessage()
    assert (record.token_name, record.rpc, record.peer) == ("ci", rpc, "P")  # type: ignore[attr-defined]


# --- a server off loopback needs a token and TLS -------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)
    check_exposure(host, [], tls=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "myhost", "[::]"])
def test_a_server_off_loopback_needs_a_token_and_tls(host: str) -> None:
    token = [Token(b"t" * 32, Role.ADMIN, "AUTH_TOKEN")]
    assert not is_loopback(host)
    for tokens, tls, missing in (
        ([], False, "a token (AUTH_TOKEN or AUTH_TOKENS_FILE) and TLS (TLS_CERT and TLS_KEY)"),
        (token, False, "missing: TLS (TLS_CERT and TLS_KEY)"),
        ([], True, "missing: a token (AUTH_TOKEN or AUTH_TOKENS_FILE)"),
    ):
        with pytest.raises(AuthConfigError) as caught:
            check_exposure(host, tokens, tls=tls)
        message = str(caught.value)
        assert f"refusing to listen on SERVER_HOST={host}" in message and missing in message
        for setting in ("SERVER_HOST", "AUTH_TOKEN", "AUTH_TOKENS_FILE", "TLS_CERT", "TLS_KEY"):
            assert setting in message
    check_exposure(host, token, tls=True)


def test_server_tls_files_that_cannot_be_used_are_named(tmp_path: Path) -> None:
    assert server_credentials(Settings()) is None
    with pytest.raises(AuthConfigError, match="TLS_CERT: cannot read .*nope.pem: No such file"):
        server_credentials(Settings(tls_cert=str(tmp_path / "nope.pem"), tls_key=str(tmp_path / "k")))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(AuthConfigError, match="TLS_CERT: .*junk.pem is not a PEM file"):
        server_credentials(Settings(tls_cert=str(junk), tls_key=str(junk)))


def test_tls_settings_that_go_together() -> None:
    with pytest.raises(ConfigError, match="TLS_CERT and TLS_KEY go together"):
        Settings.from_env({"TLS_CERT": "/c.pem"})
    with pytest.raises(ConfigError, match="TLS_CLIENT_CERT and TLS_CLIENT_KEY go together"):
        Settings.from_env({"TLS_CLIENT_KEY": "/k.pem"})
    with pytest.raises(ConfigError, match="TLS_CLIENT_CA .* needs TLS_CERT and TLS_KEY"):
        Settings.from_env({"TLS_CLIENT_CA": "/ca.pem"})


def test_the_token_is_not_in_the_settings_repr() -> None:
    s = Settings(auth_token=SECRET)
    assert SECRET not in repr(s) and s.auth_token == SECRET
    assert "auth_token" in [f.name for f in dataclasses.fields(Settings) if not f.repr]


# --- the client's channel settings ---------------------------------------------------------


def test_client_security_from_the_environment() -> None:
    env = {"AUTH_TOKEN": f" {SECRET} ", "TLS_CA": "/ca.pem", "TLS_CLIENT_CERT": "", "OTHER": "x"}
    security = ChannelSecurity.from_env(env)
    assert security == ChannelSecurity(SECRET, "/ca.pem", "", "")
    assert security.tls and not ChannelSecurity().tls
    assert SECRET not in repr(security)
    assert ChannelSecurity.from_settings(Settings(auth_token=SECRET, tls_ca="/ca.pem")) == security


def test_client_security_that_cannot_be_used_is_named(tmp_path: Path) -> None:
    assert ChannelSecurity(SECRET).credentials() is None
    with pytest.raises(SecurityError, match="AUTH_TOKEN must be printable ASCII without spaces"):
        ChannelSecurity("two words").credentials()
    with pytest.raises(SecurityError, match="TLS_CA: cannot read .*missing.pem: No such file"):
        ChannelSecurity(ca_file=str(tmp_path / "missing.pem")).credentials()
    with pytest.raises(SecurityError, match="TLS_CLIENT_CERT and TLS_CLIENT_KEY go together"):
        ChannelSecurity(ca_file="/ca.pem", cert_file="/c.pem").credentials()
    with pytest.raises(SecurityError, match="TLS_CLIENT_CERT is set but TLS_CA is not"):
        ChannelSecurity(cert_file="/c.pem", key_file="/k.pem").credentials()


def test_the_client_uses_make_starts_ca_only_for_the_servers_make_start_started(tmp_path: Path) -> None:
    servers_file, ca = tmp_path / ".servers", tmp_path / "ca.pem"
    servers_file.write_text("127.0.0.1:50051\n127.0.0.1:50052\n")
    plain = ChannelSecurity(SECRET)

    def found(servers: list[str], security: ChannelSecurity = plain) -> str:
        return security.for_servers(servers, servers_file, ca).ca_file

    assert found(["127.0.0.1:50051"]) == ""  # make start without TLS=1: no CA file
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert found(["127.0.0.1:50051", "127.0.0.1:50052"]) == str(ca.resolve())
    assert found(["127.0.0.1:50051", "10.0.0.1:50051"]) == ""  # a server make start did not start
    assert found([]) == ""
    assert found(["127.0.0.1:50051"], ChannelSecurity(SECRET, "/mine.pem")) == "/mine.pem"  # TLS_CA wins
    servers_file.unlink()
    assert found(["127.0.0.1:50051"]) == ""


# --- wrong tokens slow their peer host down --------------------------------------------------


def test_wrong_tokens_wait_longer_and_longer_per_host_and_are_forgiven_in_time() -> None:
    clock = Clock()
    wrong = WrongTokens(clock=clock)
    delays = [wrong.failed("ipv4:10.0.0.1") for _ in range(13)]
    assert delays == [0.0] * WrongTokens.FREE + [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    assert wrong.failed("ipv4:10.0.0.2") == 0.0  # another host: its own count
    # The count stops where the longest delay starts (FREE + 6), so a host comes back soon after it stops:
    # five forgiven, this one is the second beyond the free ones again.
    clock.now += 5 * WrongTokens.FORGIVE
    assert wrong.failed("ipv4:10.0.0.1") == 0.2
    clock.now += 60
    assert [wrong.failed("ipv4:10.0.0.1") for _ in range(WrongTokens.FREE + 1)] == [0.0] * WrongTokens.FREE + [0.1]


class QuickWrongTokens(WrongTokens):
    """Every wrong token waits 50 ms; two calls may wait in line."""

    FREE = 0
    FIRST_DELAY = MAX_DELAY = 0.05
    QUEUE = 2


async def test_a_hosts_calls_wait_their_turn_behind_its_wrong_tokens_and_other_hosts_do_not() -> None:
    wrong = QuickWrongTokens()
    answered: list[str] = []

    async def call(name: str, host: str, is_wrong: bool) -> None:
        await wrong.wait_turn(host, is_wrong)
        answered.append(name)

    first = asyncio.create_task(call("wrong 1", "h", True))
    await asyncio.sleep(0)  # it holds the line
    assert wrong.busy
    behind = [asyncio.create_task(call(n, "h", w)) for n, w in (("right", False), ("wrong 2", True))]
    await asyncio.sleep(0)
    with pytest.raises(Crowded):
        await wrong.wait_turn("h", False)  # one holding, two waiting: full, even for a right token
    await call("other host", "g", False)
    assert answered == ["other host"]
    await asyncio.gather(first, *behind)
    assert answered == ["other host", "wrong 1", "right", "wrong 2"]
    assert not wrong.busy


async def test_a_call_that_gives_up_leaves_the_line() -> None:
    wrong = QuickWrongTokens()
    holder = asyncio.create_task(wrong.wait_turn("h", True))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(wrong.wait_turn("h", True))
    await asyncio.sleep(0)
    waiter.cancel()
    holder.cancel()
    await asyncio.gather(holder, waiter, return_exceptions=True)
    assert not wrong.busy
    await asyncio.wait_for(wrong.wait_turn("h", False), timeout=1)  # nobody left to wait for
