#!/usr/bin/env bash
# Debian's chromium, which the browser tests drive through the playwright package
# (executable_path=/usr/bin/chromium; no `playwright install`).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium for the browser tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
else
  echo "chromium is missing: the browser tests will be skipped. Install it: sudo apt-get install -y chromium" >&2
fi
