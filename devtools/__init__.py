"""The dev tools: ``make start`` and its private Redis, PostgreSQL and etcd, the tests' services, chaos,
multihost, systemd units and TLS set-up.

Not part of the installed library (``jobcluster/``, which is exactly what the programs import): run from
the checkout, as ``python -m devtools.cluster`` or with the checkout on ``PYTHONPATH``.
"""
