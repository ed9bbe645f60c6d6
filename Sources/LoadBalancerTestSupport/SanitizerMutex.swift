#if LB_TSAN_VISIBLE_LOCKS
    // Under ThreadSanitizer (scripts/sanitizers.sh thread), the package's locks are ones it can see:
    // see Sources/LoadBalancer/Internal/SanitizerMutex.swift.
    import LoadBalancer

    typealias Mutex = LoadBalancer.Mutex
#endif
