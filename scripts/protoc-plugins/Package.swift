// swift-tools-version: 6.1
// Builds the two protoc plugins that scripts/generate-etcd-proto.sh and generate-health-proto.sh
// run. Not part of the library: the generated code is committed, so neither users nor CI build
// these plugins.
import PackageDescription

let package = Package(
    name: "protoc-plugins",
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", exact: "2.4.1"),
    ],
    targets: [
        // A placeholder target: SwiftPM needs one to build the dependencies' executables.
        .target(name: "ProtocPlugins", path: "Sources")
    ]
)
