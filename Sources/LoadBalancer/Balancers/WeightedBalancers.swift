import Synchronization

/// Smooth weighted round robin: each instance gets traffic in proportion to its ``Instance/weight``,
/// spread evenly through the cycle (weights 5, 1, 1 give `a a b a c a a`-like interleaving, not
/// `a a a a a b c`).
///
/// The cycle is computed once per endpoint-set change (and per ejection change); a pick is one
/// atomic fetch-add and a lock-free table read. Weight-0 instances are used only when every usable
/// instance has weight 0.
public final class WeightedRoundRobinBalancer<Request: Sendable, Response: Sendable>: Balancer {
    /// The endpoints the balancer chooses among.
    public let endpoints: EndpointCache<Request, Response>
    @usableFromInline let counter: Atomic<UInt64>
    /// Keeps the table observer alive; ``tableStorage`` is what `pick()` reads.
    let table: BalancerTable
    /// The table's storage, referenced without reference counting (`table` keeps it alive).
    @usableFromInline let tableStorage: Unmanaged<SeqLockTable>
    /// The ejection this balancer honours, if any.
    public let ejection: OutlierDetector?

    /// Creates a smooth weighted round-robin balancer over `endpoints`.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - start: The counter's first value. Default: random.
    ///   - ejection: Outlier ejection to honour. Default: none.
    public init(_ endpoints: EndpointCache<Request, Response>, start: UInt64? = nil, ejection: OutlierDetector? = nil) {
        self.endpoints = endpoints
        self.counter = Atomic(initialState(start))
        self.ejection = ejection
        (table, tableStorage) = BalancerTable.attached(to: endpoints, ejection: ejection) { view, usable in
            TableBuilders.smoothSchedule(view, usable)
        }
    }

    /// Picks the next usable endpoint of the weighted cycle.
    ///
    /// - Throws: ``LoadBalancerError`` with code ``LoadBalancerError/Code/noEndpoints`` when the set is empty.
    @inlinable
    public func pick() throws(LoadBalancerError) -> EndpointPick {
        let n = counter.wrappingAdd(1, ordering: .relaxed).oldValue
        return try resolveTableRead(tableStorage.pickRotating(n), endpoints.shape, n)
    }

    /// Whether calls are reported: only when there is an ``ejection`` detector to learn from them.
    public var observesCalls: Bool { ejection != nil }
    /// Passes the call's outcome to the ``ejection`` detector, if any.
    public func record(_ call: CallRecord) { ejection?.record(call) }
}

/// Weighted random: each pick chooses an instance with probability proportional to its
/// ``Instance/weight``, in O(1) through an alias table rebuilt on each set (or ejection) change.
public final class WeightedRandomBalancer<Request: Sendable, Response: Sendable>: Balancer {
    /// The endpoints the balancer chooses among.
    public let endpoints: EndpointCache<Request, Response>
    @usableFromInline let random: PickRandom
    /// Keeps the table observer alive; ``tableStorage`` is what `pick()` reads.
    let table: BalancerTable
    /// The table's storage, referenced without reference counting (`table` keeps it alive).
    @usableFromInline let tableStorage: Unmanaged<SeqLockTable>
    /// The ejection this balancer honours, if any.
    public let ejection: OutlierDetector?

    /// Creates a weighted random balancer over `endpoints`.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - seed: Makes the picks reproducible. Default: random.
    ///   - ejection: Outlier ejection to honour. Default: none.
    public init(_ endpoints: EndpointCache<Request, Response>, seed: UInt64? = nil, ejection: OutlierDetector? = nil) {
        self.endpoints = endpoints
        self.random = PickRandom(seed: seed)
        self.ejection = ejection
        (table, tableStorage) = BalancerTable.attached(to: endpoints, ejection: ejection) { view, usable in
            TableBuilders.aliasTable(view, usable)
        }
    }

    deinit { random.deallocate() }

    /// Picks a usable endpoint at random, in proportion to the weights.
    ///
    /// - Throws: ``LoadBalancerError`` with code ``LoadBalancerError/Code/noEndpoints`` when the set is empty.
    @inlinable
    public func pick() throws(LoadBalancerError) -> EndpointPick {
        let random = self.random.next()
        return try resolveTableRead(tableStorage.pickAlias(random), endpoints.shape, random)
    }

    /// Whether calls are reported: only when there is an ``ejection`` detector to learn from them.
    public var observesCalls: Bool { ejection != nil }
    /// Passes the call's outcome to the ``ejection`` detector, if any.
    public func record(_ call: CallRecord) { ejection?.record(call) }
}

/// DNS SRV priority levels: all traffic goes to the instances with the lowest ``Instance/priority``
/// value that has usable instances, chosen among them in proportion to their weights (RFC 2782).
///
/// When every instance of that level is ejected (see ``OutlierDetector``) or gone, traffic falls
/// over to the next level, and it comes back as soon as an instance of the better level is usable
/// again. In panic mode (too few healthy instances overall) ejection is ignored.
public final class PriorityBalancer<Request: Sendable, Response: Sendable>: Balancer {
    /// The endpoints the balancer chooses among.
    public let endpoints: EndpointCache<Request, Response>
    @usableFromInline let random: PickRandom
    /// Keeps the table observer alive; ``tableStorage`` is what `pick()` reads.
    let table: BalancerTable
    /// The table's storage, referenced without reference counting (`table` keeps it alive).
    @usableFromInline let tableStorage: Unmanaged<SeqLockTable>
    /// The ejection this balancer honours, if any.
    public let ejection: OutlierDetector?

    /// Creates a priority balancer over `endpoints`.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - seed: Makes the picks reproducible. Default: random.
    ///   - ejection: Outlier ejection to honour. Default: none.
    public init(_ endpoints: EndpointCache<Request, Response>, seed: UInt64? = nil, ejection: OutlierDetector? = nil) {
        self.endpoints = endpoints
        self.random = PickRandom(seed: seed)
        self.ejection = ejection
        (table, tableStorage) = BalancerTable.attached(to: endpoints, ejection: ejection) { view, usable in
            TableBuilders.aliasTable(view, TableBuilders.lowestPriorityLevel(view, usable))
        }
    }

    deinit { random.deallocate() }

    /// Picks an endpoint of the best usable priority level, at random in proportion to the weights
    /// within that level.
    ///
    /// - Throws: ``LoadBalancerError`` with code ``LoadBalancerError/Code/noEndpoints`` when the set is empty.
    @inlinable
    public func pick() throws(LoadBalancerError) -> EndpointPick {
        let random = self.random.next()
        return try resolveTableRead(tableStorage.pickAlias(random), endpoints.shape, random)
    }

    /// Whether calls are reported: only when there is an ``ejection`` detector to learn from them.
    public var observesCalls: Bool { ejection != nil }
    /// Passes the call's outcome to the ``ejection`` detector, if any.
    public func record(_ call: CallRecord) { ejection?.record(call) }
}

/// Turns a table read into a pick: the table's pick, "no endpoints" for an empty table, and for a
/// read that lost to a writer storm, a uniform pick over the current shape.
@inlinable
func resolveTableRead(
    _ read: EndpointPick??,
    _ shape: @autoclosure () -> EndpointSetShape,
    _ random: UInt64
) throws(LoadBalancerError) -> EndpointPick {
    switch read {
    case .some(.some(let pick)):
        return pick
    case .some(.none):
        throw .noEndpoints
    case .none:
        let shape = shape()
        guard shape.count > 0 else { throw .noEndpoints }
        let index = WyRand.mix(random).multipliedFullWidth(by: UInt64(shape.count)).high
        return EndpointPick(index: Int(truncatingIfNeeded: index), generation: shape.generation)
    }
}

extension Unmanaged where Instance == SeqLockTable {
    /// The table entry at `n` modulo the table's length (round-robin tables). See ``resolveTableRead(_:_:_:)``.
    @inlinable @inline(__always)
    func pickRotating(_ n: UInt64) -> EndpointPick?? {
        _withUnsafeGuaranteedRef {
            $0.read { generation, count, words -> EndpointPick? in
                guard count > 0 else { return nil }
                // A 32-bit division (see RoundRobinBalancer.pick()).
                let index = UInt32(truncatingIfNeeded: n) % UInt32(truncatingIfNeeded: count)
                let position = words[Int(truncatingIfNeeded: index)].load(ordering: .relaxed)
                return EndpointPick(index: Int(truncatingIfNeeded: position), generation: generation)
            }
        }
    }

    /// A uniformly random entry, from 64 random bits (tables of usable positions).
    @inlinable @inline(__always)
    func pickUniform(_ random: UInt64) -> EndpointPick?? {
        _withUnsafeGuaranteedRef {
            $0.read { generation, count, words -> EndpointPick? in
                guard count > 0 else { return nil }
                let column = random.multipliedFullWidth(by: UInt64(count)).high
                let position = words[Int(truncatingIfNeeded: column)].load(ordering: .relaxed)
                return EndpointPick(index: Int(truncatingIfNeeded: position), generation: generation)
            }
        }
    }

    /// A weighted random entry of an alias table (see ``TableBuilders/aliasTable(_:_:)``).
    @inlinable @inline(__always)
    func pickAlias(_ random: UInt64) -> EndpointPick?? {
        _withUnsafeGuaranteedRef {
            $0.read { generation, count, words -> EndpointPick? in
                guard count > 0 else { return nil }
                return EndpointPick(index: TableBuilders.aliasPick(random, columns: count / 2, words), generation: generation)
            }
        }
    }
}
