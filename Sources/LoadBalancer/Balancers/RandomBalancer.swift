import Synchronization

/// Picks an endpoint uniformly at random.
///
/// Safe under any number of concurrent pickers, lock-free and without locked instructions: the
/// wyrand generator (a Weyl sequence whose every step is mixed by a 128-bit multiply) over one
/// atomic word, salted per thread (see `PickRandom`). With a seed, a single-threaded sequence of
/// picks is reproducible.
///
/// With an ``OutlierDetector``, ejected instances are skipped.
public final class RandomBalancer<Request: Sendable, Response: Sendable>: Balancer {
    /// The endpoints the balancer chooses among.
    public let endpoints: EndpointCache<Request, Response>
    @usableFromInline
    let random: PickRandom
    /// Keeps the table observer alive; ``tableStorage`` is what `pick()` reads.
    let table: BalancerTable?
    /// The table's storage, referenced without reference counting: `table` keeps it alive, and
    /// the hot path must not touch a shared object's reference count.
    @usableFromInline
    let tableStorage: Unmanaged<SeqLockTable>?
    /// The ejection this balancer honours, if any.
    public let ejection: OutlierDetector?

    /// Creates a random balancer over `endpoints`.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - seed: Makes the picks reproducible (for tests). Default: a random seed.
    ///   - ejection: Outlier ejection to honour. Default: none.
    public init(_ endpoints: EndpointCache<Request, Response>, seed: UInt64? = nil, ejection: OutlierDetector? = nil) {
        self.endpoints = endpoints
        self.random = PickRandom(seed: seed)
        self.ejection = ejection
        if let ejection {
            let (owner, storage) = BalancerTable.attached(to: endpoints, ejection: ejection) { _, usable in
                usable.map { UInt64($0) }
            }
            self.table = owner
            self.tableStorage = storage
        } else {
            self.table = nil
            self.tableStorage = nil
        }
    }

    deinit { random.deallocate() }

    /// Picks a usable endpoint uniformly at random.
    ///
    /// - Throws: ``LoadBalancerError`` with code ``LoadBalancerError/Code/noEndpoints`` when the set is empty.
    @inlinable
    public func pick() throws(LoadBalancerError) -> EndpointPick {
        let random = self.random.next()
        if let tableStorage {
            return try resolveTableRead(tableStorage.pickUniform(random), endpoints.shape, random)
        }
        let shape = endpoints.shape
        guard shape.count > 0 else { throw .noEndpoints }
        // Lemire's multiply-shift maps 64 random bits onto 0..<count without a division.
        let index = random.multipliedFullWidth(by: UInt64(truncatingIfNeeded: shape.count)).high
        return EndpointPick(index: Int(truncatingIfNeeded: index), generation: shape.generation)
    }

    /// Whether calls are reported: only when there is an ``ejection`` detector to learn from them.
    public var observesCalls: Bool { ejection != nil }

    /// Passes the call's outcome to the ``ejection`` detector, if any.
    public func record(_ call: CallRecord) { ejection?.record(call) }
}

/// The random stream of a balancer's `pick()`: wyrand over a state word on a cache line of its own.
///
/// The state advances with a plain load and store, not an atomic read-modify-write: a locked
/// instruction costs more than the rest of a pick on some machines. Two threads that race may read
/// the same state, so each mixes in a salt of its own (an address on its stack) and they still get
/// different numbers. A seeded stream uses no salt, so it is reproducible on one thread.
@usableFromInline
struct PickRandom: @unchecked Sendable {
    @usableFromInline let word: UnsafeMutablePointer<Atomic<UInt64>>
    @usableFromInline let saltMask: UInt64

    init(seed: UInt64?) {
        word = allocateWords(8)
        word[0].store(initialState(seed), ordering: .relaxed)
        saltMask = seed == nil ? ~0 : 0
    }

    /// Frees the state; the owner calls it from its `deinit`.
    func deallocate() {
        word.deinitialize(count: 8)
        UnsafeMutableRawPointer(word).deallocate()
    }

    @inlinable @inline(__always)
    func next() -> UInt64 {
        let state = word[0].load(ordering: .relaxed) &+ WyRand.increment
        word[0].store(state, ordering: .relaxed)
        var marker: UInt8 = 0
        let salt = withUnsafeMutablePointer(to: &marker) { UInt64(UInt(bitPattern: $0)) } & saltMask
        return WyRand.mix(state ^ salt)
    }
}

/// The wyrand generator over an atomic state.
@usableFromInline
enum WyRand {
    @usableFromInline static let increment: UInt64 = 0xa076_1d64_78bd_642f
    @usableFromInline static let mixer: UInt64 = 0xe703_7ed1_a0b4_28db

    @inlinable
    static func next(_ state: borrowing Atomic<UInt64>) -> UInt64 {
        let s = state.wrappingAdd(increment, ordering: .relaxed).newValue
        return mix(s)
    }

    @inlinable
    static func mix(_ s: UInt64) -> UInt64 {
        let product = s.multipliedFullWidth(by: s ^ mixer)
        return product.high ^ product.low
    }
}
