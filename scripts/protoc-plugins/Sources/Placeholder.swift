// Nothing here: this package exists to build protoc-gen-swift and protoc-gen-grpc-swift-2.
