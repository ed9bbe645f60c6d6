#!/usr/bin/env bash
# Regenerates Sources/LoadBalancerGRPCHealth/Generated/ from Protos/health.proto (the gRPC
# health-checking service: messages, client and server stubs).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/generate-proto.sh health.proto Sources/LoadBalancerGRPCHealth/Generated Visibility=Package,Server=true,Client=true
