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
        try core.lease(choosingIn: { set, _ in set.endpoints.firstIndex { !ids.contains($0.id) } })
    }
    /// Ends a call: its outcome goes to the ejection detector, if any.
    @inlinable
    public func finish(_ lease: EndpointLease<Request, Response>, outcome: CallRecord.Outcome, latency: Duration) {
        core.finish(lease, outcome: outcome, latency: latency, endedAt: nil)
    }
    /// Ends a call that ended at `end`: its outcome goes to the ejection detector, if any.
    @inlinable
    public func finish(
        _ lease: EndpointLease<Request, Response>, outcome: CallRecord.Outcome, latency: Duration, endedAt end: ContinuousClock.Instant
    ) {
        core.finish(lease, outcome: outcome, latency: latency, endedAt: end)
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
    ///   - slowStart: Ramps the share of instances new to the set or back from ejection. Default: none.
    ///   - zones: Keeps traffic in the client's zone while it has the capacity (Envoy's zone-aware
    ///     routing); the balancer picks inside the zone chosen. Default: none.
    public convenience init(
        _ endpoints: EndpointCache<Request, Response>, start: UInt64? = nil, ejection: OutlierDetector? = nil, slowStart: SlowStart? = nil,
        zones: ZoneAwareRouting? = nil
    ) {
        self.init(source: .cache(endpoints), start: start, ejection: ejection, slowStart: slowStart, zones: zones)
    }

    /// Creates a smooth weighted round-robin balancer over a fixed array of endpoints.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - start: The counter's first value. Default: random per thread.
    ///   - ejection: Outlier ejection to honour. Default: none.
    ///   - slowStart: Ramps the share of instances new to the set or back from ejection. Default: none.
    ///   - zones: Keeps traffic in the client's zone while it has the capacity (Envoy's zone-aware
    ///     routing); the balancer picks inside the zone chosen. Default: none.
    public convenience init(
        endpoints: [Endpoint<Request, Response>], start: UInt64? = nil, ejection: OutlierDetector? = nil, slowStart: SlowStart? = nil,
        zones: ZoneAwareRouting? = nil
    ) {
        self.init(source: .fixed(endpoints), start: start, ejection: ejection, slowStart: slowStart, zones: zones)
    }

    init(
        source: SnapshotSource<Request, Response>, start: UInt64?, ejection: OutlierDetector?, slowStart: SlowStart?,
        zones: ZoneAwareRouting?
    ) {
        self.cache = source.cache
        self.core = BalancerCore(
            for: Self.self, source: source, ejection: ejection, strategy: Strategy(), seed: nil, start: start, slowStart: slowStart,
            zones: zones)
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
    ///   - slowStart: Ramps the share of instances new to the set or back from ejection. Default: none.
    ///   - zones: Keeps traffic in the client's zone while it has the capacity (Envoy's zone-aware
    ///     routing); the balancer picks inside the zone chosen. Default: none.
    public convenience init(
        _ endpoints: EndpointCache<Request, Response>, seed: UInt64? = nil, ejection: OutlierDetector? = nil, slowStart: SlowStart? = nil,
        zones: ZoneAwareRouting? = nil
    ) {
        self.init(source: .cache(endpoints), seed: seed, ejection: ejection, slowStart: slowStart, zones: zones)
    }

    /// Creates a weighted random balancer over a fixed array of endpoints.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - seed: Makes the picks reproducible. Default: random per thread.
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
        func makeTable(_ set: EndpointSetView, usable: [Int]) -> AliasTable {
            TableBuilders.aliasTable(set, usable)
        }

        @inlinable @inline(__always)
        func choose(_ table: AliasTable, _ state: inout PickState) -> Int? {
            table.isEmpty ? nil : table.pick(state.next())
        }
    }
}

/// DNS SRV priority levels (RFC 2782), with Envoy's gradual failover: the level with the lowest
/// ``Instance/priority`` value takes the traffic while enough of it is healthy, and traffic spills
/// to the next levels in proportion as it is not; inside a level, instances are chosen in
/// proportion to their weights.
///
/// Each level's *health* is its share of healthy (not ejected, see ``OutlierDetector``) instances
/// times ``Configuration/overprovisioningFactor``, in whole percent, capped at 100: with the
/// default 1.4 a level keeps all its traffic until fewer than about 72% of its instances are
/// healthy. Levels take traffic in order, each its health, until 100% is given: level 0 at 50%
/// healthy takes 70%, the next level 30%. When the levels' health adds up to less than 100%, each
/// level takes its health's share of the sum, and a level of which fewer than
/// ``Configuration/panicThreshold`` are healthy is *in panic*: its traffic goes to all its
/// instances, ejected or not (the detector's own ``OutlierDetector/Configuration/panicThreshold``
/// is not applied: this rule, per level, replaces it). With no healthy instance at all, the first
/// level takes the traffic on all its instances.
///
/// A level that comes back takes its traffic back as soon as it is healthy again. A very large
/// factor (such as `Double.greatestFiniteMagnitude`) gives strict failover: a level keeps all the
/// traffic while any of its instances is healthy.
public final class PriorityBalancer<Request: Sendable, Response: Sendable>: CoreBalancer {
    @usableFromInline let core: BalancerCore<Request, Response, Strategy>
    /// The cache the balancer follows, if any.
    public let cache: EndpointCache<Request, Response>?
    /// How traffic spreads over the levels.
    public var configuration: Configuration { core.strategy.configuration }

    /// How traffic spreads over priority levels.
    public struct Configuration: Sendable, Hashable {
        /// How much spare capacity each level is taken to have: a level counts as fully healthy
        /// while its healthy share times this factor is at least 1. Default 1.4 (Envoy's).
        public var overprovisioningFactor: Double = 1.4
        /// When the levels together lack healthy capacity, a level with fewer than this share of
        /// healthy instances sends its traffic to all its instances. Default 0.5.
        public var panicThreshold: Double = 0.5

        /// The default configuration.
        public init() {}

        /// The defaults, changed by `configure`.
        public static func defaults(_ configure: (inout Configuration) -> Void) -> Configuration {
            var configuration = Configuration()
            configure(&configuration)
            return configuration
        }
    }

    /// Creates a priority balancer over `endpoints`.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - configuration: How traffic spreads over the levels. Default: Envoy's (factor 1.4, panic below 50%).
    ///   - seed: Makes the picks reproducible. Default: random per thread.
    ///   - ejection: Outlier ejection to honour. Default: none.
    ///   - slowStart: Ramps the share of instances new to the set or back from ejection. Default: none.
    ///   - zones: Keeps traffic in the client's zone while it has the capacity (Envoy's zone-aware
    ///     routing); the balancer picks inside the zone chosen. Default: none.
    public convenience init(
        _ endpoints: EndpointCache<Request, Response>,
        configuration: Configuration = Configuration(),
        seed: UInt64? = nil,
        ejection: OutlierDetector? = nil,
        slowStart: SlowStart? = nil, zones: ZoneAwareRouting? = nil
    ) {
        self.init(
            source: .cache(endpoints), configuration: configuration, seed: seed, ejection: ejection, slowStart: slowStart, zones: zones)
    }

    /// Creates a priority balancer over a fixed array of endpoints.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - configuration: How traffic spreads over the levels. Default: Envoy's (factor 1.4, panic below 50%).
    ///   - seed: Makes the picks reproducible. Default: random per thread.
    ///   - ejection: Outlier ejection to honour. Default: none.
    ///   - slowStart: Ramps the share of instances new to the set or back from ejection. Default: none.
    ///   - zones: Keeps traffic in the client's zone while it has the capacity (Envoy's zone-aware
    ///     routing); the balancer picks inside the zone chosen. Default: none.
    public convenience init(
        endpoints: [Endpoint<Request, Response>],
        configuration: Configuration = Configuration(),
        seed: UInt64? = nil,
        ejection: OutlierDetector? = nil,
        slowStart: SlowStart? = nil, zones: ZoneAwareRouting? = nil
    ) {
        self.init(
            source: .fixed(endpoints), configuration: configuration, seed: seed, ejection: ejection, slowStart: slowStart, zones: zones)
    }

    init(
        source: SnapshotSource<Request, Response>, configuration: Configuration, seed: UInt64?, ejection: OutlierDetector?,
        slowStart: SlowStart?, zones: ZoneAwareRouting?
    ) {
        self.cache = source.cache
        self.core = BalancerCore(
            for: Self.self,
            source: source,
            ejection: ejection,
            strategy: Strategy(configuration: configuration, ejection: ejection),
            seed: seed,
            slowStart: slowStart, zones: zones
        )
    }

    /// Each level's share of the traffic in percent (summing to 100 when there is a level), and
    /// whether it is in panic, for levels (in order) with `healthy` of `total` instances healthy.
    package static func priorityLoads(healthy: [Int], total: [Int], configuration: Configuration) -> (loads: [Int], panic: [Bool]) {
        var loads = [Int](repeating: 0, count: total.count)
        var panic = [Bool](repeating: false, count: total.count)
        guard !total.isEmpty else { return (loads, panic) }
        // In whole percent, as Envoy computes it (and capped, so that a huge factor cannot overflow).
        let factor = Int(min(1_000_000_000, max(0, (configuration.overprovisioningFactor * 100).rounded())))
        let health = zip(healthy, total).map { healthy, total in total == 0 ? 0 : min(100, healthy * factor / total) }
        let sum = health.reduce(0, +)
        if sum == 0 {
            loads[0] = 100
            panic[0] = true
        } else if sum >= 100 {
            var left = 100
            for level in health.indices {
                loads[level] = min(health[level], left)
                left -= loads[level]
            }
        } else {
            for level in health.indices {
                loads[level] = health[level] * 100 / sum
                panic[level] = Double(healthy[level]) < configuration.panicThreshold * Double(total[level])
            }
            // What rounding left over goes to the first level that takes traffic.
            if let first = loads.firstIndex(where: { $0 > 0 }) { loads[first] += 100 - loads.reduce(0, +) }
        }
        return (loads, panic)
    }

    @usableFromInline
    struct Strategy: PickStrategy {
        @usableFromInline
        struct Table: Sendable {
            /// The levels that take traffic, by their share (indices into `members`).
            @usableFromInline var levels: AliasTable
            /// Per level that takes traffic: its instances that do, by weight.
            @usableFromInline var members: [AliasTable]
            /// Every level, for observers; and for each of `members` its level's index here.
            var info: [PriorityLevelState] = []
            var memberLevels: [Int] = []
        }

        let configuration: Configuration
        let ejection: OutlierDetector?

        init(configuration: Configuration, ejection: OutlierDetector?) {
            self.configuration = configuration
            self.ejection = ejection
        }

        /// The levels from the instances' own ejection flags (`usable` has the detector's panic
        /// rule applied to the whole set; the levels apply theirs).
        @usableFromInline
        func makeTable(_ set: EndpointSetView, usable: [Int]) -> Table {
            makeTable(set, usable: usable, scope: Array(set.instances.indices))
        }

        /// The levels of the positions `scope` (the whole set, or a zone's).
        @usableFromInline
        func makeTable(_ set: EndpointSetView, usable: [Int], scope: [Int]) -> Table {
            var byPriority: [Int: [Int]] = [:]
            for position in scope { byPriority[set.instances[position].priority, default: []].append(position) }
            let levels = byPriority.keys.sorted().map { byPriority[$0]! }
            let healthy = levels.map { level in level.filter { ejection?.isEjected(slot: set.slots[$0]) != true } }
            let (loads, panic) = PriorityBalancer.priorityLoads(
                healthy: healthy.map(\.count), total: levels.map(\.count), configuration: configuration)
            var members: [AliasTable] = []
            var shares: [UInt64] = []
            var memberLevels: [Int] = []
            for level in levels.indices where loads[level] > 0 {
                members.append(TableBuilders.aliasTable(set, panic[level] ? levels[level] : healthy[level]))
                shares.append(UInt64(loads[level]))
                memberLevels.append(level)
            }
            let priorities = byPriority.keys.sorted()
            let info = levels.indices.map { level in
                PriorityLevelState(
                    priority: priorities[level], share: loads[level], panic: panic[level], healthy: healthy[level].count,
                    total: levels[level].count)
            }
            return Table(
                levels: TableBuilders.aliasTable(values: Array(members.indices), weights: shares), members: members, info: info,
                memberLevels: memberLevels)
        }

        @usableFromInline
        func levels(_ table: Table) -> [PriorityLevelState] { table.info }

        /// ``choose(_:_:)`` with the same draws, recording the level drawn.
        @usableFromInline
        func explainedChoice(
            _ table: Table, _ state: inout PickState, _ set: EndpointSetView, _ explanation: inout PickExplanation
        ) -> Int? {
            let member: Int
            if table.members.count == 1 {
                member = 0
            } else {
                guard let drawn = table.levels.pick(state.next()) else { return nil }
                member = drawn
            }
            guard member < table.members.count else { return nil }
            explanation.level = table.info[table.memberLevels[member]]
            return table.members[member].pick(state.next())
        }

        @inlinable @inline(__always)
        func choose(_ table: Table, _ state: inout PickState) -> Int? {
            if table.members.count == 1 { return table.members[0].pick(state.next()) }
            guard let level = table.levels.pick(state.next()) else { return nil }
            return table.members[level].pick(state.next())
        }
    }
}
