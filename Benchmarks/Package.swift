// swift-tools-version:6.2
import PackageDescription

// Benchmarks of swift-loadbalancer, kept out of the main package so its users never build them.
//
//   swift package --disable-sandbox benchmark                  # pick() of every balancer
//   swift run -c release tail-latency-report                   # the tail-latency simulation
//   swift run -c release callpath --what call --threads 1,2    # the whole call path at any thread count
//   swift run -c release retry-report                          # hedging and retry amplification
//   swift run -c release subsetting-report                     # subsetting: evenness and stability
//   swift run -c release registry-propagation etcd|zookeeper   # registry write to endpoint set
//   swift run -c release scale                                 # a set change's cost at n = 100, 1,000, 10,000
//   swift run -c release registry-scale                        # every registry at 100, 1,000, 10,000 instances
//   swift run -c release churn-soak                            # 10 minutes of churn under load
//   scripts/http-compare.sh                                    # real HTTP: hey, AHC, the library, lbctl
//   swift run -c release grpc-compare                          # gRPC: grpc-swift round robin vs BalancingClientTransport
let package = Package(
    name: "Benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-loadbalancer", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/ordo-one/malloc-interposer.git", from: "1.6.1"),
    ],
    targets: [
        .executableTarget(
            name: "PickBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "LoadBalancer", package: "swift-loadbalancer"),
            ],
            path: "Benchmarks/PickBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "RetryBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "LoadBalancer", package: "swift-loadbalancer"),
            ],
            path: "Benchmarks/RetryBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "DNSBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "LoadBalancerDNS", package: "swift-loadbalancer"),
            ],
            path: "Benchmarks/DNSBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // What the runners' command lines share.
        .target(name: "BenchmarkCLI", path: "Sources/BenchmarkCLI"),
        // The whole call path at any thread count (see BENCHMARKS.md).
        .executableTarget(
            name: "callpath",
            dependencies: ["BenchmarkCLI", .product(name: "LoadBalancer", package: "swift-loadbalancer")],
            path: "Sources/callpath"
        ),
        // Discovery at scale: a change's cost against the set's size, for every balancer.
        .executableTarget(
            name: "scale",
            dependencies: [
                "BenchmarkCLI",
                "CHeapInfo",
                .product(name: "LoadBalancer", package: "swift-loadbalancer"),
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
            ],
            path: "Sources/scale"
        ),
        .executableTarget(
            name: "retry-report",
            dependencies: [.product(name: "LoadBalancer", package: "swift-loadbalancer")],
            path: "Sources/retry-report"
        ),
        .executableTarget(
            name: "subsetting-report",
            dependencies: [.product(name: "LoadBalancer", package: "swift-loadbalancer")],
            path: "Sources/subsetting-report"
        ),
        // The registries these two start (real servers on loopback), and their timing helpers.
        .target(
            name: "RegistryBenchSupport",
            dependencies: [
                .product(name: "LoadBalancer", package: "swift-loadbalancer"),
                .product(name: "LoadBalancerEtcd", package: "swift-loadbalancer"),
                .product(name: "LoadBalancerZooKeeper", package: "swift-loadbalancer"),
                .product(name: "_LoadBalancerTestServers", package: "swift-loadbalancer"),
            ],
            path: "Sources/RegistryBenchSupport"
        ),
        .executableTarget(
            name: "registry-propagation",
            dependencies: [
                "RegistryBenchSupport",
                .product(name: "LoadBalancer", package: "swift-loadbalancer"),
            ],
            path: "Sources/registry-propagation"
        ),
        // Each registry at 100, 1,000 and 10,000 instances (see BENCHMARKS.md, "Registries at scale").
        .executableTarget(
            name: "registry-scale",
            dependencies: [
                "CHeapInfo",
                "RegistryBenchSupport",
                .product(name: "LoadBalancer", package: "swift-loadbalancer"),
                .product(name: "LoadBalancerEtcd", package: "swift-loadbalancer"),
                .product(name: "LoadBalancerConsul", package: "swift-loadbalancer"),
                .product(name: "LoadBalancerDNS", package: "swift-loadbalancer"),
                .product(name: "_LoadBalancerTestServers", package: "swift-loadbalancer"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            path: "Sources/registry-scale"
        ),
        // glibc's mallinfo2 for the soak (the bytes malloc has handed out, beside the resident size).
        .target(name: "CHeapInfo", path: "Sources/CHeapInfo"),
        .executableTarget(
            name: "churn-soak",
            dependencies: [
                "CHeapInfo",
                .product(name: "LoadBalancer", package: "swift-loadbalancer"),
                .product(name: "LoadBalancerHTTP", package: "swift-loadbalancer"),
                .product(name: "_LoadBalancerTestServers", package: "swift-loadbalancer"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            path: "Sources/churn-soak"
        ),
        // Real HTTP against nginx on loopback: hey, plain AsyncHTTPClient, the HTTP factory, Retry, lbctl
        // (scripts/http-compare.sh starts the server and runs it).
        .executableTarget(
            name: "http-compare",
            dependencies: [
                .product(name: "LoadBalancer", package: "swift-loadbalancer"),
                .product(name: "LoadBalancerHTTP", package: "swift-loadbalancer"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            path: "Sources/http-compare"
        ),
        // gRPC: grpc-swift's round robin against BalancingClientTransport, and the transport's cost.
        .executableTarget(
            name: "grpc-compare",
            dependencies: [
                .product(name: "LoadBalancer", package: "swift-loadbalancer"),
                .product(name: "LoadBalancerGRPC", package: "swift-loadbalancer"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
            ],
            path: "Sources/grpc-compare"
        ),
        .executableTarget(
            name: "tail-latency-report",
            dependencies: [
                .product(name: "LoadBalancer", package: "swift-loadbalancer"),
                .product(name: "LoadBalancerSimulation", package: "swift-loadbalancer"),
            ],
            path: "Sources/tail-latency-report"
        ),
    ],
    swiftLanguageModes: [.v6]
)
