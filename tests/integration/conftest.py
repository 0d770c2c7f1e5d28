from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest

from devtools.services import free_port
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from jobcluster.queue import Queue
from jobcluster.settings import Settings
from jobcluster.store import Store
from scheduler_server.server import SchedulerServer
from tests.helpers import wait_for
from worker.worker import Worker


@pytest.fixture
async def server(settings: Settings, store: Store, queue: Queue) -> AsyncIterator[SchedulerServer]:
    """One in-process server on a free port, ready (PostgreSQL reached)."""
    srv = SchedulerServer(replace(settings, server_port=free_port()))
    await srv.start()
    await wait_for(lambda: srv.store is not None, what="server ready")
    yield srv
    await srv.stop()


@pytest.fixture
async def stub(server: SchedulerServer) -> AsyncIterator[pb_grpc.JobServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield pb_grpc.JobServiceStub(channel)


@pytest.fixture
def make_worker(settings: Settings, store: Store, queue: Queue):
    """``make_worker(worker_id, burst=True)``: a Worker on the shared store and queue."""

    def make(worker_id: str = "w1", burst: bool = True, **overrides) -> Worker:
        return Worker(replace(settings, worker_id=worker_id, **overrides), store, queue, burst=burst)

    return make


#: Modules left out of ``make test-quick`` (marked ``slow``; all still run in ``make test``): each takes
#: 7 s or more (real failovers, thousands of ids, fuzzing, several services of their own, killed process groups).
SLOW_MODULES = {
    "test_cron_keys",
    "test_dead_letters_scale",
    "test_election_lapse",
    "test_etcd_closed",
    "test_fence_after_partition",
    "test_fuzz",
    "test_job_control",
    "test_locked_services",
    "test_rebuild",
    "test_sentinel",
    "test_shell",
    "test_watch",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
