import Synchronization

/// Hands out the endpoints in turn.
///
/// ## Rotation
///
/// ``Rotation/perThread`` (the default) keeps one rotation per shard of the balancer's state (a
/// thread's picks rotate through every usable endpoint in turn; the threads start at random
/// offsets), so no cache line is written by every pick and picks scale with cores. Over many picks
/// every endpoint gets an even share; at any instant the shares differ by at most one pick per
/// shard in use. ``Rotation/exact`` keeps one counter for all threads (one atomic fetch-add per
/// pick): the picks split exactly evenly, at the cost of a cache line every picking core writes.
/// A balancer made with a `start` keeps one rotation, from that start, so its sequence is exact
/// and reproducible.
///
/// Without a `start`, each balancer starts at a random offset, so many clients created at once do
/// not all send their first request to the same instance. With an ``OutlierDetector``, ejected
/// instances are skipped (the rotation runs over the usable ones).
public final class RoundRobinBalancer<Request: Sendable, Response: Sendable>: CoreBalancer {
    /// How the rotation is kept.
    public enum Rotation: Sendable, Hashable {
        /// One rotation per thread (per shard): scales with cores; even over time.
        case perThread
        /// One rotation for all threads: exactly even; every pick writes one shared counter.
        case exact
    }

    @usableFromInline let core: BalancerCore<Request, Response, Strategy>
    /// The cache the balancer follows, if any.
    public let cache: EndpointCache<Request, Response>?
    /// How the rotation is kept.
    public let rotation: Rotation

    /// Creates a round-robin balancer over `endpoints`.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - start: The counter's first value. Default: random per thread. Given, the balancer keeps
    ///     one rotation from it (see ``Rotation``).
    ///   - rotation: How the rotation is kept. Default ``Rotation/perThread``.
    ///   - ejection: Outlier ejection to honour. Default: none.
    ///   - slowStart: Ramps the share of instances new to the set or back from ejection. Default: none.
    ///   - zones: Keeps traffic in the client's zone while it has the capacity (Envoy's zone-aware
    ///     routing); the balancer picks inside the zone chosen. Default: none.
    public convenience init(
        _ endpoints: EndpointCache<Request, Response>,
        start: UInt64? = nil,
        rotation: Rotation = .perThread,
        ejection: OutlierDetector? = nil,
        slowStart: SlowStart? = nil, zones: ZoneAwareRouting? = nil
    ) {
        self.init(source: .cache(endpoints), start: start, rotation: rotation, ejection: ejection, slowStart: slowStart, zones: zones)
    }

    /// Creates a round-robin balancer over a fixed array of endpoints (deduplicated by id, ordered by id).
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - start: The counter's first value. Default: random per thread.
    ///   - rotation: How the rotation is kept. Default ``Rotation/perThread``.
    ///   - ejection: Outlier ejection to honour. Default: none.
    ///   - slowStart: Ramps the share of instances new to the set or back from ejection. Default: none.
    ///   - zones: Keeps traffic in the client's zone while it has the capacity (Envoy's zone-aware
    ///     routing); the balancer picks inside the zone chosen. Default: none.
    public convenience init(
        endpoints: [Endpoint<Request, Response>],
        start: UInt64? = nil,
        rotation: Rotation = .perThread,
        ejection: OutlierDetector? = nil,
        slowStart: SlowStart? = nil, zones: ZoneAwareRouting? = nil
    ) {
        self.init(source: .fixed(endpoints), start: start, rotation: rotation, ejection: ejection, slowStart: slowStart, zones: zones)
    }

    init(
        source: SnapshotSource<Request, Response>, start: UInt64?, rotation: Rotation, ejection: OutlierDetector?, slowStart: SlowStart?,
        zones: ZoneAwareRouting?
    ) {
        self.cache = source.cache
        self.rotation = rotation
        let exact = rotation == .exact ? ExactCounter(initialState(start)) : nil
        self.core = BalancerCore(
            for: Self.self, source: source, ejection: ejection, strategy: Strategy(exact: exact), seed: nil, start: start,
            slowStart: slowStart, zones: zones)
    }

    @usableFromInline
    struct Strategy: PickStrategy {
        @usableFromInline let exact: ExactCounter?

        @usableFromInline init(exact: ExactCounter?) { self.exact = exact }

        @usableFromInline
        func makeTable(_ set: EndpointSetView, usable: [Int]) -> [Int] { usable }

        @inlinable @inline(__always)
        func choose(_ usable: [Int], _ state: inout PickState) -> Int? {
            guard !usable.isEmpty else { return nil }
            guard let exact else { return usable[state.rotate(count: usable.count)] }
            // The low 32 bits of the shared counter: a 32-bit division is several times cheaper
            // than a 64-bit one, and the rotation only skips a beat once every 2^32 picks.
            let n = exact.next()
            return usable[Int(truncatingIfNeeded: UInt32(truncatingIfNeeded: n) % UInt32(truncatingIfNeeded: usable.count))]
        }
    }
}

/// A rotation counter shared by every thread (one atomic fetch-add per pick, never a
/// compare-and-swap loop).
@usableFromInline
final class ExactCounter: Sendable {
    @usableFromInline let counter: Atomic<UInt64>
    init(_ start: UInt64) { counter = Atomic(start) }
    @inlinable @inline(__always)
    func next() -> UInt64 { counter.wrappingAdd(1, ordering: .relaxed).oldValue }
}
