/// A type-erased balancer, for choosing the algorithm at run time (from configuration, say).
///
/// ```swift
/// let balancer: AnyBalancer<Req, Resp> = useRandom ? AnyBalancer(RandomBalancer(cache)) : AnyBalancer(RoundRobinBalancer(cache))
/// ```
///
/// A pick or a call through it costs one dynamic dispatch more than through the concrete balancer.
public struct AnyBalancer<Request: Sendable, Response: Sendable>: Balancer {
    /// The wrapped balancer.
    public let base: any Balancer<Request, Response>
    /// The wrapped balancer's cache, if any.
    public let cache: EndpointCache<Request, Response>?

    /// Wraps `base`.
    public init(_ base: some Balancer<Request, Response>) {
        self.base = base
        self.cache = base.cache
    }

    /// The wrapped balancer's current set.
    public var snapshot: EndpointSet<Request, Response> { base.snapshot }

    /// Picks with the wrapped balancer.
    public func pick() throws(LoadBalancerError) -> EndpointPick { try base.pick() }

    /// Leases with the wrapped balancer.
    public func lease() throws(LoadBalancerError) -> EndpointLease<Request, Response> { try base.lease() }

    /// Leases an untried endpoint with the wrapped balancer.
    public func lease(avoiding ids: Set<String>) throws(LoadBalancerError) -> EndpointLease<Request, Response>? {
        try base.lease(avoiding: ids)
    }

    /// Ends a call with the wrapped balancer.
    public func finish(_ lease: EndpointLease<Request, Response>, outcome: CallRecord.Outcome, latency: Duration) {
        base.finish(lease, outcome: outcome, latency: latency)
    }

    /// Ends a call that ended at `end` with the wrapped balancer.
    public func finish(
        _ lease: EndpointLease<Request, Response>, outcome: CallRecord.Outcome, latency: Duration, endedAt end: ContinuousClock.Instant
    ) {
        base.finish(lease, outcome: outcome, latency: latency, endedAt: end)
    }

    /// Whether the wrapped balancer learns from calls.
    public var observesCalls: Bool { base.observesCalls }

    /// Passes the start of a call on to the wrapped balancer.
    public func willCall(_ pick: EndpointPick, slot: UInt32) { base.willCall(pick, slot: slot) }

    /// Passes the outcome of a call on to the wrapped balancer.
    public func record(_ call: CallRecord) { base.record(call) }
}
