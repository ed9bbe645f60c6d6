#!/usr/bin/env bash
# Builds a libFuzzer target (with AddressSanitizer) and runs it.
#   scripts/fuzz.sh TARGET [SECONDS]     (default 30)
# TARGET is one of:
#   dns             the DNS message parser (LoadBalancerDNS)
#   zookeeper       the ZooKeeper frame decoder and reply records (LoadBalancerZooKeeper)
#   registry-value  instance values: host:port, URLs, this library's JSON, ServerSet and Curator JSON
#                   (Instance(registryValue:options:) and Instance.registryValue(in:))
#   consul          Consul health answers (JSON) decoded and turned into instances
#   etcd            etcd responses (protobuf) decoded and applied to the publisher's table
# Each target compiles only the sources it fuzzes (etcd's also needs SwiftProtobuf, compiled
# from the package's checkout into a static library first). Crashes are
# written to .build-fuzz/TARGET/; the committed seed corpora are in Fuzz/*/corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: scripts/fuzz.sh dns|zookeeper|registry-value|consul|etcd [SECONDS]}"
seconds="${2:-30}"
case "$target" in
    dns)
        dir=Fuzz/DNSParser
        sources=(Sources/LoadBalancerDNS/DNSMessage.swift Sources/LoadBalancerDNS/DNSMessage+Wire.swift)
        max_len=4096 ;;
    zookeeper)
        dir=Fuzz/ZooKeeperFrames
        sources=(Sources/LoadBalancerZooKeeper/Jute.swift Sources/LoadBalancerZooKeeper/ZooKeeperProtocol.swift)
        max_len=8192 ;;
    registry-value)
        dir=Fuzz/RegistryValue
        sources=(Sources/LoadBalancer/Instances/Instance.swift Sources/LoadBalancer/Instances/Instance+Parsing.swift
                 Sources/LoadBalancer/Instances/InstanceParseError.swift Sources/LoadBalancer/Instances/Instance+RegistryValue.swift
                 Sources/LoadBalancer/Instances/Instance+RegistryFormats.swift Sources/LoadBalancer/Instances/RegistryValueFormat.swift)
        max_len=2048 ;;
    consul)
        dir=Fuzz/ConsulHealth
        sources=(Sources/LoadBalancer/Instances/Instance.swift Sources/LoadBalancer/Instances/Instance+Parsing.swift
                 Sources/LoadBalancer/Instances/InstanceParseError.swift Sources/LoadBalancerConsul/ConsulModels.swift
                 Sources/LoadBalancerConsul/ConsulError.swift)
        max_len=8192 ;;
    etcd)
        dir=Fuzz/EtcdResponses
        sources=(Sources/LoadBalancer/Instances/Instance.swift Sources/LoadBalancer/Instances/Instance+Parsing.swift
                 Sources/LoadBalancer/Instances/InstanceParseError.swift Sources/LoadBalancer/Instances/Instance+RegistryValue.swift
                 Sources/LoadBalancer/Instances/Instance+RegistryFormats.swift Sources/LoadBalancer/Instances/RegistryValueFormat.swift
                 Sources/LoadBalancer/Instances/KeyedInstanceTable.swift
                 Sources/LoadBalancerEtcd/Generated/etcd.pb.swift Sources/LoadBalancerEtcd/EtcdModels.swift)
        max_len=8192 ;;
    *)
        echo "unknown fuzz target '$target' (expected dns, zookeeper, registry-value, consul or etcd)" >&2
        exit 2 ;;
esac
out=".build-fuzz/$target"
mkdir -p "$out/corpus"
extra=()
if [ "$target" = etcd ]; then
    # SwiftProtobuf from the package's own checkout, as a static library with coverage.
    [ -d .build/checkouts/swift-protobuf/Sources/SwiftProtobuf ] || swift package resolve >/dev/null
    protobuf=.build-fuzz/swift-protobuf
    if [ ! -f "$protobuf/libSwiftProtobuf.a" ]; then
        mkdir -p "$protobuf"
        swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name SwiftProtobuf -package-name SwiftProtobuf \
            -emit-library -static -emit-module -emit-module-path "$protobuf/SwiftProtobuf.swiftmodule" \
            .build/checkouts/swift-protobuf/Sources/SwiftProtobuf/*.swift -o "$protobuf/libSwiftProtobuf.a"
    fi
    # lld: gold warns about every sanitizer helper symbol of the static library.
    extra=(-I "$protobuf" -L "$protobuf" -lSwiftProtobuf -package-name LoadBalancerFuzz -use-ld=lld)
fi
swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name Fuzzed -D LB_FUZZ ${extra[@]+"${extra[@]}"} \
    "${sources[@]}" "$dir/FuzzEntry.swift" -o "$out/fuzzer"
cp "$dir"/corpus/* "$out/corpus/" 2>/dev/null || true
"$out/fuzzer" -max_total_time="$seconds" -max_len="$max_len" -artifact_prefix="$out/" "$out/corpus" 2>&1 | tail -n 3
