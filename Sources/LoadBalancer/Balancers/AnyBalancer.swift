/// A type-erased balancer, for choosing the algorithm at run time (from configuration, say).
///
/// ```swift
/// let balancer: AnyBalancer<Req, Resp> = useRandom ? AnyBalancer(RandomBalancer(cache)) : AnyBalancer(RoundRobinBalancer(cache))
/// ```
///
/// A pick through it costs one dynamic dispatch more than through the concrete balancer.
public struct AnyBalancer<Request: Sendable, Response: Sendable>: Balancer {
    /// The wrapped balancer.
    public let base: any Balancer<Request, Response>

    /// Wraps `base`.
    public init(_ base: some Balancer<Request, Response>) {
        self.base = base
    }

    /// The wrapped balancer's endpoints.
    public var endpoints: EndpointCache<Request, Response> { base.endpoints }

    /// Picks with the wrapped balancer.
    public func pick() throws(LoadBalancerError) -> EndpointPick { try base.pick() }

    /// Whether the wrapped balancer learns from calls.
    public var observesCalls: Bool { base.observesCalls }

    /// Passes the start of a call on to the wrapped balancer.
    public func willCall(_ pick: EndpointPick, slot: UInt32) { base.willCall(pick, slot: slot) }

    /// Passes the outcome of a call on to the wrapped balancer.
    public func record(_ call: CallRecord) { base.record(call) }
}
