#!/usr/bin/env bash
# Formats the package's Swift files with swift-format (part of the toolchain) and the committed
# .swift-format configuration.
#   scripts/format.sh          rewrites the files in place
#   scripts/format.sh --lint   changes nothing; fails, listing each finding, when a file is off
#                              (scripts/test.sh runs this in both tiers)
# Generated code (the etcd protobuf and gRPC stubs) is left as protoc wrote it.
set -euo pipefail
cd "$(dirname "$0")/.."
files=()
while IFS= read -r file; do
    files+=("$file")
done < <(git ls-files --cached --others --exclude-standard -- '*.swift' | grep -v '/Generated/' | while read -r f; do [ -f "$f" ] && echo "$f"; done)
case "${1:-}" in
    "") swift format format --in-place --parallel --configuration .swift-format "${files[@]}" ;;
    --lint) swift format lint --strict --parallel --configuration .swift-format "${files[@]}" ;;
    *) echo "usage: scripts/format.sh [--lint]" >&2; exit 2 ;;
esac
