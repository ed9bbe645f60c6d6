// The module's external dependencies are used only with the trait enabled (see Package.swift):
// without it, say so before the compiler reports their modules missing (the file is named to
// come first: the compiler stops at the first file whose imports are missing).
#if !CLI
    #error(
        "LoadBalancerGRPCHealth is built with the package trait CLI (it enables every registry backend): add \"CLI\" to the traits of your swift-loadbalancer dependency, or use its default traits"
    )
#endif
