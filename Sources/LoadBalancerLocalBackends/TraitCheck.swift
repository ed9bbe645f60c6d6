// The module's external dependencies are used only with the trait enabled (see Package.swift):
// without it, say so before the compiler reports their modules missing.
#if !CLI
#error("LoadBalancerLocalBackends is built with the package trait CLI (it enables every registry backend): add \"CLI\" to the traits of your swift-loadbalancer dependency, or use its default traits")
#endif
