/// Picks an endpoint uniformly at random.
///
/// Each shard of the balancer's state (see ``RoundRobinBalancer``'s notes on scaling) has its own
/// wyrand stream (a Weyl sequence whose every step is mixed by a 128-bit multiply), so concurrent
/// pickers share no written memory. With a seed, the balancer keeps one stream, so a sequence of
/// picks is reproducible.
///
/// With an ``OutlierDetector``, ejected instances are skipped.
public final class RandomBalancer<Request: Sendable, Response: Sendable>: CoreBalancer {
    @usableFromInline let core: BalancerCore<Request, Response, Strategy>
    /// The cache the balancer follows, if any.
    public let cache: EndpointCache<Request, Response>?

    /// Creates a random balancer over `endpoints`.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - seed: Makes the picks reproducible (for tests). Default: a random seed per thread.
    ///   - ejection: Outlier ejection to honour. Default: none.
    ///   - slowStart: Ramps the share of instances new to the set or back from ejection. Default: none.
    ///   - zones: Keeps traffic in the client's zone while it has the capacity (Envoy's zone-aware
    ///     routing); the balancer picks inside the zone chosen. Default: none.
    public convenience init(
        _ endpoints: EndpointCache<Request, Response>, seed: UInt64? = nil, ejection: OutlierDetector? = nil, slowStart: SlowStart? = nil,
        zones: ZoneAwareRouting? = nil
    ) {
        self.init(source: .cache(endpoints), seed: seed, ejection: ejection, slowStart: slowStart, zones: zones)
    }

    /// Creates a random balancer over a fixed array of endpoints (deduplicated by id, ordered by id).
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - seed: Makes the picks reproducible. Default: a random seed per thread.
    ///   - ejection: Outlier ejection to honour. Default: none.
    ///   - slowStart: Ramps the share of instances new to the set or back from ejection. Default: none.
    ///   - zones: Keeps traffic in the client's zone while it has the capacity (Envoy's zone-aware
    ///     routing); the balancer picks inside the zone chosen. Default: none.
    public convenience init(
        endpoints: [Endpoint<Request, Response>], seed: UInt64? = nil, ejection: OutlierDetector? = nil, slowStart: SlowStart? = nil,
        zones: ZoneAwareRouting? = nil
    ) {
        self.init(source: .fixed(endpoints), seed: seed, ejection: ejection, slowStart: slowStart, zones: zones)
    }

    init(
        source: SnapshotSource<Request, Response>, seed: UInt64?, ejection: OutlierDetector?, slowStart: SlowStart?,
        zones: ZoneAwareRouting?
    ) {
        self.cache = source.cache
        self.core = BalancerCore(
            for: Self.self, source: source, ejection: ejection, strategy: Strategy(), seed: seed, slowStart: slowStart, zones: zones)
    }

    @usableFromInline
    struct Strategy: PickStrategy {
        @usableFromInline init() {}

        @usableFromInline
        func makeTable(_ set: EndpointSetView, usable: [Int]) -> [Int] { usable }

        @inlinable @inline(__always)
        func choose(_ usable: [Int], _ state: inout PickState) -> Int? {
            guard !usable.isEmpty else { return nil }
            // Lemire's multiply-shift maps 64 random bits onto 0..<count without a division.
            let column = state.next().multipliedFullWidth(by: UInt64(usable.count)).high
            return usable[Int(truncatingIfNeeded: column)]
        }
    }
}
