/// Consistent hashing for affinity: the same key goes to the same instance while the set allows,
/// and when one of N instances leaves only about 1/N of the keys move (Maglev hashing, Eisenbud et
/// al., NSDI 2016).
///
/// The lookup table has ``tableSize`` entries (a prime; default 65,537, good for sets of up to a
/// few hundred instances — use a larger prime, such as 655,373, for more) and is rebuilt when the
/// set or the ejections change (off the pick path: the first pick after a change builds it once for
/// all threads). A pick is a hash and one table read. Weights are not used.
///
/// ```swift
/// let balancer = ConsistentHashBalancer(cache)
/// let response = try await balancer.withEndpoint(forKey: userID) { endpoint in try await endpoint(request) }
/// ```
public final class ConsistentHashBalancer<Request: Sendable, Response: Sendable>: CoreBalancer {
    @usableFromInline let core: BalancerCore<Request, Response, Strategy>
    /// The cache the balancer follows, if any.
    public let cache: EndpointCache<Request, Response>?
    /// The number of entries of the lookup table.
    public var tableSize: Int { core.strategy.size }

    /// Creates a consistent-hash balancer over `endpoints`.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - tableSize: The lookup table's size; should be a prime well above 100 × the set size.
    ///   - ejection: Outlier ejection to honour. Default: none.
    ///   - slowStart: Ramps the share of instances new to the set or back from ejection. Default: none.
    public convenience init(
        _ endpoints: EndpointCache<Request, Response>, tableSize: Int = 65_537, ejection: OutlierDetector? = nil,
        slowStart: SlowStart? = nil
    ) {
        self.init(source: .cache(endpoints), tableSize: tableSize, ejection: ejection, slowStart: slowStart)
    }

    /// Creates a consistent-hash balancer over a fixed array of endpoints.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - tableSize: The lookup table's size; should be a prime well above 100 × the set size.
    ///   - ejection: Outlier ejection to honour. Default: none.
    ///   - slowStart: Ramps the share of instances new to the set or back from ejection. Default: none.
    public convenience init(
        endpoints: [Endpoint<Request, Response>], tableSize: Int = 65_537, ejection: OutlierDetector? = nil, slowStart: SlowStart? = nil
    ) {
        self.init(source: .fixed(endpoints), tableSize: tableSize, ejection: ejection, slowStart: slowStart)
    }

    init(source: SnapshotSource<Request, Response>, tableSize: Int, ejection: OutlierDetector?, slowStart: SlowStart?) {
        self.cache = source.cache
        self.core = BalancerCore(
            for: Self.self, source: source, ejection: ejection, strategy: Strategy(size: max(2, tableSize)), seed: nil, slowStart: slowStart
        )
    }

    @usableFromInline
    struct Strategy: PickStrategy {
        @usableFromInline let size: Int

        @usableFromInline init(size: Int) { self.size = size }

        @usableFromInline
        func makeTable(_ set: EndpointSetView, usable: [Int]) -> [Int32] {
            ConsistentHashBalancer.maglevTable(set, usable, size: size)
        }

        /// A random key's entry (for callers without affinity).
        @inlinable @inline(__always)
        func choose(_ table: [Int32], _ state: inout PickState) -> Int? {
            lookup(table, state.next())
        }

        @inlinable @inline(__always)
        func lookup(_ table: [Int32], _ hash: UInt64) -> Int? {
            guard !table.isEmpty else { return nil }
            let entry = WyRand.mix(hash).multipliedFullWidth(by: UInt64(table.count)).high
            return Int(table[Int(truncatingIfNeeded: entry)])
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
    static func maglevTable(_ view: EndpointSetView, _ usable: [Int], size: Int) -> [Int32] {
        let n = usable.count
        guard n > 0 else { return [] }
        let m = UInt64(size)
        var offsets = [UInt64](repeating: 0, count: n)
        var skips = [UInt64](repeating: 0, count: n)
        var next = [UInt64](repeating: 0, count: n)
        for (i, position) in usable.enumerated() {
            let id = view.instances[position].id
            offsets[i] = WyRand.mix(stableHash(id)) % m
            skips[i] = WyRand.mix(stableHash(id) ^ 0x9e37_79b9_7f4a_7c15) % (m - 1) + 1
        }
        var entries = [Int32](repeating: -1, count: size)
        var filled = 0
        outer: while true {
            for i in 0..<n {
                var candidate = (offsets[i] &+ next[i] &* skips[i]) % m
                while entries[Int(candidate)] >= 0 {
                    next[i] &+= 1
                    candidate = (offsets[i] &+ next[i] &* skips[i]) % m
                }
                entries[Int(candidate)] = Int32(usable[i])
                next[i] &+= 1
                filled += 1
                if filled == size { break outer }
            }
        }
        return entries
    }
}
