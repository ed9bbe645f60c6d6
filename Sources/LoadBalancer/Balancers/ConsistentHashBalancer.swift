import Synchronization

/// Consistent hashing for affinity: the same key goes to the same instance while the set allows,
/// and when one of N instances leaves only about 1/N of the keys move (Maglev hashing, Eisenbud et
/// al., NSDI 2016).
///
/// The lookup table has ``tableSize`` entries (a prime; default 65,537, good for sets of up to a
/// few hundred instances — use a larger prime, such as 655,373, for more) and is rebuilt when the
/// set or the ejections change, off the pick path (see ``EndpointCache``: a new set's table is built
/// while the cache publishes it). For large sets (at most 16 entries per usable instance: 3,856
/// instances or more at the default size), one instance added or removed updates the last table
/// by simulating only the claims that differ (the same table as a full fill; the balancer keeps
/// what made the table, about 0.9 KiB per instance at the default size). A pick is a hash and one table read. Instances own entries in proportion to their
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

    /// How the last table was made from the table kept incrementally (`nil`: none is kept, the
    /// table was filled in full), for tests.
    package var lastIncrementalChange: MaglevIncremental.ChangeReport? { core.strategy.lastIncrementalChange }

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
    ///   - tableSize: The lookup table's size, well above 100 × the set size; rounded up to a prime.
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
    ///   - tableSize: The lookup table's size, well above 100 × the set size; rounded up to a prime.
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
            for: Self.self, source: source, ejection: ejection,
            strategy: Strategy(size: MaglevFill.prime(atLeast: tableSize), bound: boundedLoad), seed: nil,
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
        /// Each instance's Maglev walk (two hashes of its id), kept across sets.
        private let walks = ByID<MaglevWalk>()

        init(size: Int, bound: BoundedLoad?) {
            self.size = size
            self.bound = bound
        }

        /// The last table of a large set, kept with what made it (see ``MaglevIncremental``), and
        /// the walks and weights it was made for, in fill order (the table depends on nothing
        /// else, so they, not the ids, say what changed: cheaper to compare).
        private let incremental = Mutex<Incremental?>(nil)

        /// How the last table was made from the kept state (`nil`: none is kept), for tests.
        var lastIncrementalChange: MaglevIncremental.ChangeReport? {
            incremental.withLock { state in state.map { $0.isCurrent ? $0.fill.lastChange : MaglevIncremental.ChangeReport() } }
        }

        private struct Incremental {
            var walks: [MaglevWalk]
            var weights: [UInt64]
            let fill: MaglevIncremental
            /// Whether `fill` is the table of `walks` and `weights` (`false`: the last table was
            /// filled in full, and `fill` is of an older set, kept for its storage).
            var isCurrent: Bool
        }

        @usableFromInline
        func makeTable(_ set: EndpointSetView, usable: [Int]) -> Table {
            // The walks' starts and steps, hashed from the ids only for instances new to the set.
            let walks = self.walks.values(for: set) { MaglevWalk(id: $0.id, size: size) }
            let entries =
                incrementalTable(set, usable, walks: walks)
                ?? ConsistentHashBalancer.maglevTable(set, usable, size: size, walks: walks)
            return finish(set, usable, entries)
        }

        /// A zone's table: filled in full (the incremental state follows the whole set's table).
        @usableFromInline
        package func makeTable(_ set: EndpointSetView, usable: [Int], scope: [Int]) -> Table {
            let walks = self.walks.values(for: set) { MaglevWalk(id: $0.id, size: size) }
            return finish(set, usable, ConsistentHashBalancer.maglevTable(set, usable, size: size, walks: walks))
        }

        /// The table from the kept state when the set differs from the last by at most one
        /// instance, or by one instance's weight (a large set, every weight above 0; the other
        /// instances' weights the same); `nil` for the full fill.
        private func incrementalTable(_ set: EndpointSetView, _ usable: [Int], walks: [MaglevWalk]) -> [Int32]? {
            let weights = TableBuilders.effectiveWeights(set, usable)
            guard MaglevIncremental.isWorthKeeping(count: usable.count, size: size), !weights.contains(0) else {
                incremental.withLock { $0 = nil }
                return nil
            }
            let ordered = usable.map { walks[$0] }
            return incremental.withLock { state in
                if let kept = state, let step = Self.step(from: kept, to: ordered, weights) {
                    if kept.isCurrent {
                        switch step {
                        case .same: break
                        case .inserted(let position): kept.fill.insert(ordered[position], weight: weights[position], at: position)
                        case .removed(let position): kept.fill.remove(at: position)
                        case .reweighed(let position):
                            // A slow start's ramp step, a registry's new weight: that instance
                            // removed and added back with its new weight.
                            kept.fill.remove(at: position)
                            kept.fill.insert(ordered[position], weight: weights[position], at: position)
                        }
                    } else {
                        // The kept state is older than the last table (filled in full): filled
                        // again now that changes come one at a time.
                        if case .same = step { return nil }
                        kept.fill.refill(walks: ordered, weights: weights)
                    }
                    state = Incremental(walks: ordered, weights: weights, fill: kept.fill, isCurrent: true)
                    return kept.fill.table(through: usable)
                }
                if let kept = state {
                    // Several instances changed at once: the plain full fill, several times
                    // cheaper than filling the kept state again (which records every claim and
                    // the probe index), which waits for the next single change.
                    state = Incremental(walks: ordered, weights: weights, fill: kept.fill, isCurrent: false)
                    return nil
                }
                let fill = MaglevIncremental(walks: ordered, weights: weights, size: size)
                state = Incremental(walks: ordered, weights: weights, fill: fill, isCurrent: true)
                return fill.table(through: usable)
            }
        }

        /// How the last table's set became this one when by one step: the same, one instance in
        /// or out (the others' weights the same), or one instance's weight.
        private enum Step {
            case same
            case inserted(Int)
            case removed(Int)
            case reweighed(Int)
        }

        private static func step(from kept: Incremental, to walks: [MaglevWalk], _ weights: [UInt64]) -> Step? {
            switch oneChange(from: kept.walks, to: walks) {
            case nil:
                return nil
            case .same?:
                if kept.weights == weights { return .same }
                return oneDifference(kept.weights, weights).map { .reweighed($0) }
            case .inserted(let position)?:
                let same =
                    kept.weights[..<position].elementsEqual(weights[..<position])
                    && kept.weights[position...].elementsEqual(weights[(position + 1)...])
                return same ? .inserted(position) : nil
            case .removed(let position)?:
                let same =
                    kept.weights[..<position].elementsEqual(weights[..<position])
                    && kept.weights[(position + 1)...].elementsEqual(weights[position...])
                return same ? .removed(position) : nil
            case .reweighed?:
                return nil
            }
        }

        /// The one position where `old` and `new` (of one length) differ, or `nil`.
        private static func oneDifference(_ old: [UInt64], _ new: [UInt64]) -> Int? {
            guard old.count == new.count, let first = old.indices.first(where: { old[$0] != new[$0] }) else { return nil }
            return old[(first + 1)...].elementsEqual(new[(first + 1)...]) ? first : nil
        }

        /// How `new` differs from `old` when by at most one walk (both in fill order): the same,
        /// inserted or removed.
        private static func oneChange(from old: [MaglevWalk], to new: [MaglevWalk]) -> Step? {
            if old.count == new.count { return old == new ? .same : nil }
            guard abs(old.count - new.count) == 1 else { return nil }
            let (longer, shorter) = old.count > new.count ? (old, new) : (new, old)
            var position = 0
            while position < shorter.count, shorter[position] == longer[position] { position += 1 }
            guard shorter[position...].elementsEqual(longer[(position + 1)...]) else { return nil }
            return new.count > old.count ? .inserted(position) : .removed(position)
        }

        private func finish(_ set: EndpointSetView, _ usable: [Int], _ entries: [Int32]) -> Table {
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
        /// Where `hash` falls: its table entry and the entry's owner.
        @usableFromInline
        func explainKey(_ table: Table, hash: UInt64, _ set: EndpointSetView, _ explanation: inout PickExplanation) {
            guard !table.entries.isEmpty else { return }
            let entry = Int(truncatingIfNeeded: WyRand.mix(hash).multipliedFullWidth(by: UInt64(table.entries.count)).high)
            let owner = Int(table.entries[entry])
            explanation.ring = PickExplanation.RingPosition(
                hash: hash, entry: entry, tableSize: table.entries.count, ownerID: set.instances[owner].id, movedOn: false)
        }

        /// ``choose(_:_:)`` (a random key's entry), recording where the key fell.
        @usableFromInline
        func explainedChoice(
            _ table: Table, _ state: inout PickState, _ set: EndpointSetView, _ explanation: inout PickExplanation
        ) -> Int? {
            let hash = state.next()
            explainKey(table, hash: hash, set, &explanation)
            return lookup(table, hash)
        }

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
    ///
    /// `directBelow`: once no more than this many entries are free, an instance's next free entry
    /// is found from the free entries themselves rather than by walking its permutation (the same
    /// entry, see ``MaglevFill``); `nil` chooses by the table's size, 0 always walks.
    ///
    /// `walks`: each instance of `view`'s walk, if the caller keeps them (else hashed here).
    package static func maglevTable(
        _ view: EndpointSetView, _ usable: [Int], size: Int, walks: [MaglevWalk]? = nil, directBelow: Int? = nil
    ) -> [Int32] {
        let weights = TableBuilders.effectiveWeights(view, usable)
        let largest = Double(weights.max() ?? 1)
        let share = weights.map { Double($0) / largest }
        let weighted = share.contains { $0 != 1 }
        let n = usable.count
        guard n > 0 else { return [] }
        // Each instance's next candidate entry, (offset + k × skip) mod size for its k-th, kept as
        // a running sum (one add and compare per step instead of a multiply and a division).
        var candidates = [UInt64](repeating: 0, count: n)
        var skips = [UInt64](repeating: 0, count: n)
        for (i, position) in usable.enumerated() {
            let walk = walks?[position] ?? MaglevWalk(id: view.instances[position].id, size: size)
            candidates[i] = walk.start
            skips[i] = walk.skip
        }
        let below = directBelow ?? MaglevFill.defaultDirectBelow(size: size)
        return [Int32](unsafeUninitializedCapacity: size) { entries, count in
            entries.initialize(repeating: -1)
            count = size
            let fill = MaglevFill(entries: entries, directBelow: below)
            var claimed = [Int](repeating: 0, count: n)
            var round = 0.0
            candidates.withUnsafeMutableBufferPointer { candidates in
                skips.withUnsafeBufferPointer { skips in
                    outer: while true {
                        round += 1
                        for i in 0..<n {
                            if weighted {
                                // claimed < ⌊round × share⌋, for a whole claimed count, without a floor.
                                guard Double(claimed[i] + 1) <= round * share[i] else { continue }
                                claimed[i] += 1
                            }
                            candidates[i] = fill.claim(from: candidates[i], skip: skips[i], for: Int32(truncatingIfNeeded: usable[i]))
                            if fill.isFull { break outer }
                        }
                    }
                }
            }
        }
    }
}

/// An instance's walk of a Maglev table: the first entry it tries and its step, from two hashes of
/// its id.
package struct MaglevWalk: Sendable, Equatable {
    var start: UInt64
    var skip: UInt64

    package init(id: String, size: Int) {
        let m = UInt64(size)
        let hash = ConsistentHashBalancer<Never, Never>.stableHash(id)
        start = WyRand.mix(hash) % m
        skip = WyRand.mix(hash ^ 0x9e37_79b9_7f4a_7c15) % (m - 1) + 1
    }
}

/// A Maglev table being filled: which entries are taken, and each instance's claim of its next
/// free entry along its permutation `candidate, candidate + skip, candidate + 2 × skip, ...`
/// (mod the size, a prime).
///
/// Walking the permutation costs about size / free probes per claim, so the last claims dominate
/// (about size × ln(size) probes in all, most of them when the table is nearly full). Once few
/// entries are free, the claim is found from the free entries instead: the free entry `e` a walk
/// would reach first is the one with the smallest step count `k = (e − candidate) × skip⁻¹ mod
/// size`, a multiplication per free entry. Both give the same entry, so the table is the same.
///
/// A class (one allocation per build), not a noncopyable struct with a `deinit`: Swift 6.3.1
/// crashes compiling that struct under ThreadSanitizer ("Invalid bitcast" in LLVM's verifier),
/// and the class fills a 65,537-entry table no slower (BENCHMARKS.md, session 15).
package final class MaglevFill {
    /// The table, owned by the caller.
    private let entries: UnsafeMutableBufferPointer<Int32>
    /// A bit per entry, set when taken: the probes read these (8 KiB for 65,537 entries) rather
    /// than the entries. Read and written through a pointer: no bounds or uniqueness checks in the
    /// walks.
    private let taken: UnsafeMutableBufferPointer<UInt64>
    private let size: UInt64
    private let directBelow: Int
    private var filled = 0
    /// The free entries, once no more than `directBelow` are left (empty before).
    private var free: [UInt64] = []
    private var direct = false
    /// ⌊(2⁶⁴ − 1) / size⌋, for reducing products mod the size without a division (Barrett).
    private let reciprocal: UInt64

    /// A fill of `entries` (all -1), whose count is a prime.
    init(entries: UnsafeMutableBufferPointer<Int32>, directBelow: Int) {
        precondition(entries.count >= 2, "a Maglev table has at least two entries")
        self.entries = entries
        self.taken = .allocate(capacity: (entries.count + 63) / 64)
        taken.initialize(repeating: 0)
        self.size = UInt64(entries.count)
        self.directBelow = entries.count < 1 << 31 ? directBelow : 0
        self.reciprocal = UInt64.max / UInt64(entries.count)
    }

    deinit { taken.deallocate() }

    var isFull: Bool { filled == entries.count }

    /// Claims for `position` the first free entry of the walk from `candidate` by `skip`, and
    /// returns the walk's next candidate.
    @inline(__always)
    func claim(from candidate: UInt64, skip: UInt64, for position: Int32) -> UInt64 {
        if !direct, entries.count &- filled <= directBelow { startDirect() }
        let entry = direct ? directClaim(from: candidate, skip: skip) : walk(from: candidate, skip: skip)
        entries[Int(truncatingIfNeeded: entry)] = position
        filled &+= 1
        return Self.step(entry, skip: skip, size: size)
    }

    /// `(candidate + skip) mod size`, for `candidate` and `skip` below the size, without a branch:
    /// whether a step wraps depends on the skip (a hash) and is taken about skip / size of the
    /// time, so a branch there is mispredicted on about every other probe of many walks, and the
    /// probes are the fill's cost. Computed as `candidate − (size − skip)`, plus the size when
    /// that is negative (sizes are below 2⁶³, so the sign bit says it).
    @inline(__always)
    package static func step(_ candidate: UInt64, skip: UInt64, size: UInt64) -> UInt64 {
        let back = candidate &- (size &- skip)
        return back &+ (size & UInt64(bitPattern: Int64(bitPattern: back) >> 63))
    }

    /// The first entry of the walk whose bit is clear, marked taken.
    @inline(__always)
    private func walk(from start: UInt64, skip: UInt64) -> UInt64 {
        let m = size
        var candidate = start
        while taken[Int(truncatingIfNeeded: candidate >> 6)] & (1 << (candidate & 63)) != 0 {
            candidate = Self.step(candidate, skip: skip, size: m)
        }
        taken[Int(truncatingIfNeeded: candidate >> 6)] |= 1 << (candidate & 63)
        return candidate
    }

    private func startDirect() {
        direct = true
        free.reserveCapacity(entries.count - filled)
        for word in taken.indices where taken[word] != .max {
            var clear = ~taken[word]
            while clear != 0 {
                let entry = UInt64(word * 64 + clear.trailingZeroBitCount)
                if entry < size { free.append(entry) }
                clear &= clear &- 1
            }
        }
    }

    /// The free entry the walk from `candidate` by `skip` reaches first, removed from the free list.
    private func directClaim(from candidate: UInt64, skip: UInt64) -> UInt64 {
        let inverse = Self.inverse(skip, modulo: size)
        let m = size
        let reciprocal = reciprocal
        let chosen: Int = free.withUnsafeBufferPointer { free in
            var best = UInt64.max
            var chosen = 0
            for index in 0..<free.count {
                let entry = free[index]
                let distance = entry >= candidate ? entry &- candidate : entry &+ m &- candidate
                // distance × inverse < 2⁶², reduced mod m: the quotient from the reciprocal is
                // at most one short.
                let product = distance &* inverse
                var steps = product &- product.multipliedFullWidth(by: reciprocal).high &* m
                if steps >= m { steps &-= m }
                if steps < best {
                    best = steps
                    chosen = index
                }
            }
            return chosen
        }
        let entry = free[chosen]
        free.swapAt(chosen, free.count - 1)
        free.removeLast()
        taken[Int(truncatingIfNeeded: entry >> 6)] |= 1 << (entry & 63)
        return entry
    }

    /// The least prime at least `value` (and at least 2). Maglev's walks visit every entry only
    /// when the size is prime: with a composite size, a walk whose skip shares a factor with it
    /// could cycle over taken entries forever.
    package static func prime(atLeast value: Int) -> Int {
        var candidate = max(2, value)
        while !isPrime(candidate) { candidate += 1 }
        return candidate
    }

    static func isPrime(_ value: Int) -> Bool {
        guard value >= 2 else { return false }
        var divisor = 2
        while divisor * divisor <= value {
            if value % divisor == 0 { return false }
            divisor += 1
        }
        return true
    }

    /// The free count below which claims are direct: about where a walk (size / free probes)
    /// costs what a scan of the free entries (free multiplications) does, √size, for sizes whose
    /// products fit in 64 bits.
    static func defaultDirectBelow(size: Int) -> Int {
        size < 1 << 31 ? max(8, Int(Double(size).squareRoot())) : 0
    }

    /// `value⁻¹ mod modulo` (the modulo a prime, `0 < value < modulo`), by the extended Euclidean
    /// algorithm.
    static func inverse(_ value: UInt64, modulo: UInt64) -> UInt64 {
        var (r0, r1) = (Int64(modulo), Int64(value))
        var (t0, t1) = (Int64(0), Int64(1))
        while r1 != 0 {
            let q = r0 / r1
            (r0, r1) = (r1, r0 - q * r1)
            (t0, t1) = (t1, t0 - q * t1)
        }
        return UInt64(t0 < 0 ? t0 + Int64(modulo) : t0)
    }
}
