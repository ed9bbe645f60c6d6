#!/usr/bin/env bash
# Builds the libFuzzer target of the DNS message parser and runs it.
#   scripts/fuzz-dns.sh [SECONDS]     (default 30)
# Crashes are written to .build-fuzz/; the committed seed corpus is Fuzz/DNSParser/corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
out=.build-fuzz
mkdir -p "$out/corpus"
swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name DNSFuzz \
    Sources/LoadBalancerDNS/DNSMessage.swift Sources/LoadBalancerDNS/DNSMessage+Wire.swift \
    Fuzz/DNSParser/FuzzEntry.swift -o "$out/dns-fuzzer"
cp Fuzz/DNSParser/corpus/* "$out/corpus/" 2>/dev/null || true
"$out/dns-fuzzer" -max_total_time="$seconds" -max_len=4096 -artifact_prefix="$out/" "$out/corpus" 2>&1 | tail -n 3
