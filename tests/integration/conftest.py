from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest

from jobcluster.devtools.services import free_port
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
