// swift-tools-version:6.2
import PackageDescription

/// Settings every target of the package shares: Swift 6 language mode (set at the package level)
/// plus the upcoming features the project opts into.
let sharedSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "swift-loadbalancer",
    platforms: [
        // Synchronization's Atomic and Mutex need these.
        .macOS(.v15), .iOS(.v18), .tvOS(.v18), .watchOS(.v11), .visionOS(.v2),
    ],
    products: [
        .library(name: "LoadBalancer", targets: ["LoadBalancer"]),
        .library(name: "LoadBalancerSimulation", targets: ["LoadBalancerSimulation"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
    ],
    targets: [
        // The core: instances, publishers, the endpoint cache, balancers, retry.
        // Depends on API packages only, so a user of one backend never builds another.
        .target(
            name: "LoadBalancer",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
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
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryLogging", package: "swift-log"),
            ],
            swiftSettings: sharedSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
