// The module's external dependencies are used only with the trait enabled (see Package.swift):
// without it, say so before the compiler reports their modules missing.
#if !Etcd
#error("LoadBalancerEtcd needs the package trait Etcd: add \"Etcd\" to the traits of your swift-loadbalancer dependency, or use its default traits")
#endif
