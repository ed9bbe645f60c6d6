#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this).
#
# 1. Installs and starts the real registry servers the integration suites need (each later
#    backend adds its server here; each test gets its own ports and data directory).
# 2. Builds everything with warnings as errors (Swift 6 mode, strict concurrency).
# 3. Runs `swift test`: unit and integration tests.
# 4. Builds the Benchmarks package, so it cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== swift $(swift --version 2>&1 | head -1)"

# Registry servers: none yet (the core suite needs no server). The DNS, etcd and ZooKeeper
# issues add their `apt-get install` and start steps here.

echo "== build (warnings are errors)"
swift build --build-tests -Xswiftc -warnings-as-errors

echo "== test"
swift test -Xswiftc -warnings-as-errors

echo "== build the benchmarks (they are run by hand; see BENCHMARKS.md)"
swift build --package-path Benchmarks -Xswiftc -warnings-as-errors
