"""Which errors count as an outage (retried by workers, UNAVAILABLE to clients): jobcluster/errors.py."""

from __future__ import annotations

import asyncpg

from jobcluster.errors import UNAVAILABLE


def test_a_connection_left_mid_operation_by_a_postgresql_restart_is_an_outage() -> None:
    # make chaos: after a PostgreSQL restart, finish_attempt raised this; not retried, the job stayed RUNNING.
    err = asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")
    assert isinstance(err, UNAVAILABLE)
