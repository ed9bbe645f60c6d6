#!/usr/bin/env bash
# Regenerates Sources/LoadBalancerEtcd/Generated/ from Protos/etcd.proto (client stubs only).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/generate-proto.sh etcd.proto Sources/LoadBalancerEtcd/Generated Visibility=Package,Server=false,Client=true
