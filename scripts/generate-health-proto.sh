#!/usr/bin/env bash
# Regenerates Sources/LoadBalancerGRPCHealth/Generated/ from Protos/health.proto (the gRPC
# health-checking service: messages, client and server stubs, package visibility).
#
# Needs protoc (Debian: protobuf-compiler). Builds protoc-gen-swift and protoc-gen-grpc-swift-2
# from the package copies in scripts/protoc-plugins (about ten minutes the first time), as
# scripts/generate-etcd-proto.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v protoc >/dev/null; then
    echo "protoc not found: apt-get install protobuf-compiler" >&2
    exit 1
fi

plugins=scripts/protoc-plugins
swift build --package-path "$plugins" --scratch-path "$plugins/.build" -c release \
    --product protoc-gen-swift
swift build --package-path "$plugins" --scratch-path "$plugins/.build" -c release \
    --product protoc-gen-grpc-swift-2
bin="$(swift build --package-path "$plugins" --scratch-path "$plugins/.build" -c release --show-bin-path)"

out=Sources/LoadBalancerGRPCHealth/Generated
mkdir -p "$out"
protoc \
    --proto_path=Protos \
    --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
    --plugin=protoc-gen-grpc-swift="$bin/protoc-gen-grpc-swift-2" \
    --swift_out="$out" \
    --swift_opt=Visibility=Package \
    --grpc-swift_out="$out" \
    --grpc-swift_opt=Visibility=Package,Server=true,Client=true \
    health.proto
echo "generated: $(ls "$out")"
