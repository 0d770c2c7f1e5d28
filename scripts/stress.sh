#!/usr/bin/env bash
# make test-stress: the integration and e2e suites in random order while two CPU burners run at nice 19,
# so a race that a quiet machine hides gets its chance. Extra pytest arguments pass through
# (make test-stress ARGS='-x' or a seed: ARGS='-p random_order --random-order-seed=123').
# The burners are this script's children, ended by pid when it exits, however it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

burners=()
stop_burners() {
  for pid in "${burners[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${burners[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_burners EXIT
for _ in 1 2; do
  nice -n 19 sh -c 'while :; do :; done' &
  burners+=("$!")
done
echo "two CPU burners at nice 19: pids ${burners[*]}"
# shellcheck disable=SC2086  # ARGS is a list of pytest arguments, split on purpose
.venv/bin/python -m pytest tests/integration tests/e2e --random-order --random-order-bucket=module ${ARGS:-}
