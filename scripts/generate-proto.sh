#!/usr/bin/env bash
# Generates Swift code from one .proto of Protos/ (package visibility): the messages, and the gRPC
# stubs with the options given. Used by scripts/generate-etcd-proto.sh and
# scripts/generate-health-proto.sh.
#
#   scripts/generate-proto.sh PROTO OUTPUT_DIRECTORY GRPC_SWIFT_OPTIONS
#
# Needs protoc (Debian: protobuf-compiler). Builds protoc-gen-swift and protoc-gen-grpc-swift-2
# from the package copies in scripts/protoc-plugins (about ten minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 3 ]; then
    echo "usage: $0 PROTO OUTPUT_DIRECTORY GRPC_SWIFT_OPTIONS" >&2
    exit 2
fi
proto=$1
out=$2
grpc_options=$3

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

mkdir -p "$out"
protoc \
    --proto_path=Protos \
    --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
    --plugin=protoc-gen-grpc-swift="$bin/protoc-gen-grpc-swift-2" \
    --swift_out="$out" \
    --swift_opt=Visibility=Package \
    --grpc-swift_out="$out" \
    --grpc-swift_opt="$grpc_options" \
    "$proto"
echo "generated: $(ls "$out")"
