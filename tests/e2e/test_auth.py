"""Tokens and TLS through the real programs: server subprocesses, ``python -m client``, and
``make start TLS=1``'s own code (``python -m devtools.cluster start --tls``).
"""

from __future__ import annotations

import json
import re
import ssl
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from devtools.services import free_port
from jobcluster.channels import ChannelSecurity, open_channel
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from tests.e2e.conftest import Cluster, serving

ADMIN, SUBMITTER, READER = (
    "admin-e2e-token-0123456789abcdef",
    "submit-e2e-token-0123456789abcdef",
    "read-e2e-token-0123456789abcdef-dashboard",
)
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CHECKOUT = Path(__file__).resolve().parents[2]


def rpc(address: str, method: str, request: object, security: ChannelSecurity = ChannelSecurity()) -> grpc.StatusCode:
    """The status code one call ends with."""
    with open_channel(address, security) as channel:
        try:
            getattr(pb_grpc.JobServiceStub(channel), method)(request, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_a_server_with_tokens_refuses_callers_without_one_and_the_client_uses_auth_token(cluster: Cluster) -> None:
    tokens = cluster.workdir / "tokens"
    tokens.write_text(f"# e2e\n{ADMIN} admin alice\n{SUBMITTER} submit ci\n{READER} read dashboard\n")
    tokens.chmod(0o600)
    server, address = cluster.server(AUTH_TOKENS_FILE=str(tokens))  # ready: health answers without a token
    cluster.worker("auth-1")
    job = pb.Job(command="true")
    assert rpc(address, "SubmitJob", job) == grpc.StatusCode.UNAUTHENTICATED
    assert rpc(address, "SubmitJob", job, ChannelSecurity("not-a-token")) == grpc.StatusCode.UNAUTHENTICATED
    assert rpc(address, "SubmitJob", job, ChannelSecurity(READER)) == grpc.StatusCode.PERMISSION_DENIED
    assert rpc(address, "ListJobs", pb.ListJobsRequest(), ChannelSecurity(READER)) == grpc.StatusCode.OK
    assert rpc(address, "SubmitJob", job, ChannelSecurity(SUBMITTER)) == grpc.StatusCode.OK

    ran = cluster.client("-cmd", "echo from the environment", "-servers", address, AUTH_TOKEN=SUBMITTER)
    assert ran.returncode == 0, ran.stderr
    assert "from the environment" in ran.stdout and "SUCCEEDED" in ran.stdout

    (cluster.workdir / ".env").write_text(f"AUTH_TOKEN={SUBMITTER}\n")
    ran = cluster.client("-cmd", "echo from dotenv", "-servers", address)
    assert ran.returncode == 0, ran.stderr
    (cluster.workdir / ".env").unlink()

    refused = cluster.client("-cmd", "true", "-servers", address)
    assert refused.returncode == 2
    assert "error: UNAUTHENTICATED: no token" in refused.stderr
    assert "hint: set AUTH_TOKEN (in the environment or .env) to a token the servers accept" in refused.stderr
    weak = cluster.client("-cmd", "true", "-servers", address, AUTH_TOKEN=READER)
    assert weak.returncode == 2 and "PERMISSION_DENIED: the token of dashboard has role read" in weak.stderr

    log = server.log()
    refusals = re.findall(r"refused \w+ from ipv4:127\.0\.0\.1:\d+", log)
    assert len(refusals) == 1, log  # six refused calls from 127.0.0.1 within a minute: one line
    audited = re.findall(rf"audit: submitted by=ci peer=ipv4:127\.0\.0\.1:\d+ rpc=SubmitJob job={UUID}", log)
    assert len(audited) == 3, log  # the call above and the client's two
    for token in (ADMIN, SUBMITTER, READER):
        assert token not in log


@pytest.mark.parametrize(
    "extra, missing",
    [
        ({}, "missing: a token (AUTH_TOKEN or AUTH_TOKENS_FILE) and TLS (TLS_CERT and TLS_KEY)"),
        ({"AUTH_TOKEN": ADMIN}, "missing: TLS (TLS_CERT and TLS_KEY)"),
    ],
)
def test_a_server_off_loopback_without_a_token_and_tls_refuses_to_start(
    cluster: Cluster, extra: dict[str, str], missing: str
) -> None:
    server, _ = cluster.server(wait_ready=False, SERVER_HOST="0.0.0.0", **extra)
    assert server.wait(timeout=30) == 1
    log = server.log()
    assert "cannot start: refusing to listen on SERVER_HOST=0.0.0.0" in log and missing in log, log
    assert "listening on" not in log


def test_a_malformed_tokens_file_stops_the_server(cluster: Cluster) -> None:
    tokens = cluster.workdir / "tokens"
    tokens.write_text(f"{ADMIN} admin alice\n{ADMIN} read bob\n")
    server, _ = cluster.server(wait_ready=False, AUTH_TOKENS_FILE=str(tokens))
    assert server.wait(timeout=30) == 1
    assert f"AUTH_TOKENS_FILE {tokens} line 2: the same token as line 1" in server.log()


def test_a_short_token_stops_the_server(cluster: Cluster) -> None:
    server, _ = cluster.server(wait_ready=False, AUTH_TOKEN="only-31-characters-long-0123456")
    assert server.wait(timeout=30) == 1
    log = server.log()
    assert "cannot start: AUTH_TOKEN: the token has 31 characters; a token needs at least 32" in log, log
    assert "only-31-characters" not in log


@pytest.fixture
def started(cluster: Cluster) -> Iterator[tuple[Path, dict[str, str]]]:
    """A directory to run ``make start``'s code in, and its environment; whatever it starts is stopped."""
    root = cluster.workdir / "checkout"
    root.mkdir()
    env = cluster.env(AUTH_TOKEN=ADMIN, WEBUI_ADDR=f"127.0.0.1:{free_port()}")
    # devtools is not installed (it is no part of the wheel): run from another directory, it needs the
    # checkout on the path, as make gives it by running from the checkout
    env["PYTHONPATH"] = str(CHECKOUT)
    try:
        yield root, env
    finally:
        subprocess.run(
            [sys.executable, "-m", "devtools.cluster", "stop"], cwd=root, env=env, capture_output=True, timeout=120
        )


def devtool(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtools.cluster", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_make_start_tls_runs_a_job_end_to_end_over_tls(
    started: tuple[Path, dict[str, str]], cluster: Cluster, tmp_path: Path
) -> None:
    root, env = started
    port = free_port()
    start = devtool(root, env, "start", "--servers", "1", "--workers", "1", "--base-port", str(port), "--tls")
    assert start.returncode == 0, start.stdout + start.stderr
    address = f"127.0.0.1:{port}"
    ca = root / ".run" / "tls" / "ca.pem"
    assert f"export TLS_CA={ca}" in start.stdout
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((root / ".run" / "tls" / key).stat().st_mode) == 0o600
    assert not serving(address)  # a plaintext health check gets nothing from a TLS server

    # The client finds make start's CA for the servers in .servers; AUTH_TOKEN comes from the environment.
    ran = subprocess.run(
        [sys.executable, "-m", "client", "-cmd", "echo over tls"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "over tls" in ran.stdout and "SUCCEEDED" in ran.stdout

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    plain = subprocess.run(
        [sys.executable, "-m", "client", "-cmd", "true", "-servers", address],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert plain.returncode == 3
    assert "no server answered" in plain.stderr and "hint: if the servers use TLS, set TLS_CA" in plain.stderr
    with_ca = subprocess.run(
        [sys.executable, "-m", "client", "-list", "-servers", address],
        cwd=elsewhere,
        env={**env, "TLS_CA": str(ca)},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert with_ca.returncode == 0, with_ca.stderr

    status = devtool(root, env, "status")
    assert f"{address:<14} serving" in status.stdout, status.stdout
    ui = re.search(r"web UI: (https?://\S+)", start.stdout)
    assert ui, start.stdout
    # The web UI serves HTTPS with the servers' certificate, and calls them over TLS with AUTH_TOKEN.
    # With tokens in use it asks for one even on loopback (else it would lend its own to every local user).
    request = urllib.request.Request(f"{ui.group(1)}/api/jobs", headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(ca)), timeout=10) as reply:
        jobs = json.load(reply)["jobs"]
    assert any(j["command"] == "echo over tls" for j in jobs), jobs

    switched = devtool(root, env, "start", "--servers", "1", "--workers", "0", "--base-port", str(port))
    assert switched.returncode != 0 and "run with TLS; to start without it, make stop first" in switched.stderr
