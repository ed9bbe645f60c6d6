import Synchronization

/// Consistent hashing for affinity: the same key goes to the same instance while the set allows,
/// and when one of N instances leaves only about 1/N of the keys move (Maglev hashing, Eisenbud et
/// al., NSDI 2016).
///
/// The lookup table has ``tableSize`` entries (a prime; default 65,537, good for sets of up to a
/// few hundred instances — use a larger prime, such as 655,373, for more) and is rebuilt when the
/// set or the ejections change. A pick is a hash and one table read. Weights are not used.
///
/// ```swift
/// let balancer = ConsistentHashBalancer(cache)
/// let response = try await balancer.withEndpoint(forKey: userID) { endpoint in try await endpoint(request) }
/// ```
public final class ConsistentHashBalancer<Request: Sendable, Response: Sendable>: Balancer {
    /// The endpoints the balancer chooses among.
    public let endpoints: EndpointCache<Request, Response>
    /// The number of entries of the lookup table.
    public let tableSize: Int
    /// The ejection this balancer honours, if any.
    public let ejection: OutlierDetector?
    @usableFromInline let random: PickRandom
    /// Keeps the table observer alive; ``tableStorage`` is what `pick()` reads.
    let table: BalancerTable
    /// The table's storage, referenced without reference counting (`table` keeps it alive).
    @usableFromInline let tableStorage: Unmanaged<SeqLockTable>

    /// Creates a consistent-hash balancer over `endpoints`.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - tableSize: The lookup table's size; should be a prime well above 100 × the set size.
    ///   - ejection: Outlier ejection to honour. Default: none.
    public init(_ endpoints: EndpointCache<Request, Response>, tableSize: Int = 65_537, ejection: OutlierDetector? = nil) {
        self.endpoints = endpoints
        self.tableSize = max(2, tableSize)
        self.ejection = ejection
        self.random = PickRandom(seed: nil)
        let size = self.tableSize
        (table, tableStorage) = BalancerTable.attached(to: endpoints, ejection: ejection) { view, usable in
            Self.maglevTable(view, usable, size: size)
        }
    }

    deinit { random.deallocate() }

    /// The endpoint for `key`'s hash.
    @inlinable
    public func pick(forHash hash: UInt64) throws(LoadBalancerError) -> EndpointPick {
        try resolveTableRead(lookup(hash), endpoints.shape, hash)
    }

    @inlinable @inline(__always)
    func lookup(_ hash: UInt64) -> EndpointPick?? {
        tableStorage._withUnsafeGuaranteedRef {
            $0.read { generation, count, words -> EndpointPick? in
                guard count > 0 else { return nil }
                let entry = Int(truncatingIfNeeded: WyRand.mix(hash).multipliedFullWidth(by: UInt64(count * 2)).high)
                let word = words[entry >> 1].load(ordering: .relaxed)
                let position = entry & 1 == 0 ? word & 0xFFFF_FFFF : word >> 32
                return EndpointPick(index: Int(truncatingIfNeeded: position), generation: generation)
            }
        }
    }

    /// The endpoint for `key`. The same key maps to the same instance across processes and runs
    /// (the hash is FNV-1a over the key's UTF-8, not Swift's per-process seeded `Hasher`).
    @inlinable
    public func pick(forKey key: String) throws(LoadBalancerError) -> EndpointPick {
        try pick(forHash: Self.stableHash(key))
    }

    /// A pick for a random key (for callers without affinity).
    @inlinable
    public func pick() throws(LoadBalancerError) -> EndpointPick {
        try pick(forHash: random.next())
    }

    /// Runs `body` with the endpoint for `key`, reporting the outcome like ``Balancer/withEndpoint(isolation:_:)``.
    public func withEndpoint<Result>(
        forKey key: String,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (Endpoint<Request, Response>) async throws -> Result
    ) async throws -> Result {
        let hash = Self.stableHash(key)
        let resolved = try resolvePick { () throws(LoadBalancerError) in try pick(forHash: hash) }
        return try await run(resolved, body)
    }

    /// Whether calls are reported: only when there is an ``ejection`` detector to learn from them.
    public var observesCalls: Bool { ejection != nil }
    /// Passes the call's outcome to the ``ejection`` detector, if any.
    public func record(_ call: CallRecord) { ejection?.record(call) }

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
    /// Entries are packed two per word.
    static func maglevTable(_ view: EndpointSetView, _ usable: [Int], size: Int) -> [UInt64] {
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
        if size % 2 == 1 { entries.append(entries[0]) }  // pad to whole words
        var words = [UInt64](repeating: 0, count: entries.count / 2)
        for (i, position) in entries.enumerated() {
            words[i >> 1] |= UInt64(UInt32(position)) << (i & 1 == 0 ? 0 : 32)
        }
        // The count is the number of entries; pick reads entry >> 1.
        return words
    }
}
