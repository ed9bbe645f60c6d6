/// Consistent hashing for affinity: the same key goes to the same instance while the set allows,
/// and when one of N instances leaves only about 1/N of the keys move (Maglev hashing, Eisenbud et
/// al., NSDI 2016).
///
/// The lookup table has ``tableSize`` entries (a prime; default 65,537, good for sets of up to a
/// few hundred instances — use a larger prime, such as 655,373, for more) and is rebuilt when the
/// set or the ejections change (off the pick path: the first pick after a change builds it once for
/// all threads). A pick is a hash and one table read. Instances own entries in proportion to their
/// ``Instance/weight`` (weight-0 instances none, unless every usable instance has weight 0); with
/// equal weights the table is Maglev's own.
///
/// **A key's instances.** Each key has an order of preference over the instances: its own
/// instance first, then the instances the table gives for rehashes of the key, each instance once
/// (``instances(forKey:count:)``). Retries and hedges of a keyed call go down that order
/// (``Retry/callAsFunction(_:key:)``), so a key's second attempt always lands on the same second
/// instance, and a key never spreads over the whole set.
///
/// **Bounded load** (``BoundedLoad``, off by default): no instance takes more than `factor` times
/// the mean number of calls in flight (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with
/// Bounded Loads", 2018). A key whose instance is full goes to the next instance of its order that
/// is not, so hot keys spill over a few instances instead of overloading one. Calls are counted from
/// lease to finish (``lease(forKey:)``, ``withEndpoint(forKey:isolation:_:)``, `call`, ``Retry``).
///
/// ```swift
/// let balancer = ConsistentHashBalancer(cache)
/// let response = try await balancer.withEndpoint(forKey: userID) { endpoint in try await endpoint(request) }
/// // Or through Retry: the first attempt on the key's instance, retries on its next ones.
/// let reply = try await Retry(balancer, maxAttempts: 3, timeout: .seconds(2))(request, key: userID)
/// ```
public final class ConsistentHashBalancer<Request: Sendable, Response: Sendable>: CoreBalancer, KeyedBalancer {
    @usableFromInline let core: BalancerCore<Request, Response, Strategy>
    /// The cache the balancer follows, if any.
    public let cache: EndpointCache<Request, Response>?
    /// The number of entries of the lookup table.
    public var tableSize: Int { core.strategy.size }
    /// The load bound, if any.
    public var boundedLoad: BoundedLoad? { core.strategy.bound }

    /// Bounded-load consistent hashing: no instance takes more than ``factor`` times the mean number
    /// of calls in flight (rounded up).
    public struct BoundedLoad: Sendable, Hashable {
        /// The most an instance may carry, as a multiple of the mean calls in flight, above 1.
        /// Default 1.25: an instance carries at most 25% more than the mean.
        public var factor: Double

        /// Creates a bound; a factor of 1 or less is taken as 1.01.
        public init(factor: Double = 1.25) {
            self.factor = factor > 1 ? factor : 1.01
        }
    }

    /// Creates a consistent-hash balancer over `endpoints`.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - tableSize: The lookup table's size; should be a prime well above 100 × the set size.
    ///   - ejection: Outlier ejection to honour. Default: none.
    ///   - slowStart: Ramps the share of instances new to the set or back from ejection. Default: none.
    ///   - zones: Keeps traffic in the client's zone while it has the capacity (Envoy's zone-aware
    ///     routing); the balancer picks inside the zone chosen. Default: none.
    ///   - boundedLoad: Caps each instance's calls in flight. Default: none (pure affinity).
    public convenience init(
        _ endpoints: EndpointCache<Request, Response>, tableSize: Int = 65_537, ejection: OutlierDetector? = nil,
        slowStart: SlowStart? = nil, zones: ZoneAwareRouting? = nil, boundedLoad: BoundedLoad? = nil
    ) {
        self.init(
            source: .cache(endpoints), tableSize: tableSize, ejection: ejection, slowStart: slowStart, zones: zones,
            boundedLoad: boundedLoad)
    }

    /// Creates a consistent-hash balancer over a fixed array of endpoints.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - tableSize: The lookup table's size; should be a prime well above 100 × the set size.
    ///   - ejection: Outlier ejection to honour. Default: none.
    ///   - slowStart: Ramps the share of instances new to the set or back from ejection. Default: none.
    ///   - zones: Keeps traffic in the client's zone while it has the capacity (Envoy's zone-aware
    ///     routing); the balancer picks inside the zone chosen. Default: none.
    ///   - boundedLoad: Caps each instance's calls in flight. Default: none (pure affinity).
    public convenience init(
        endpoints: [Endpoint<Request, Response>], tableSize: Int = 65_537, ejection: OutlierDetector? = nil, slowStart: SlowStart? = nil,
        zones: ZoneAwareRouting? = nil,
        boundedLoad: BoundedLoad? = nil
    ) {
        self.init(
            source: .fixed(endpoints), tableSize: tableSize, ejection: ejection, slowStart: slowStart, zones: zones,
            boundedLoad: boundedLoad)
    }

    init(
        source: SnapshotSource<Request, Response>, tableSize: Int, ejection: OutlierDetector?, slowStart: SlowStart?,
        zones: ZoneAwareRouting?,
        boundedLoad: BoundedLoad?
    ) {
        self.cache = source.cache
        self.core = BalancerCore(
            for: Self.self, source: source, ejection: ejection, strategy: Strategy(size: max(2, tableSize), bound: boundedLoad), seed: nil,
            slowStart: slowStart, zones: zones
        )
    }

    @usableFromInline
    final class Strategy: PickStrategy {
        @usableFromInline
        struct Table: Sendable {
            /// The Maglev table: a position of the set per entry.
            @usableFromInline var entries: [Int32]
            /// With a load bound: the usable positions, and every position's load (owned here, so
            /// that `views` stay valid) with its words, which picks read without reference counting.
            @usableFromInline var usable: [Int]
            @usableFromInline var loads: [InstanceLoad]
            @usableFromInline var views: [InstanceLoadView]
        }

        @usableFromInline let size: Int
        @usableFromInline let bound: BoundedLoad?
        /// With a load bound: the loads of the newest table's instances, by id (calls in flight
        /// survive a set change).
        private let loadsByID = LoadsByID()

        init(size: Int, bound: BoundedLoad?) {
            self.size = size
            self.bound = bound
        }

        @usableFromInline
        func makeTable(_ set: EndpointSetView, usable: [Int]) -> Table {
            let entries = ConsistentHashBalancer.maglevTable(set, usable, size: size)
            guard bound != nil else { return Table(entries: entries, usable: usable, loads: [], views: []) }
            let loads = loadsByID.loads(for: set)
            return Table(entries: entries, usable: usable, loads: loads, views: loads.map(\.view))
        }

        @usableFromInline
        func load(_ table: Table, at index: Int) -> InstanceLoad? { table.loads.isEmpty ? nil : table.loads[index] }

        /// A random key's entry (for callers without affinity).
        @inlinable @inline(__always)
        func choose(_ table: Table, _ state: inout PickState) -> Int? {
            lookup(table, state.next())
        }

        /// The entry of `hash`, in the table.
        @inlinable @inline(__always)
        func entry(_ table: Table, _ hash: UInt64) -> Int? {
            guard !table.entries.isEmpty else { return nil }
            let entry = WyRand.mix(hash).multipliedFullWidth(by: UInt64(table.entries.count)).high
            return Int(table.entries[Int(truncatingIfNeeded: entry)])
        }

        /// The `attempt`-th hash of a key's order of preference (the key's own hash first).
        @inlinable @inline(__always)
        static func rehash(_ hash: UInt64, _ attempt: Int) -> UInt64 {
            attempt == 0 ? hash : WyRand.mix(hash ^ (UInt64(truncatingIfNeeded: attempt) &* 0x9e37_79b9_7f4a_7c15))
        }

        /// The key's instances in order of preference, each once, at most `count` (the rehashes
        /// walked are bounded; the usable positions the walk missed follow in table order).
        @usableFromInline
        func preference(_ table: Table, _ hash: UInt64, count: Int) -> [Int] {
            var order: [Int] = []
            let wanted = min(count, table.usable.count)
            guard wanted > 0 else { return [] }
            var attempt = 0
            while order.count < wanted, attempt < 8 * wanted + 32 {
                if let position = entry(table, Self.rehash(hash, attempt)), !order.contains(position) { order.append(position) }
                attempt += 1
            }
            if order.count < wanted {
                for position in table.entries.lazy.map({ Int($0) }) where !order.contains(position) {
                    order.append(position)
                    if order.count == wanted { break }
                }
            }
            return order
        }

        /// The position for `hash`: its entry, or with a load bound the first instance of the key's
        /// order whose calls in flight are under the bound (the least loaded seen when none is).
        @inlinable
        func lookup(_ table: Table, _ hash: UInt64) -> Int? {
            guard let first = entry(table, hash) else { return nil }
            guard let bound, !table.views.isEmpty else { return first }
            let firstLoad = table.views[first].outstanding
            // An instance with nothing in flight is always under the bound (which is at least 1).
            if firstLoad == 0 { return first }
            return boundedChoice(table, hash, first: first, firstLoad: firstLoad, factor: bound.factor)
        }

        /// The most calls in flight an instance may carry with one more call: `factor` times the
        /// mean over the usable instances, the new call counted, rounded up.
        @usableFromInline
        func capacity(_ table: Table, factor: Double) -> Double {
            var total = 0.0
            for position in table.usable { total += table.views[position].outstanding }
            return (factor * (total + 1) / Double(table.usable.count)).rounded(.up)
        }

        @usableFromInline
        func boundedChoice(_ table: Table, _ hash: UInt64, first: Int, firstLoad: Double, factor: Double) -> Int {
            let capacity = capacity(table, factor: factor)
            if firstLoad + 1 <= capacity { return first }
            var best = first
            var bestLoad = firstLoad
            var seen = [first]
            var attempt = 1
            while seen.count < table.usable.count, attempt < 8 * table.usable.count + 32 {
                defer { attempt += 1 }
                guard let position = entry(table, Self.rehash(hash, attempt)), !seen.contains(position) else { continue }
                seen.append(position)
                let load = table.views[position].outstanding
                if load + 1 <= capacity { return position }
                if load < bestLoad {
                    best = position
                    bestLoad = load
                }
            }
            return best
        }
    }

    /// The endpoint for `key`'s hash.
    public func pick(forHash hash: UInt64) throws(LoadBalancerError) -> EndpointPick {
        let strategy = core.strategy
        return try core.pick(hash: hash) { table, hash in strategy.lookup(table, hash) }
    }

    /// The endpoint for `key`. The same key maps to the same instance across processes and runs
    /// (the hash is FNV-1a over the key's UTF-8, not Swift's per-process seeded `Hasher`).
    public func pick(forKey key: String) throws(LoadBalancerError) -> EndpointPick {
        try pick(forHash: Self.stableHash(key))
    }

    /// A lease on the endpoint for `key`: pass it to ``Balancer/finish(_:outcome:latency:)`` when
    /// the call ends (as ``Balancer/lease()``'s).
    ///
    /// - Throws: ``LoadBalancerError`` (``LoadBalancerError/Code/noEndpoints``).
    public func lease(forKey key: String) throws(LoadBalancerError) -> EndpointLease<Request, Response> {
        let hash = Self.stableHash(key)
        let strategy = core.strategy
        return try core.lease(keyed: (hash, { table, hash in strategy.lookup(table, hash) }))
    }

    /// A lease on the first instance of `key`'s order of preference whose id is not in `ids` (and,
    /// with a load bound, that is under it, if any is), or `nil` when every usable instance is in `ids`.
    ///
    /// ``Retry`` leases a keyed call's retries and hedges this way.
    public func lease(forKey key: String, avoiding ids: Set<String>) throws(LoadBalancerError) -> EndpointLease<Request, Response>? {
        let hash = Self.stableHash(key)
        let strategy = core.strategy
        return try core.lease(choosingIn: { set, table in
            let order = strategy.preference(table, hash, count: table.usable.count)
            let untried = order.filter { !ids.contains(set.endpoints[$0].id) }
            guard let first = untried.first else { return nil }
            guard let bound = strategy.bound, !table.views.isEmpty else { return first }
            let capacity = strategy.capacity(table, factor: bound.factor)
            return untried.first { table.views[$0].outstanding + 1 <= capacity }
                ?? untried.min { table.views[$0].outstanding < table.views[$1].outstanding }
        })
    }

    /// The first `count` instances of `key`'s order of preference in the current set (fewer when
    /// the set has fewer usable instances): where its calls go, then its retries, loads aside.
    public func instances(forKey key: String, count: Int = 1) -> [Instance] {
        let hash = Self.stableHash(key)
        let strategy = core.strategy
        let snapshot = core.currentSnapshot()
        return strategy.preference(snapshot.table, hash, count: count).map { snapshot.set.instances[$0] }
    }

    /// Runs `body` with the endpoint for `key`, reporting the outcome like ``Balancer/withEndpoint(isolation:_:)``.
    public func withEndpoint<Result>(
        forKey key: String,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (Endpoint<Request, Response>) async throws -> Result
    ) async throws -> Result {
        try await run(lease(forKey: key), body)
    }

    /// FNV-1a, 64-bit.
    @inlinable
    public static func stableHash(_ key: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// Maglev's table: each usable instance walks its own permutation of the table (offset and skip
    /// from two hashes of its id) and claims the next free entry, in turn, until the table is full.
    /// Weighted: in round `r` an instance claims an entry only while it has claimed fewer than
    /// `r × weight / largest weight`, so entries follow weights (equal weights: Maglev's own table).
    static func maglevTable(_ view: EndpointSetView, _ usable: [Int], size: Int) -> [Int32] {
        let weights = TableBuilders.effectiveWeights(view, usable)
        let largest = Double(weights.max() ?? 1)
        let share = weights.map { Double($0) / largest }
        let weighted = share.contains { $0 != 1 }
        let n = usable.count
        guard n > 0 else { return [] }
        let m = UInt64(size)
        // Each instance's next candidate entry, (offset + k × skip) mod size for its k-th, kept as
        // a running sum (one add and compare per step instead of a multiply and a division).
        var candidates = [UInt64](repeating: 0, count: n)
        var skips = [UInt64](repeating: 0, count: n)
        for (i, position) in usable.enumerated() {
            let hash = stableHash(view.instances[position].id)
            candidates[i] = WyRand.mix(hash) % m
            skips[i] = WyRand.mix(hash ^ 0x9e37_79b9_7f4a_7c15) % (m - 1) + 1
        }
        var entries = [Int32](repeating: -1, count: size)
        var claimed = [Int](repeating: 0, count: n)
        // Which entries are taken, a bit each: the probes (about size × ln(size) of them, most of
        // them late, when the table is nearly full) read these 8 KiB instead of the 256 KiB table.
        var taken = [UInt64](repeating: 0, count: (size + 63) / 64)
        // The walk reads and writes through buffer pointers: no bounds checks or uniqueness checks
        // in the loop.
        entries.withUnsafeMutableBufferPointer { entries in
            taken.withUnsafeMutableBufferPointer { taken in
                candidates.withUnsafeMutableBufferPointer { candidates in
                    var filled = 0
                    var round = 0.0
                    outer: while true {
                        round += 1
                        for i in 0..<n {
                            if weighted {
                                // claimed < ⌊round × share⌋, for a whole claimed count, without a floor.
                                guard Double(claimed[i] + 1) <= round * share[i] else { continue }
                                claimed[i] += 1
                            }
                            var candidate = candidates[i]
                            let skip = skips[i]
                            while taken[Int(truncatingIfNeeded: candidate >> 6)] & (1 << (candidate & 63)) != 0 {
                                candidate &+= skip
                                if candidate >= m { candidate &-= m }
                            }
                            taken[Int(truncatingIfNeeded: candidate >> 6)] |= 1 << (candidate & 63)
                            entries[Int(truncatingIfNeeded: candidate)] = Int32(truncatingIfNeeded: usable[i])
                            candidate &+= skip
                            if candidate >= m { candidate &-= m }
                            candidates[i] = candidate
                            filled += 1
                            if filled == size { break outer }
                        }
                    }
                }
            }
        }
        return entries
    }
}
