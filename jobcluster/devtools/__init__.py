"""Start private Redis, PostgreSQL and etcd servers: for tests and for ``make start``."""
