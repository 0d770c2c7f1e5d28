#!/usr/bin/env bash
# Set up this checkout on a fresh Debian/Ubuntu machine: the Debian packages of
# the backing services (when missing, and when we may install them), then a
# virtual environment in .venv with the project and its test tools, at the versions of
# requirements/dev.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v etcd >/dev/null || need+=(etcd-server etcd-client)
command -v etcdctl >/dev/null || need+=(etcd-client)
# make multihost and its test: hosts as network namespaces (ip netns)
command -v ip >/dev/null || need+=(iproute2)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# worker/spawn.c, the job launcher's vfork helper, is compiled when the project is installed
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # Debian's packages may start their own services; we run private ones, so stop those.
    for svc in redis-server etcd; do
      if command -v service >/dev/null && service "$svc" status >/dev/null 2>&1; then service "$svc" stop || true; fi
    done
  else
    echo "missing: ${need[*]}. Install them (sudo apt-get install -y ${need[*]}) and run again." >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "creating .venv"
  python3 -m venv .venv
fi
# Exactly the versions in requirements/dev.lock, each checked against its hash (make lock rewrites it);
# the project itself without build isolation, so its build backend comes from the lock too.
echo "installing the locked dependencies and the project into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps \
  -r requirements/dev.lock
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
.venv/bin/python scripts/lock.py --installed
