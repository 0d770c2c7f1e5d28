"""Tokens, roles, refusal logging, audit lines, the exposure rule and the client's channel settings (no servers).

The real servers' answers (UNAUTHENTICATED, PERMISSION_DENIED, TLS) are in
tests/integration/test_auth.py and tests/e2e/test_auth.py.
"""

from __future__ import annotations

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
    RPC_ROLES, AuthConfigError, RefusalLog, Role, Token, Tokens, bearer, check_exposure, is_loopback,
    load_tokens, parse_tokens, peer_host, server_credentials,
)

JOB_SERVICE_RPCS = set(pb.DESCRIPTOR.services_by_name["JobService"].methods_by_name)
SECRET = "s3cret-token-value-0123456789"


# --- the RPC -> role table -----------------------------------------------------------------


def test_every_rpc_of_the_proto_has_a_role_and_the_table_names_no_other() -> None:
    assert set(RPC_ROLES) == JOB_SERVICE_RPCS, (
        f"missing from RPC_ROLES: {sorted(JOB_SERVICE_RPCS - set(RPC_ROLES))}; "
        f"not in the proto: {sorted(set(RPC_ROLES) - JOB_SERVICE_RPCS)}")


def test_roles_are_the_contract() -> None:
    by_role = {role: {rpc for rpc, r in RPC_ROLES.items() if r == role} for role in Role}
    assert by_role[Role.READ] == {"GetJobStatus", "ListJobs", "WatchJob", "ListDeadLetters", "ListSchedules",
                                  "GetClusterInfo", "GetStats"}
    assert by_role[Role.SUBMIT] == {"SubmitJob", "SubmitJobs", "CancelJob", "RunScheduleNow"}
    assert by_role[Role.ADMIN] == {"CreateSchedule", "DeleteSchedule", "PauseSchedule", "ResumeSchedule",
                                   "RetryDeadLetters", "PurgeDeadLetters"}
    assert Role.READ < Role.SUBMIT < Role.ADMIN


def test_every_rpc_that_changes_something_is_audited() -> None:
    assert set(audit.ACTIONS) == {rpc for rpc, role in RPC_ROLES.items() if role >= Role.SUBMIT}


# --- tokens --------------------------------------------------------------------------------


def test_a_tokens_file_with_comments_and_blank_lines() -> None:
    text = "# who may do what\n\nalpha-token admin alice\n  beta-token   read   dashboard  \n" \
           "gamma-token SUBMIT ci  # the CI pipeline\n   # indented comment\n"
    tokens = parse_tokens(text, "tokens.txt")
    assert tokens == [Token(b"alpha-token", Role.ADMIN, "alice"), Token(b"beta-token", Role.READ, "dashboard"),
                      Token(b"gamma-token", Role.SUBMIT, "ci")]


@pytest.mark.parametrize("text, error", [
    ("onlytoken admin\n", r"f line 1: expected `token role name`, got 2 field\(s\)"),
    ("tok1 admin a\ntok2 root b\n", r"f line 2: unknown role 'root'; roles are read, submit, admin"),
    ("tok1 admin a\n\ntok1 read b\n", r"f line 3: the same token as line 1; each token must be unique"),
    ("tök admin a\n", r"f line 1: a token must be printable ASCII without spaces"),
])
def test_a_bad_tokens_file_is_refused_by_line_without_showing_the_token(text: str, error: str) -> None:
    with pytest.raises(AuthConfigError, match=error) as caught:
        parse_tokens(text, "f")
    assert "tok1" not in str(caught.value)


def test_auth_token_is_one_admin_token_and_a_tokens_file_takes_precedence(tmp_path: Path) -> None:
    assert load_tokens(Settings()) == []
    assert load_tokens(Settings(auth_token=SECRET)) == [Token(SECRET.encode(), Role.ADMIN, "AUTH_TOKEN")]
    path = tmp_path / "tokens"
    path.write_text(f"{SECRET}x read viewer\n")
    path.chmod(0o600)
    assert load_tokens(Settings(auth_token=SECRET, auth_tokens_file=str(path))) == [
        Token(f"{SECRET}x".encode(), Role.READ, "viewer")]


def test_an_unusable_tokens_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="AUTH_TOKENS_FILE: cannot read .*missing"):
        load_tokens(Settings(auth_tokens_file=str(tmp_path / "missing")))
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n")
    with pytest.raises(AuthConfigError, match="holds no token"):
        load_tokens(Settings(auth_tokens_file=str(empty)))
    with pytest.raises(AuthConfigError, match="AUTH_TOKEN: a token must be printable ASCII"):
        load_tokens(Settings(auth_token="two words"))


def test_short_tokens_and_readable_files_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens"
    path.write_text("short read viewer\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, "auth"):
        load_tokens(Settings(auth_tokens_file=str(path)))
    assert "can be read by other users (mode 644): chmod 600 it" in caplog.text
    assert "the token of viewer is short (5 characters)" in caplog.text
    assert "short read" not in caplog.text


def test_a_token_is_found_only_when_equal() -> None:
    admin, reader = Token(b"admin-token", Role.ADMIN, "a"), Token(b"read-token", Role.READ, "r")
    tokens = Tokens([admin, reader])
    assert tokens.required and not Tokens([]).required
    assert tokens.find("admin-token") == admin
    assert tokens.find("read-token") == reader
    for wrong in ("", "admin", "admin-token2", "ADMIN-TOKEN", "read-token "):
        assert tokens.find(wrong) is None


@pytest.mark.parametrize("metadata, token", [
    ((("authorization", "Bearer abc"),), "abc"),
    ((("x-other", "1"), ("authorization", "bearer  abc ")), "abc"),
    ((("authorization", "Basic abc"),), None),
    ((("authorization", "Bearer "),), None),
    ((("authorization-bin", b"Bearer abc"),), None),
    ((), None),
    (None, None),
])
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
        logged = [refusals.refused(f"ipv4:10.0.0.1:{port}", "SubmitJob", code, "no token") for port in range(5000, 5010)]
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


@pytest.mark.parametrize("rpc, request_, reply, line", [
    ("SubmitJob", pb.Job(command="true"), pb.JobResponse(job_id=JOB), f"submitted by=ci peer=P rpc=SubmitJob job={JOB}"),
    ("SubmitJobs", pb.JobBatch(), pb.JobBatchResponse(jobs=[pb.JobResponse(job_id="a"), pb.JobResponse(job_id="b")]),
     "submitted by=ci peer=P rpc=SubmitJobs count=2 jobs=a,b"),
    ("CancelJob", pb.JobId(id=JOB), pb.JobStatus(id=JOB, status="CANCELLED"),
     f"cancelled by=ci peer=P rpc=CancelJob job={JOB} status=CANCELLED"),
    ("RetryDeadLetters", pb.DeadLettersRequest(all=True), pb.DeadLettersResult(count=1, ids=[JOB]),
     f"retried by=ci peer=P rpc=RetryDeadLetters count=1 jobs={JOB}"),
    ("PurgeDeadLetters", pb.DeadLettersRequest(all=True), pb.DeadLettersResult(count=7),
     "purged by=ci peer=P rpc=PurgeDeadLetters count=7 jobs=all"),
    ("PurgeDeadLetters", pb.DeadLettersRequest(ids=[JOB]), pb.DeadLettersResult(count=1, ids=[JOB]),
     f"purged by=ci peer=P rpc=PurgeDeadLetters count=1 jobs={JOB}"),
    ("CreateSchedule", pb.Schedule(), SCHEDULE,
     r"schedule created by=ci peer=P rpc=CreateSchedule schedule=sch-1 name='nightly\\nsubmitted by=forged'"),
    ("CreateSchedule", pb.Schedule(), pb.Schedule(id="s", name="n", created_at_ms=5, updated_at_ms=9),
     "schedule updated by=ci peer=P rpc=CreateSchedule schedule=s name='n'"),
    ("DeleteSchedule", pb.ScheduleRef(name="n"), pb.Schedule(id="s", name="n"),
     "schedule deleted by=ci peer=P rpc=DeleteSchedule schedule=s name='n'"),
    ("PauseSchedule", pb.ScheduleRef(name="n"), pb.Schedule(id="s", name="n"),
     "schedule paused by=ci peer=P rpc=PauseSchedule schedule=s name='n'"),
    ("ResumeSchedule", pb.ScheduleRef(name="n"), pb.Schedule(id="s", name="n"),
     "schedule resumed by=ci peer=P rpc=ResumeSchedule schedule=s name='n'"),
    ("RunScheduleNow", pb.ScheduleRef(name="n"), pb.JobResponse(job_id=JOB),
     f"schedule run by=ci peer=P rpc=RunScheduleNow schedule='n' job={JOB}"),
])
def test_each_change_is_one_audit_line(rpc: str, request_: object, reply: object, line: str,
                                       caplog: pytest.LogCaptureFixture) -> None:
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
    for tokens, tls, missing in (([], False, "a token (AUTH_TOKEN or AUTH_TOKENS_FILE) and TLS (TLS_CERT and TLS_KEY)"),
                                 (token, False, "missing: TLS (TLS_CERT and TLS_KEY)"),
                                 ([], True, "missing: a token (AUTH_TOKEN or AUTH_TOKENS_FILE)")):
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
