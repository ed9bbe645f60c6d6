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
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizers=("$@")
[ ${#sanitizers[@]} -gt 0 ] || sanitizers=(thread address)
# LeakSanitizer (on with AddressSanitizer) ignores only XCTest's own objects; see the file.
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan-suppressions.txt${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
for sanitizer in "${sanitizers[@]}"; do
    case "$sanitizer" in
        thread|address) ;;
        *) echo "unknown sanitizer '$sanitizer' (expected thread or address)" >&2; exit 2 ;;
    esac
    echo "-- $sanitizer"
    mkdir -p ".build-sanitize-$sanitizer"
    log=".build-sanitize-$sanitizer/test-output.log"
    status=0
    LB_SANITIZER_SUBSET="$sanitizer" swift test --sanitize="$sanitizer" --scratch-path ".build-sanitize-$sanitizer" -Xswiftc -warnings-as-errors \
        >"$log" 2>&1 || status=$?
    grep -E "^(✔|✘) Test run|Executed .* tests" "$log" | tail -n 2 || true
    if grep -qE "WARNING: ThreadSanitizer|ERROR: AddressSanitizer|ERROR: LeakSanitizer|SUMMARY: (Thread|Address|Leak)Sanitizer" "$log"; then
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
