import Synchronization

/// Hands out the endpoints in turn.
///
/// One atomic fetch-add per pick (never a compare-and-swap loop), and the counter starts at a random
/// offset, so many clients created at once do not all send their first request to the same instance.
///
/// With an ``OutlierDetector``, ejected instances are skipped (the rotation runs over the usable ones).
public final class RoundRobinBalancer<Request: Sendable, Response: Sendable>: Balancer {
    /// The endpoints the balancer chooses among.
    public let endpoints: EndpointCache<Request, Response>
    @usableFromInline
    let counter: Atomic<UInt64>
    /// Keeps the table observer alive; ``tableStorage`` is what `pick()` reads.
    let table: BalancerTable?
    /// The table's storage, referenced without reference counting: `table` keeps it alive, and
    /// the hot path must not touch a shared object's reference count.
    @usableFromInline
    let tableStorage: Unmanaged<SeqLockTable>?
    /// The ejection this balancer honours, if any.
    public let ejection: OutlierDetector?

    /// Creates a round-robin balancer over `endpoints`.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - start: The counter's first value. Default: random.
    ///   - ejection: Outlier ejection to honour. Default: none.
    public init(_ endpoints: EndpointCache<Request, Response>, start: UInt64? = nil, ejection: OutlierDetector? = nil) {
        self.endpoints = endpoints
        self.counter = Atomic(initialState(start))
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

    /// Picks the next usable endpoint in turn.
    ///
    /// - Throws: ``LoadBalancerError`` with code ``LoadBalancerError/Code/noEndpoints`` when the set is empty.
    @inlinable
    public func pick() throws(LoadBalancerError) -> EndpointPick {
        if let tableStorage {
            let n = counter.wrappingAdd(1, ordering: .relaxed).oldValue
            return try resolveTableRead(tableStorage.pickRotating(n), endpoints.shape, n)
        }
        let shape = endpoints.shape
        guard shape.count > 0 else { throw .noEndpoints }
        // The low 32 bits of the counter: a 32-bit division is several times cheaper than a
        // 64-bit one, and the rotation only skips a beat once every 2^32 picks.
        let n = UInt32(truncatingIfNeeded: counter.wrappingAdd(1, ordering: .relaxed).oldValue)
        return EndpointPick(
            index: Int(truncatingIfNeeded: n % UInt32(truncatingIfNeeded: shape.count)),
            generation: shape.generation
        )
    }

    /// Whether calls are reported: only when there is an ``ejection`` detector to learn from them.
    public var observesCalls: Bool { ejection != nil }

    /// Passes the call's outcome to the ``ejection`` detector, if any.
    public func record(_ call: CallRecord) { ejection?.record(call) }
}
