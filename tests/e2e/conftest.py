"""The real programs as subprocesses: ``python -m scheduler_server``, ``worker``, ``client``.

Each test gets a :class:`Cluster` whose processes run in the test's temporary
directory (so no ``.env`` or ``.servers`` of the checkout is read) with the
test session's Redis and PostgreSQL. Whatever a test starts is killed at its end.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devtools.services import free_port
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from jobcluster.settings import Settings
from jobcluster.store import Store
from tests.conftest import settings_env
from tests.helpers import wait_for_sync


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout}s; log:\n{self.log()[-3000:]}") from None


@dataclass
class Cluster:
    settings: Settings
    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return settings_env(self.settings, **extra)

    def _spawn(self, name: str, args: list[str], **env: str) -> Proc:
        log_path = self.workdir / f"{name}.log"
        out = open(log_path, "w")
        popen = subprocess.Popen(
            [sys.executable, *args],
            cwd=self.workdir,
            env=self.env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def server(self, port: int | None = None, wait_ready: bool = True, **env: str) -> tuple[Proc, str]:
        port = port or free_port()
        proc = self._spawn(f"server-{port}", ["-m", "scheduler_server", "--port", str(port)], **env)
        address = f"127.0.0.1:{port}"
        if wait_ready:
            wait_for_sync(
                lambda: proc.popen.poll() is not None or serving(address), timeout=30, what=f"server {address} SERVING"
            )
            assert proc.popen.poll() is None, proc.log()
        return proc, address

    def worker(self, worker_id: str, *args: str, **env: str) -> Proc:
        return self._spawn(f"worker-{worker_id}", ["-m", "worker", "--id", worker_id, *args], **env)

    def client(self, *args: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "client", *args],
            cwd=self.workdir,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def jobs_file(self, content: object, name: str = "jobs.json") -> Path:
        path = self.workdir / name
        path.write_text(json.dumps(content, indent=2))
        return path

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.signal(signal.SIGKILL)
            proc.popen.wait()


def serving(address: str) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def job_status(address: str, job_id: str) -> pb.JobStatus:
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.JobServiceStub(channel).GetJobStatus(pb.JobId(id=job_id), timeout=5)


def submit(address: str, **fields) -> str:
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.JobServiceStub(channel).SubmitJob(pb.Job(**fields), timeout=5).job_id


@pytest.fixture
async def clean_state(store: Store, queue) -> None:
    """Empty jobs table and Redis (the store and queue fixtures do it)."""


@pytest.fixture
def cluster(settings: Settings, clean_state, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(settings, tmp_path)
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture
def redis_sync(settings: Settings) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(
        f"redis://{settings.redis_addr}" if "://" not in settings.redis_addr else settings.redis_addr,
        decode_responses=True,
    )
    yield r
    r.close()
