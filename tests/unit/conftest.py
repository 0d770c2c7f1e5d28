"""Fixtures of the web UI's unit tests: in-process fake servers and a TestClient on them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tests.unit.fake_jobservice import SERVERS, FakeConnector, ui_client


@pytest.fixture
def fake() -> FakeConnector:
    """Two fake servers sharing one set of data, like real servers sharing a database."""
    return FakeConnector(SERVERS)


@pytest.fixture
def client(fake: FakeConnector) -> Iterator[TestClient]:
    """The web UI app on the fake servers."""
    yield from ui_client(fake)
