// swift-tools-version:6.2
import PackageDescription

// Package traits (SE-0450) make the heavy dependencies optional. Each backend's external
// dependencies are used only when its trait is enabled, so SwiftPM does not even fetch them for a
// package that leaves the trait out: one that needs only the core writes
//
//     .package(url: "https://github.com/.../swift-loadbalancer.git", from: "0.1.0", traits: [])
//
// and resolves swift-log, swift-metrics, swift-distributed-tracing, swift-service-lifecycle and
// swift-atomics (with their own dependencies), not SwiftNIO, AsyncHTTPClient, BoringSSL, gRPC or
// protobuf. The default traits enable everything, so a plain dependency (and this package's own
// build) gets every product. README.md ("Choosing what you fetch and build") has the figures.
//
// A trait's conditions always name one trait: SwiftPM 6.2 reads a condition listing several as
// "all of them", later versions as "any of them".

/// Settings every target of the package shares: Swift 6 language mode (set at the package level)
/// plus the upcoming features the project opts into.
let sharedSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

/// Every trait of the package; the default enables them all.
let allTraits: Set<String> = ["HTTP", "DNS", "Etcd", "ZooKeeper", "Consul", "GRPC", "CLI"]

let package = Package(
    name: "swift-loadbalancer",
    platforms: [
        // Synchronization's Atomic and Mutex need these.
        .macOS(.v15), .iOS(.v18), .tvOS(.v18), .watchOS(.v11), .visionOS(.v2),
    ],
    products: [
        .library(name: "LoadBalancer", targets: ["LoadBalancer"]),
        .library(name: "LoadBalancerSimulation", targets: ["LoadBalancerSimulation"]),
        .library(name: "LoadBalancerHTTP", targets: ["LoadBalancerHTTP"]),
        .library(name: "LoadBalancerDNS", targets: ["LoadBalancerDNS"]),
        .library(name: "LoadBalancerEtcd", targets: ["LoadBalancerEtcd"]),
        .library(name: "LoadBalancerZooKeeper", targets: ["LoadBalancerZooKeeper"]),
        .library(name: "LoadBalancerConsul", targets: ["LoadBalancerConsul"]),
        .library(name: "LoadBalancerGRPC", targets: ["LoadBalancerGRPC"]),
        // Test doubles for users' tests: a manual clock, a publisher driven by hand, a recording
        // endpoint factory and a recording balancer.
        .library(name: "LoadBalancerTestKit", targets: ["LoadBalancerTestKit"]),
        .executable(name: "lbctl", targets: ["lbctl"]),
        // NOT API: real registry servers and HTTP backends started on loopback, for this package's
        // tests and the Benchmarks/ package only (a package can use another's targets only through
        // a product; the underscore says it is not for anyone else, and it may change or go in any
        // release). Built with the CLI trait.
        .library(name: "_LoadBalancerTestServers", targets: ["LoadBalancerTestServers", "LoadBalancerLocalBackends", "ConsulTestServer"]),
    ],
    traits: [
        .trait(name: "HTTP", description: "LoadBalancerHTTP: an endpoint factory over AsyncHTTPClient."),
        .trait(name: "DNS", description: "LoadBalancerDNS: DNS SRV and A/AAAA discovery over SwiftNIO."),
        .trait(name: "Etcd", description: "LoadBalancerEtcd: etcd v3 discovery and registration over gRPC."),
        .trait(name: "ZooKeeper", description: "LoadBalancerZooKeeper: ZooKeeper discovery and registration over SwiftNIO."),
        .trait(name: "Consul", description: "LoadBalancerConsul: Consul discovery and registration over AsyncHTTPClient."),
        .trait(
            name: "GRPC",
            description: "LoadBalancerGRPC: a grpc-swift-2 name resolver fed by any publisher, and a client transport balancing every RPC."),
        .trait(
            name: "CLI",
            description:
                "The lbctl command and the loopback servers it and the tests share (needs every registry backend and the gRPC transport).",
            enabledTraits: ["HTTP", "DNS", "Etcd", "ZooKeeper", "Consul", "GRPC"]
        ),
        .default(enabledTraits: allTraits),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        // Already in the graph through AsyncHTTPClient and gRPC; named for the tests' TLS servers.
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        // Only for `swift package generate-documentation` (scripts/test.sh builds the docs); a plugin,
        // so it adds nothing to the build of a package that depends on this one.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // The core: instances, publishers, the endpoint cache, balancers, retry.
        // Depends on API packages only, so a user of one backend never builds another.
        .target(
            name: "LoadBalancer",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Atomics", package: "swift-atomics"),
            ],
            swiftSettings: sharedSettings
        ),
        // A deterministic discrete-event simulation that drives the real balancers in virtual time
        // (the tail-latency scenario of Benchmarks/ and `lbctl demo`).
        .target(
            name: "LoadBalancerSimulation",
            dependencies: ["LoadBalancer"],
            swiftSettings: sharedSettings
        ),
        // An endpoint factory over AsyncHTTPClient, for HTTP services, and the HTTP and TCP health checks.
        .target(
            name: "LoadBalancerHTTP",
            dependencies: [
                "LoadBalancer",
                .product(name: "AsyncHTTPClient", package: "async-http-client", condition: .when(traits: ["HTTP"])),
                .product(name: "NIOCore", package: "swift-nio", condition: .when(traits: ["HTTP"])),
                .product(name: "NIOHTTP1", package: "swift-nio", condition: .when(traits: ["HTTP"])),
                // TCPHealthCheck's connections (AsyncHTTPClient builds it anyway).
                .product(name: "NIOPosix", package: "swift-nio", condition: .when(traits: ["HTTP"])),
            ],
            swiftSettings: sharedSettings
        ),
        // DNS SRV and A/AAAA discovery over a small SwiftNIO stub resolver.
        .target(
            name: "LoadBalancerDNS",
            dependencies: [
                "LoadBalancer",
                .product(name: "NIOCore", package: "swift-nio", condition: .when(traits: ["DNS"])),
                .product(name: "NIOPosix", package: "swift-nio", condition: .when(traits: ["DNS"])),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: sharedSettings
        ),
        // etcd v3 discovery and registration over grpc-swift-2 (code generated from Protos/etcd.proto).
        .target(
            name: "LoadBalancerEtcd",
            dependencies: [
                "LoadBalancer",
                .product(name: "GRPCCore", package: "grpc-swift-2", condition: .when(traits: ["Etcd"])),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport", condition: .when(traits: ["Etcd"])),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf", condition: .when(traits: ["Etcd"])),
                .product(name: "SwiftProtobuf", package: "swift-protobuf", condition: .when(traits: ["Etcd"])),
                .product(name: "NIOCore", package: "swift-nio", condition: .when(traits: ["Etcd"])),
                .product(name: "NIOPosix", package: "swift-nio", condition: .when(traits: ["Etcd"])),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: sharedSettings
        ),
        // ZooKeeper discovery and registration over a ZooKeeper client written on SwiftNIO.
        .target(
            name: "LoadBalancerZooKeeper",
            dependencies: [
                "LoadBalancer",
                .product(name: "NIOCore", package: "swift-nio", condition: .when(traits: ["ZooKeeper"])),
                .product(name: "NIOPosix", package: "swift-nio", condition: .when(traits: ["ZooKeeper"])),
                // TLS to ZooKeeper's secure client port.
                .product(name: "NIOSSL", package: "swift-nio-ssl", condition: .when(traits: ["ZooKeeper"])),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: sharedSettings
        ),
        // Consul discovery (blocking health queries) and registration (agent service + TTL check)
        // over AsyncHTTPClient.
        .target(
            name: "LoadBalancerConsul",
            dependencies: [
                "LoadBalancer",
                .product(name: "AsyncHTTPClient", package: "async-http-client", condition: .when(traits: ["Consul"])),
                .product(name: "NIOCore", package: "swift-nio", condition: .when(traits: ["Consul"])),
                .product(name: "NIOPosix", package: "swift-nio", condition: .when(traits: ["Consul"])),
                .product(name: "NIOHTTP1", package: "swift-nio", condition: .when(traits: ["Consul"])),
                .product(name: "NIOSSL", package: "swift-nio-ssl", condition: .when(traits: ["Consul"])),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: sharedSettings
        ),
        // For gRPC clients: a grpc-swift-2 name resolver fed by any InstancePublisher, and
        // BalancingClientTransport (this library's balancers on every RPC).
        .target(
            name: "LoadBalancerGRPC",
            dependencies: [
                "LoadBalancer",
                .product(name: "GRPCCore", package: "grpc-swift-2", condition: .when(traits: ["GRPC"])),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport", condition: .when(traits: ["GRPC"])),
                .product(name: "NIOCore", package: "swift-nio", condition: .when(traits: ["GRPC"])),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: sharedSettings
        ),
        // A Consul-API server over SwiftNIO for the tests (no Consul can be installed here): blocking
        // queries, the passing and tag filters, agent registration with TTL checks, fault injection.
        // Only the tests and the Benchmarks package use it (through the _LoadBalancerTestServers product).
        .target(
            name: "ConsulTestServer",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: sharedSettings
        ),
        // Starts real registry servers (dnsmasq, etcd, ZooKeeper) on loopback for the integration tests and benchmarks.
        .target(
            name: "LoadBalancerTestServers",
            dependencies: [
                "LoadBalancerTestKit",
                "LoadBalancerTestSupport",
                "LoadBalancer",
                "LoadBalancerDNS",
                "LoadBalancerEtcd",
                "LoadBalancerZooKeeper",
                .product(name: "NIOCore", package: "swift-nio", condition: .when(traits: ["CLI"])),
                .product(name: "NIOPosix", package: "swift-nio", condition: .when(traits: ["CLI"])),
            ],
            swiftSettings: sharedSettings
        ),
        // The test suites' shared helpers that need only the core (waiting, recording a publisher's
        // updates), exported by LoadBalancerTestServers; apart from it for the sanitizer runs'
        // subset, which has no registry module over AsyncHTTPClient or gRPC. NOT API.
        .target(
            name: "LoadBalancerTestSupport",
            dependencies: ["LoadBalancer", "LoadBalancerTestKit"],
            swiftSettings: sharedSettings
        ),
        // Test doubles for users' tests (and this package's): the core only, no other dependency.
        .target(
            name: "LoadBalancerTestKit",
            dependencies: ["LoadBalancer"],
            swiftSettings: sharedSettings
        ),
        // The gRPC health-checking service's messages and stubs (code generated from
        // Protos/health.proto), for `lbctl bench --protocol grpc` and the loopback health servers.
        // A target of its own, under the CLI trait, so that LoadBalancerGRPC stays free of protobuf:
        // its users never build SwiftProtobuf for it.
        .target(
            name: "LoadBalancerGRPCHealth",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2", condition: .when(traits: ["CLI"])),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf", condition: .when(traits: ["CLI"])),
                .product(name: "SwiftProtobuf", package: "swift-protobuf", condition: .when(traits: ["CLI"])),
            ],
            swiftSettings: sharedSettings
        ),
        // Small HTTP and gRPC health servers on loopback with set latency and failure rates, for
        // `lbctl demo` and tests.
        .target(
            name: "LoadBalancerLocalBackends",
            dependencies: [
                "LoadBalancerGRPCHealth",
                .product(name: "GRPCCore", package: "grpc-swift-2", condition: .when(traits: ["CLI"])),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport", condition: .when(traits: ["CLI"])),
                .product(name: "NIOCore", package: "swift-nio", condition: .when(traits: ["CLI"])),
                .product(name: "NIOPosix", package: "swift-nio", condition: .when(traits: ["CLI"])),
                .product(name: "NIOHTTP1", package: "swift-nio", condition: .when(traits: ["CLI"])),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio", condition: .when(traits: ["CLI"])),
            ],
            swiftSettings: sharedSettings
        ),
        // The CLI: a thin layer over the library's public API.
        .executableTarget(
            name: "lbctl",
            dependencies: [
                "LoadBalancer",
                "LoadBalancerHTTP",
                "LoadBalancerDNS",
                "LoadBalancerEtcd",
                "LoadBalancerZooKeeper",
                "LoadBalancerConsul",
                "LoadBalancerSimulation",
                "LoadBalancerLocalBackends",
                // `bench --protocol grpc`: the balancing transport and the health service's stubs.
                "LoadBalancerGRPC",
                "LoadBalancerGRPCHealth",
                .product(name: "GRPCCore", package: "grpc-swift-2", condition: .when(traits: ["CLI"])),
                .product(name: "ArgumentParser", package: "swift-argument-parser", condition: .when(traits: ["CLI"])),
                .product(name: "AsyncHTTPClient", package: "async-http-client", condition: .when(traits: ["CLI"])),
                .product(name: "Histogram", package: "hdrhistogram-swift", condition: .when(traits: ["CLI"])),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOHTTP1", package: "swift-nio", condition: .when(traits: ["CLI"])),
            ],
            swiftSettings: sharedSettings
        ),
        // A runnable example of the core API over in-process endpoints.
        .executableTarget(
            name: "lb-example",
            dependencies: ["LoadBalancer"],
            path: "Examples/lb-example",
            swiftSettings: sharedSettings
        ),
        .testTarget(
            name: "LoadBalancerTests",
            dependencies: [
                "LoadBalancer",
                "LoadBalancerSimulation",
                "LoadBalancerTestKit",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryLogging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: sharedSettings
        ),
        .testTarget(
            name: "LoadBalancerTestKitTests",
            dependencies: ["LoadBalancer", "LoadBalancerTestKit"],
            swiftSettings: sharedSettings
        ),
        .testTarget(
            name: "LoadBalancerDNSTests",
            dependencies: [
                "LoadBalancerTestKit",
                "LoadBalancerTestServers",
                "LoadBalancer",
                "LoadBalancerDNS",
                "lbctl",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: sharedSettings
        ),
        .testTarget(
            name: "LoadBalancerEtcdTests",
            dependencies: [
                "LoadBalancerTestKit",
                "LoadBalancer",
                "LoadBalancerEtcd",
                "LoadBalancerTestServers",
                "LoadBalancerLocalBackends",
                "lbctl",
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: sharedSettings
        ),
        .testTarget(
            name: "LoadBalancerZooKeeperTests",
            dependencies: [
                "LoadBalancerTestKit",
                "LoadBalancer",
                "LoadBalancerZooKeeper",
                "LoadBalancerTestServers",
                "LoadBalancerTestSupport",
                "LoadBalancerLocalBackends",
                "lbctl",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryLogging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: sharedSettings
        ),
        .testTarget(
            name: "LoadBalancerConsulTests",
            dependencies: [
                "LoadBalancerTestKit",
                "LoadBalancer",
                "LoadBalancerConsul",
                "ConsulTestServer",
                "LoadBalancerTestServers",
                "lbctl",
                "LoadBalancerLocalBackends",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: sharedSettings
        ),
        .testTarget(
            name: "LoadBalancerGRPCTests",
            dependencies: [
                "LoadBalancerTestKit",
                "LoadBalancer",
                "LoadBalancerGRPC",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: sharedSettings
        ),
        .testTarget(
            name: "ReliabilityTests",
            dependencies: [
                "LoadBalancerTestKit",
                "LoadBalancer",
                "LoadBalancerHTTP",
                "LoadBalancerLocalBackends",
                "LoadBalancerGRPC",
                "LoadBalancerDNS",
                "LoadBalancerEtcd",
                "LoadBalancerZooKeeper",
                "LoadBalancerConsul",
                "ConsulTestServer",
                "LoadBalancerTestServers",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: sharedSettings
        ),
        .testTarget(
            name: "LbctlTests",
            dependencies: [
                "LoadBalancerTestKit",
                "LoadBalancerTestServers",
                "lbctl",
                "LoadBalancer",
                "LoadBalancerHTTP",
                "LoadBalancerLocalBackends",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: sharedSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)

// ThreadSanitizer over the whole package (scripts/sanitizers.sh --all thread, by hand; RELIABILITY.md
// has the figures): LB_SANITIZER_ALL=thread keeps every target and gives each the locks
// ThreadSanitizer can see (below). The Consul test server, which does not otherwise depend on the
// core, reaches the core's lock through it.
if Context.environment["LB_SANITIZER_ALL"] == "thread" {
    for target in package.targets {
        target.swiftSettings = [.enableUpcomingFeature("ExistentialAny"), .define("LB_TSAN_VISIBLE_LOCKS")]
        if target.name == "ConsulTestServer" {
            target.dependencies.append("LoadBalancer")
        }
    }
}

// The sanitizer runs of the unit tests (`scripts/sanitizers.sh`, part of the test command) set
// LB_SANITIZER_SUBSET to `thread` or `address`: the package is then the core, the simulation, DNS
// and ZooKeeper, with their unit tests (the suites that need a real registry server left out). The modules over
// AsyncHTTPClient and gRPC are not in it: with BoringSSL, gRPC and protobuf compiled under a
// sanitizer the build alone outgrows the CI budget. RELIABILITY.md lists what runs.
if let sanitizer = Context.environment["LB_SANITIZER_SUBSET"] {
    let kept: Set<String> = [
        "LoadBalancer", "LoadBalancerSimulation", "LoadBalancerDNS", "LoadBalancerZooKeeper", "LoadBalancerTestKit",
        "LoadBalancerTestSupport", "LoadBalancerTests", "LoadBalancerDNSTests", "LoadBalancerZooKeeperTests", "LoadBalancerTestKitTests",
    ]
    package.targets.removeAll { !kept.contains($0.name) }
    package.products.removeAll { !kept.contains($0.name) }
    for target in package.targets {
        switch target.name {
        case "LoadBalancerDNSTests":
            target.dependencies = [
                "LoadBalancerDNS",
                "LoadBalancerTestKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
            target.exclude = ["DNSIntegrationTests.swift", "LbctlDNSTests.swift", "DNSStartupTests.swift", "DNSTruncatedTCPTests.swift"]
        case "LoadBalancerZooKeeper":
            // Without swift-nio-ssl: BoringSSL under a sanitizer would outgrow the budget (above).
            // The client is built without TLS (LB_ZOOKEEPER_NO_TLS: a TLS configuration is then an
            // invalidArgument error); the TLS tests run in the normal build.
            target.dependencies = [
                "LoadBalancer",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        case "LoadBalancerZooKeeperTests":
            target.dependencies = [
                "LoadBalancer",
                "LoadBalancerTestKit",
                "LoadBalancerTestSupport",
                "LoadBalancerZooKeeper",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryLogging", package: "swift-log"),
            ]
            target.exclude = [
                "ZooKeeperIntegrationTests.swift", "LbctlZooKeeperTests.swift", "ZooKeeperStartupTests.swift",
                "ZooKeeperSecurityTests.swift", "ZooKeeperForeignFormatTests.swift", "ZooKeeperManyChildrenTests.swift",
                "ZooKeeperRecursiveWatchTests.swift",
            ]
        default:
            break
        }
        // ThreadSanitizer cannot see Synchronization.Mutex's contended path on Linux; under it the
        // package's Mutex is a pthread one (Sources/LoadBalancer/Internal/SanitizerMutex.swift),
        // which other modules reach through a typealias; MemberImportVisibility (a compile-time
        // check that the normal build makes) would want an import of LoadBalancer in every file
        // that takes a lock, so it is left out of this build.
        if sanitizer == "thread" {
            target.swiftSettings = [.enableUpcomingFeature("ExistentialAny"), .define("LB_TSAN_VISIBLE_LOCKS")]
        }
        if target.name == "LoadBalancerZooKeeper" {
            target.swiftSettings = (target.swiftSettings ?? []) + [.define("LB_ZOOKEEPER_NO_TLS")]
        }
    }
}
