#!/usr/bin/env bash
# The unit tests under ThreadSanitizer and AddressSanitizer (part of the test command).
#   scripts/sanitizers.sh [thread|address]...      (default: both)
#
# LB_SANITIZER_SUBSET=thread|address makes Package.swift declare only the core, the simulation,
# DNS and ZooKeeper with their unit tests; RELIABILITY.md says what is left out and why. Under
# ThreadSanitizer the package's Mutex is a pthread one that it can see (Synchronization.Mutex's
# contended path is invisible to it on Linux; see Sources/LoadBalancer/Internal/SanitizerMutex.swift).
# Each sanitizer builds in a directory of its own. A run fails on a failing test, on the sanitizer's exit status,
# and on any sanitizer report in the output, even one that did not change the exit status.
#
#   scripts/sanitizers.sh --all [thread|address]... (by hand: every module, the real-server suites too)
#
# --all builds the whole package (gRPC, AsyncHTTPClient, BoringSSL included) under the sanitizer
# and runs every suite, as scripts/test.sh does; LB_SANITIZER_ALL=thread gives every module the
# locks ThreadSanitizer can see. It takes longer than CI's budget allows (RELIABILITY.md has the
# figures). No report is suppressed: scripts/sanitizer-reports.py lists every one and fails the run
# on any race with an access in the package's own code, on any memory error, and on any leak
# allocated in a library module (RELIABILITY.md: what the others are).
set -euo pipefail
cd "$(dirname "$0")/.."
scope=subset
if [ "${1:-}" = "--all" ]; then
    scope=all
    shift
    export LB_DNS_INTEGRATION=1 LB_ETCD_INTEGRATION=1 LB_ZOOKEEPER_INTEGRATION=1
fi
sanitizers=("$@")
[ ${#sanitizers[@]} -gt 0 ] || sanitizers=(thread address)
# LeakSanitizer (on with AddressSanitizer) ignores only XCTest's own objects; see the file.
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan-suppressions.txt${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
for sanitizer in "${sanitizers[@]}"; do
    case "$sanitizer" in
        thread|address) ;;
        *) echo "unknown sanitizer '$sanitizer' (expected thread or address)" >&2; exit 2 ;;
    esac
    echo "-- $sanitizer ($scope)"
    if [ "$scope" = all ]; then
        build=".build-sanitize-all-$sanitizer"
    else
        build=".build-sanitize-$sanitizer"
    fi
    mkdir -p "$build"
    # The tests' time bounds stretch under a sanitizer (LoadBalancerTestKit's TestTimeScale): what
    # runs in microseconds alone runs several times slower instrumented, more so under ThreadSanitizer.
    if [ "$sanitizer" = thread ]; then export LB_TEST_TIME_SCALE=5; else export LB_TEST_TIME_SCALE=3; fi
    log="$build/test-output.log"
    status=0
    if [ "$scope" = all ]; then
        # The sanitizer's exit status would count the reports outside the package too: the reports
        # are judged below, the status is the tests'.
        export TSAN_OPTIONS="exitcode=0${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
        export LSAN_OPTIONS="exitcode=0:$LSAN_OPTIONS"
        LB_SANITIZER_ALL="$sanitizer" swift test --sanitize="$sanitizer" --scratch-path "$build" -Xswiftc -warnings-as-errors \
            >"$log" 2>&1 || status=$?
    else
        LB_SANITIZER_SUBSET="$sanitizer" swift test --sanitize="$sanitizer" --scratch-path "$build" -Xswiftc -warnings-as-errors \
            >"$log" 2>&1 || status=$?
    fi
    grep -E "^(✔|✘) Test run|Executed .* tests" "$log" | tail -n 2 || true
    if [ "$scope" = all ]; then
        # Every module is instrumented, the dependencies too. ThreadSanitizer: they keep their own
        # Synchronization.Mutex, whose contended path it cannot see, so a report with both accesses
        # inside dependencies is listed and one that touches the package fails the run.
        # LeakSanitizer: leaks of the tests' own launched processes are listed, one allocated in a
        # library module fails the run. Any AddressSanitizer memory error fails it.
        scripts/sanitizer-reports.py "$sanitizer" "$log" "$PWD" || {
            echo "the $sanitizer sanitizer reported a problem in the package's code (whole log: $log)" >&2
            exit 1
        }
    elif grep -qE "WARNING: ThreadSanitizer|ERROR: AddressSanitizer|ERROR: LeakSanitizer|SUMMARY: (Thread|Address|Leak)Sanitizer" "$log"; then
        grep -E -A 30 "WARNING: ThreadSanitizer|ERROR: (Address|Leak)Sanitizer" "$log" | head -n 120
        echo "the $sanitizer sanitizer reported a problem (whole log: $log)" >&2
        exit 1
    fi
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log"
        echo "the unit tests failed under the $sanitizer sanitizer (exit $status; whole log: $log)" >&2
        exit "$status"
    fi
done
