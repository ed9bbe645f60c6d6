/// The members every built-in balancer forwards to its ``BalancerCore``.
@usableFromInline
protocol CoreBalancer: Balancer {
    associatedtype Strategy: PickStrategy
    var core: BalancerCore<Request, Response, Strategy> { get }
}

extension CoreBalancer {
    /// The endpoints the balancer chooses among now.
    public var snapshot: EndpointSet<Request, Response> { core.snapshot }
    /// The ejection this balancer honours, if any.
    @inlinable
    public var ejection: OutlierDetector? { core.ejection }
    /// Picks an endpoint of the current set.
    ///
    /// - Throws: ``LoadBalancerError`` with code ``LoadBalancerError/Code/noEndpoints`` when the set is empty.
    @inlinable
    public func pick() throws(LoadBalancerError) -> EndpointPick { try core.pick() }
    /// Picks an endpoint of the current set for a call.
    @inlinable
    public func lease() throws(LoadBalancerError) -> EndpointLease<Request, Response> { try core.lease() }
    /// A lease of the first endpoint of the current set whose id is not in `ids`.
    public func lease(avoiding ids: Set<String>) throws(LoadBalancerError) -> EndpointLease<Request, Response>? {
        try core.lease(choosingIn: { set in set.endpoints.firstIndex { !ids.contains($0.id) } })
    }
    /// Ends a call: its outcome goes to the ejection detector, if any.
    @inlinable
    public func finish(_ lease: EndpointLease<Request, Response>, outcome: CallRecord.Outcome, latency: Duration) {
        core.finish(lease, outcome: outcome, latency: latency)
    }
    /// Whether calls are reported: only when there is an ``ejection`` detector to learn from them.
    @inlinable
    public var observesCalls: Bool { core.ejection != nil }
    /// Passes the call's outcome to the ejection detector, if any.
    public func record(_ call: CallRecord) { core.ejection?.record(call) }
}

/// Smooth weighted round robin: each instance gets traffic in proportion to its ``Instance/weight``,
/// spread evenly through the cycle (weights 5, 1, 1 give `a a b a c a a`-like interleaving, not
/// `a a a a a b c`).
///
/// The cycle is computed once per endpoint-set change (and per ejection change); a pick is a step
/// of the calling thread's rotation through it (see ``RoundRobinBalancer/Rotation``; with a
/// `start`, one rotation for all). Weight-0 instances are used only when every usable instance has
/// weight 0.
public final class WeightedRoundRobinBalancer<Request: Sendable, Response: Sendable>: CoreBalancer {
    @usableFromInline let core: BalancerCore<Request, Response, Strategy>
    /// The cache the balancer follows, if any.
    public let cache: EndpointCache<Request, Response>?

    /// Creates a smooth weighted round-robin balancer over `endpoints`.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - start: The counter's first value. Default: random per thread.
    ///   - ejection: Outlier ejection to honour. Default: none.
    public convenience init(_ endpoints: EndpointCache<Request, Response>, start: UInt64? = nil, ejection: OutlierDetector? = nil) {
        self.init(source: .cache(endpoints), start: start, ejection: ejection)
    }

    /// Creates a smooth weighted round-robin balancer over a fixed array of endpoints.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - start: The counter's first value. Default: random per thread.
    ///   - ejection: Outlier ejection to honour. Default: none.
    public convenience init(endpoints: [Endpoint<Request, Response>], start: UInt64? = nil, ejection: OutlierDetector? = nil) {
        self.init(source: .fixed(endpoints), start: start, ejection: ejection)
    }

    init(source: SnapshotSource<Request, Response>, start: UInt64?, ejection: OutlierDetector?) {
        self.cache = source.cache
        self.core = BalancerCore(for: Self.self, source: source, ejection: ejection, strategy: Strategy(), seed: nil, start: start)
    }

    @usableFromInline
    struct Strategy: PickStrategy {
        @usableFromInline init() {}

        @usableFromInline
        func makeTable(_ set: EndpointSetView, usable: [Int]) -> [Int] {
            usable.isEmpty ? [] : TableBuilders.smoothSchedule(set, usable)
        }

        @inlinable @inline(__always)
        func choose(_ schedule: [Int], _ state: inout PickState) -> Int? {
            guard !schedule.isEmpty else { return nil }
            return schedule[state.rotate(count: schedule.count)]
        }
    }
}

/// Weighted random: each pick chooses an instance with probability proportional to its
/// ``Instance/weight``, in O(1) through an alias table rebuilt on each set (or ejection) change.
public final class WeightedRandomBalancer<Request: Sendable, Response: Sendable>: CoreBalancer {
    @usableFromInline let core: BalancerCore<Request, Response, Strategy>
    /// The cache the balancer follows, if any.
    public let cache: EndpointCache<Request, Response>?

    /// Creates a weighted random balancer over `endpoints`.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - seed: Makes the picks reproducible. Default: random per thread.
    ///   - ejection: Outlier ejection to honour. Default: none.
    public convenience init(_ endpoints: EndpointCache<Request, Response>, seed: UInt64? = nil, ejection: OutlierDetector? = nil) {
        self.init(source: .cache(endpoints), seed: seed, ejection: ejection)
    }

    /// Creates a weighted random balancer over a fixed array of endpoints.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - seed: Makes the picks reproducible. Default: random per thread.
    ///   - ejection: Outlier ejection to honour. Default: none.
    public convenience init(endpoints: [Endpoint<Request, Response>], seed: UInt64? = nil, ejection: OutlierDetector? = nil) {
        self.init(source: .fixed(endpoints), seed: seed, ejection: ejection)
    }

    init(source: SnapshotSource<Request, Response>, seed: UInt64?, ejection: OutlierDetector?) {
        self.cache = source.cache
        self.core = BalancerCore(for: Self.self, source: source, ejection: ejection, strategy: Strategy(), seed: seed)
    }

    @usableFromInline
    struct Strategy: PickStrategy {
        @usableFromInline init() {}

        @usableFromInline
        func makeTable(_ set: EndpointSetView, usable: [Int]) -> AliasTable {
            TableBuilders.aliasTable(set, usable)
        }

        @inlinable @inline(__always)
        func choose(_ table: AliasTable, _ state: inout PickState) -> Int? {
            table.isEmpty ? nil : table.pick(state.next())
        }
    }
}

/// DNS SRV priority levels: all traffic goes to the instances with the lowest ``Instance/priority``
/// value that has usable instances, chosen among them in proportion to their weights (RFC 2782).
///
/// When every instance of that level is ejected (see ``OutlierDetector``) or gone, traffic falls
/// over to the next level, and it comes back as soon as an instance of the better level is usable
/// again. In panic mode (too few healthy instances overall) ejection is ignored.
public final class PriorityBalancer<Request: Sendable, Response: Sendable>: CoreBalancer {
    @usableFromInline let core: BalancerCore<Request, Response, Strategy>
    /// The cache the balancer follows, if any.
    public let cache: EndpointCache<Request, Response>?

    /// Creates a priority balancer over `endpoints`.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - seed: Makes the picks reproducible. Default: random per thread.
    ///   - ejection: Outlier ejection to honour. Default: none.
    public convenience init(_ endpoints: EndpointCache<Request, Response>, seed: UInt64? = nil, ejection: OutlierDetector? = nil) {
        self.init(source: .cache(endpoints), seed: seed, ejection: ejection)
    }

    /// Creates a priority balancer over a fixed array of endpoints.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - seed: Makes the picks reproducible. Default: random per thread.
    ///   - ejection: Outlier ejection to honour. Default: none.
    public convenience init(endpoints: [Endpoint<Request, Response>], seed: UInt64? = nil, ejection: OutlierDetector? = nil) {
        self.init(source: .fixed(endpoints), seed: seed, ejection: ejection)
    }

    init(source: SnapshotSource<Request, Response>, seed: UInt64?, ejection: OutlierDetector?) {
        self.cache = source.cache
        self.core = BalancerCore(for: Self.self, source: source, ejection: ejection, strategy: Strategy(), seed: seed)
    }

    @usableFromInline
    struct Strategy: PickStrategy {
        @usableFromInline init() {}

        @usableFromInline
        func makeTable(_ set: EndpointSetView, usable: [Int]) -> AliasTable {
            TableBuilders.aliasTable(set, TableBuilders.lowestPriorityLevel(set, usable))
        }

        @inlinable @inline(__always)
        func choose(_ table: AliasTable, _ state: inout PickState) -> Int? {
            table.isEmpty ? nil : table.pick(state.next())
        }
    }
}
