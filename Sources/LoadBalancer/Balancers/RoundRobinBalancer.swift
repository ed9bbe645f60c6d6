import Synchronization

/// Hands out the endpoints in turn.
///
/// One atomic fetch-add per pick (never a compare-and-swap loop), and the counter starts at a random
/// offset, so many clients created at once do not all send their first request to the same instance.
public final class RoundRobinBalancer<Request: Sendable, Response: Sendable>: Balancer {
    public let endpoints: EndpointCache<Request, Response>
    @usableFromInline
    let counter: Atomic<UInt64>

    /// Creates a round-robin balancer over `endpoints`.
    ///
    /// - Parameter start: The counter's first value. Default: random.
    public init(_ endpoints: EndpointCache<Request, Response>, start: UInt64? = nil) {
        self.endpoints = endpoints
        var generator = SystemRandomNumberGenerator()
        self.counter = Atomic(start ?? generator.next())
    }

    @inlinable
    public func pick() throws(LoadBalancerError) -> EndpointPick {
        let shape = endpoints.shape
        guard shape.count > 0 else { throw .noEndpoints }
        let n = counter.wrappingAdd(1, ordering: .relaxed).oldValue
        return EndpointPick(index: Int(truncatingIfNeeded: n % UInt64(truncatingIfNeeded: shape.count)), generation: shape.generation)
    }
}
