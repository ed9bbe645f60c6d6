// The module's external dependencies are used only with the trait enabled (see Package.swift):
// without it, say so before the compiler reports their modules missing.
#if !GRPC
#error("LoadBalancerGRPC needs the package trait GRPC: add \"GRPC\" to the traits of your swift-loadbalancer dependency, or use its default traits")
#endif
