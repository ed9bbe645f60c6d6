#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this).
#
# 1. Installs the real registry servers the integration suites start (each test gets its own ports
#    and data directory).
# 2. Checks the formatting (scripts/format.sh --lint), then builds everything with warnings as
#    errors (Swift 6 mode, strict concurrency).
# 3. Runs `swift test`: unit and integration tests (the reliability suites included).
# 4. Builds the DocC documentation of every public module, with warnings as errors.
#
# Two other tiers:
# - `scripts/test.sh --fast`, for use while working: the formatting check and one `swift test`
#   (warnings as errors) of the unit, static and in-process suites (no registry servers, no DocC).
#   Run again, it compiles only what changed; after the full run (or a plain `swift build`) it
#   compiles the package's own modules once more (SwiftPM's build and test commands keep build
#   plans of their own), not the dependencies.
# - `scripts/test.sh --extended`, by hand and before a release: what does not fit CI's 25 minutes
#   (each needs a build of its own): the unit tests under ThreadSanitizer and AddressSanitizer, each
#   parser's fuzzer for 15 s, the Benchmarks package's build and a 60 s churn soak. It needs no
#   registry server. RELIABILITY.md has the figures and the longer runs.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    "") ;;
    --fast)
        echo "== fast tier: build (warnings are errors), then the suites that need no registry server"
        scripts/format.sh --lint
        # One command that builds and tests: SwiftPM's `swift build` and `swift test` keep build
        # plans of their own, and each compiles the package's modules again after the other ran.
        env -u LB_DNS_INTEGRATION -u LB_ETCD_INTEGRATION -u LB_ZOOKEEPER_INTEGRATION LB_TEST_TIER=fast \
            swift test -Xswiftc -warnings-as-errors
        exit 0
        ;;
    --extended)
        echo "== unit tests under ThreadSanitizer and AddressSanitizer (the subset RELIABILITY.md lists)"
        scripts/sanitizers.sh thread address

        echo "== fuzz the parsers of untrusted input (libFuzzer + AddressSanitizer, 15 s each)"
        for target in dns zookeeper registry-value consul etcd; do
            echo "-- $target"
            scripts/fuzz.sh "$target" 15
        done

        echo "== build the benchmarks, so they cannot rot (they are run by hand; see BENCHMARKS.md)"
        swift build --package-path Benchmarks -Xswiftc -warnings-as-errors

        echo "== a short churn soak (the 10-minute run is by hand; see RELIABILITY.md)"
        # A minute is too short to tell a slow leak from the allocator settling, so memory may grow
        # 20% here (5% in the 10-minute run); endpoint closes, leaked endpoints and leftovers are
        # checked alike.
        swift run --package-path Benchmarks --skip-build churn-soak --seconds 60 --warmup 20 --max-growth 20
        exit 0
        ;;
    *)
        echo "usage: scripts/test.sh [--fast | --extended]" >&2
        exit 2
        ;;
esac

# Each step prints the minutes and seconds since the start, so a slow step shows in CI's log.
step() { echo "== [$((SECONDS / 60))m$((SECONDS % 60))s] $*"; }
step "swift $(swift --version 2>&1 | head -1)"

# Registry servers. Each integration suite starts its own server processes on ports and data
# directories of its own; this only makes sure the packages are installed.
need=()
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
[ -x /usr/bin/etcd ] || need+=(etcd-server)
[ -x /usr/bin/etcdctl ] || need+=(etcd-client)
# ZooKeeper 3.8 (it pulls in a Java runtime); the tests start it with `java` directly.
[ -f /usr/share/java/zookeeper.jar ] && [ -x /usr/bin/java ] || need+=(zookeeper)
# Its TLS tests run the Netty server (secureClientPort), which needs netty-codec and netty-resolver
# beside the jars its manifest names (Debian's libnetty-java, which zookeeper pulls in); the key
# stores are made with the JRE's keytool.
[ -f /usr/share/java/netty-codec.jar ] && [ -f /usr/share/java/netty-resolver.jar ] || need+=(libnetty-java)
# kazoo, the Python ZooKeeper client the interoperability tests write and read nodes with (as
# Finagle, Curator and go-kit do), for Debian's own python3.
/usr/bin/python3 -c 'import kazoo' >/dev/null 2>&1 || need+=(python3-kazoo)
# tmux, the terminal that `lbctl top`'s tests drive with send-keys and read with capture-pane (the
# fast tier skips those tests, saying so, where tmux is missing).
command -v tmux >/dev/null 2>&1 || need+=(tmux)
if [ ${#need[@]} -gt 0 ]; then
    step "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Consul needs nothing installed: its suite runs against the project's own Consul-API test server
# (the ConsulTestServer target), started in process on a port of its own by each test.

step "format (swift-format with the committed .swift-format; scripts/format.sh fixes what it finds)"
scripts/format.sh --lint

step "build (warnings are errors)"
# Every package trait is on: the default traits are all of them (Package.swift), so these plain
# commands build and test every module. (Passing --enable-all-traits here instead would make a
# build configuration that the later steps, which pass no trait flag, do not share: measured, it
# recompiled the package's 200-odd files.)
swift build --build-tests -Xswiftc -warnings-as-errors

step "test"
# The build above built the tests with these flags; without --skip-build, `swift test` compiled the
# package's own modules a second time (7 minutes of a fresh run on a loaded machine).
# The integration suites must run (and fail if their server is missing), not skip.
LB_DNS_INTEGRATION=1 LB_ETCD_INTEGRATION=1 LB_ZOOKEEPER_INTEGRATION=1 swift test --skip-build

step "build the documentation of every public module (DocC; warnings are errors)"
# The same -Xswiftc flag as the build above, so the modules are not compiled again. Any DocC
# warning fails the run: a symbol or article link that does not resolve, a parameter missing from a
# `- Parameters:` list. README.md says how to preview the archives.
doc_targets=()
for target in LoadBalancer LoadBalancerSimulation LoadBalancerTestKit LoadBalancerHTTP LoadBalancerDNS LoadBalancerEtcd \
    LoadBalancerZooKeeper LoadBalancerConsul LoadBalancerGRPC; do
    doc_targets+=(--target "$target")
done
swift package -Xswiftc -warnings-as-errors --disable-sandbox generate-documentation "${doc_targets[@]}" \
    --warnings-as-errors
step "done"
