# jobcluster: `make start` runs a cluster on this machine, `make test` runs the tests.
SHELL := /bin/bash
PY := .venv/bin/python
SERVER_COUNT ?= 3
WORKER_COUNT ?= 2
BASE_PORT ?= 50051
CMD ?= echo hello from jobcluster
FILE ?= jobs.json
PROTO_OUT := jobcluster/pb
STAMP := .venv/.installed
# The dev tools (devtools/: make start, private services, chaos, multihost, systemd, TLS) live beside the
# programs and are not installed with the library: `python -m devtools.cluster` finds them from the checkout's
# directory, and scripts/*.py run with the checkout on PYTHONPATH.
SCRIPT_PY := PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" $(PY)
# `make start WEBUI_ADDR=127.0.0.1:8090` reaches the programs as the setting.
ifdef WEBUI_ADDR
export WEBUI_ADDR
endif
# `make start TLS=1`: every program talks TLS, with a private CA and certificates in .run/tls.
TLS_FLAG := $(if $(filter 1 yes true on,$(TLS)),--tls)

.PHONY: help deps lock browser build start stop status logs test test-quick test-long test-stress run-servers stop-servers run-worker \
        run-client run-client-servers run-webui screenshot bench systemd chaos chaos-test soak multihost clean

help:
	@echo "make start [SERVER_COUNT=3 WORKER_COUNT=2 BASE_PORT=50051 TLS=1]   start a cluster here"
	@echo "make status | make logs | make stop                         see it, stop it"
	@echo "make test                                                    run the tests (under 8 minutes)"
	@echo "make test-long                                               the long proofs make test leaves out"
	@echo "make run-client CMD='ls -la' | make run-client-servers FILE=jobs.json | make run-webui"
	@echo ".venv/bin/jobcluster --help                                  the command line client"

$(STAMP): pyproject.toml requirements/dev.lock scripts/bootstrap.sh
	bash scripts/bootstrap.sh
	touch $@

deps: $(STAMP)

# Rewrite requirements/*.lock from pyproject.toml (every pin with its hashes; needs PyPI), on purpose only.
# `make test` fails while pyproject.toml and the locks disagree (tests/unit/test_lock.py).
lock: deps
	$(PY) scripts/lock.py

# Generated gRPC code: proto/scheduler.proto -> jobcluster/pb/scheduler_pb2*.py (committed;
# tests/unit/test_generated.py fails when it is stale).
build: deps
	$(PY) -m grpc_tools.protoc -I$(PROTO_OUT)=proto --python_out=. --grpc_python_out=. --pyi_out=. \
		$(PROTO_OUT)/scheduler.proto

start: deps
	$(PY) -m devtools.cluster start --servers $(SERVER_COUNT) --workers $(WORKER_COUNT) \
		--base-port $(BASE_PORT) $(TLS_FLAG)

stop:
	@if [ -x $(PY) ]; then $(PY) -m devtools.cluster stop; else echo "nothing started"; fi

status: deps
	@$(PY) -m devtools.cluster status

# The last 30 lines of each log; etcd's raft chatter and flag warnings left out unless ALL=1.
ALL ?=
logs:
	@ls log/*.log >/dev/null 2>&1 || { echo "no logs yet (make start)"; exit 0; }; \
	for f in log/*.log; do \
		echo "==> $$f <=="; \
		if [ "$${f##*/}" = etcd.log ] && [ -z "$(ALL)" ]; then \
			grep -v -e '^raft' -e "^\[WARNING\] Deprecated '--logger=capnslog'" "$$f" | tail -n 30; \
		else tail -n 30 "$$f"; fi; \
		echo; \
	done

# Debian's chromium for the browser tests (installed when missing and we are root).
browser:
	@bash scripts/install_browser.sh

# ruff's rules and format, then the tests but the long proofs, with mypy (strict on jobcluster/ and
# devtools/, default on the programs; see [tool.ruff] and [tool.mypy]) beside them at nice 19: a cold
# mypy is ~30 s of one core the tests mostly leave idle. Its report follows the tests'; either failing fails.
test: deps browser
	$(PY) -m ruff check
	$(PY) -m ruff format --check
	@nice -n 19 $(PY) -m mypy > .venv/mypy.log 2>&1 & types=$$!; \
	echo "$(PY) -m mypy (beside the tests: its report follows them)"; \
	$(PY) -m pytest -m 'not long' --durations=25; tests=$$?; \
	wait $$types; typed=$$?; echo "$(PY) -m mypy"; cat .venv/mypy.log; \
	exit $$(( tests != 0 || typed != 0 ))

# While working: the unit tests and the fast integration tests (no browser, no e2e; under 90 s).
test-quick: deps
	$(PY) -m pytest tests/unit tests/integration -m 'not slow and not long' -q

# The long proofs make test leaves out (each marked @pytest.mark.long with the reason it is long): fault
# scenarios that wait out real timers, scale runs, the fuzzers, the 1,000-job chaos run (about 5 minutes).
test-long: deps browser
	$(PY) -m pytest -m long --durations=0

# The integration and e2e suites in random order beside two CPU burners at nice 19 (scripts/stress.sh);
# ARGS='...' passes pytest arguments (a seed: ARGS='--random-order-seed=N', printed at the start).
test-stress: deps browser
	bash scripts/stress.sh

run-servers: deps
	$(PY) -m devtools.cluster start --servers $(SERVER_COUNT) --workers 0 --base-port $(BASE_PORT) \
		--no-webui $(TLS_FLAG)

stop-servers:
	$(PY) -m devtools.cluster stop --programs-only server-

# A worker in the foreground (Ctrl-C stops it gracefully). As root, its jobs run as JOB_USER, by default
# jobcluster-job (created when missing).
run-worker: deps
	JOB_USER="$$($(PY) -m devtools.cluster job-user)" $(PY) -m worker

# CMD goes to the client as it was typed (quotes, $VARS for the job's shell): through the environment, never
# through make's or this recipe's shell expansion.
run-client: export JOBCLUSTER_CMD = $(value CMD)
run-client: deps
	$(PY) -m client -cmd "$$JOBCLUSTER_CMD"

run-client-servers: deps
	$(PY) -m client -file "$(FILE)" -servers "$$(paste -sd, .servers 2>/dev/null)"

# The web UI in the foreground, for the servers in .servers (or SERVERS).
run-webui: deps
	$(PY) -m webui $(if $(WEBUI_ADDR),--addr $(WEBUI_ADDR))

# Celery side by side with jobcluster (make start's defaults) on private services, ROUNDS interleaved rounds,
# each goal of issue 11 beside its figure. Installs Celery into .venv from requirements/bench.lock (bench only).
# SCALE=1: instead, the same figures empty and with 1,000,000 finished + 100,000 queued jobs stored,
# dead-letter operations on 100,000 entries, reconciliation's cost and memory (scripts/bench_scale.py).
ROUNDS ?= 3
SCALE ?=
bench: deps
ifeq ($(SCALE),1)
	$(SCRIPT_PY) scripts/bench.py --scale
else
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/bench.lock
	$(SCRIPT_PY) scripts/bench.py --rounds $(ROUNDS)
endif

# systemd units for real hosts (docs/deploy.md), for this checkout's .venv, written to OUT.
OUT ?= .run/systemd
systemd: deps
	$(PY) -m devtools.systemd --out $(OUT)

# Thousands of jobs through a cluster being killed, then the checks (private services; minutes; exit 1 on a
# violation). `make chaos-test` runs the 1,000-job version alone (tests/e2e/test_chaos.py, about 30 s; it is
# also part of `make test-long`).
JOBS ?= 10000
chaos: deps
	$(SCRIPT_PY) scripts/chaos.py --jobs $(JOBS)

chaos-test: deps
	$(PY) -m pytest -m chaos tests/e2e/test_chaos.py

# Constant load and one kill a minute; RSS and open fds of every program every 10 s, fails on steady growth.
MINUTES ?= 30
soak: deps
	$(SCRIPT_PY) scripts/soak.py --minutes $(MINUTES)

# Three hosts as network namespaces (root): partition, heal, etcd quorum loss, Redis failover, a host killed; one
# table (about 2 minutes; exit 1 on a violation). The short version is tests/e2e/test_multihost.py, in make test-long
# (its SIGTERM tests, in make test).
# `make multihost ARGS=--cleanup` removes what a crashed run left.
multihost: deps
	$(SCRIPT_PY) scripts/multihost.py $(ARGS)

# docs/screenshot.png for the README: a private cluster, a few jobs, the UI in Chromium.
screenshot: deps browser
	$(SCRIPT_PY) scripts/screenshot.py docs/screenshot.png

# Also deletes PostgreSQL's data kept outside the checkout (/var/lib/jobcluster/<hash>) and .run/secrets.
clean: stop
	@if [ -x $(PY) ]; then $(PY) -m devtools.cluster clean; fi
	rm -rf .run log .servers .venv .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
