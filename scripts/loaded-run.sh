#!/usr/bin/env bash
# The whole test suite beside busy loops that hold CPU cores, as a CI host busy with other work
# would (RELIABILITY.md, "A loaded machine"). By hand; CI does not run it.
#   scripts/loaded-run.sh [CORES]     (default 1; the machine's core count holds every core)
# Needs the registry servers scripts/test.sh installs, and a build of the tests
# (`swift build --build-tests`, or a run of scripts/test.sh); exits with swift test's status.
set -euo pipefail
cd "$(dirname "$0")/.."
cores="${1:-1}"
case "$cores" in
    '' | *[!0-9]*) echo "usage: scripts/loaded-run.sh [CORES]" >&2; exit 2 ;;
esac
pids=()
stop() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop EXIT
for _ in $(seq 1 "$cores"); do
    yes > /dev/null &
    pids+=($!)
done
echo "== the whole suite beside $cores busy loop(s)"
LB_DNS_INTEGRATION=1 LB_ETCD_INTEGRATION=1 LB_ZOOKEEPER_INTEGRATION=1 swift test --skip-build
