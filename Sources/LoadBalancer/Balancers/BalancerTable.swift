import Synchronization

/// Keeps a balancer's derived table (a schedule, an alias table, a ring, a list of usable
/// positions) in step with the endpoint set and with outlier ejection.
///
/// It observes the cache (a new set) and the balancer's ``OutlierDetector`` (an ejection or a
/// return) and rebuilds the table on the writer's side of the change, so `pick()` only ever
/// reads it, lock-free (see ``SeqLockTable``).
@usableFromInline
package final class BalancerTable: EndpointSetObserver, OutlierObserver, @unchecked Sendable {
    @usableFromInline
    let table = SeqLockTable()
    private let lastView = Mutex<EndpointSetView?>(nil)
    private let detector: OutlierDetector?
    private let build: @Sendable (_ view: EndpointSetView, _ usable: [Int]) -> [UInt64]

    /// - Parameters:
    ///   - detector: Ejection to honour, if any.
    ///   - build: Makes the payload from the set and the positions that may take traffic (never
    ///     empty when the set is not).
    package init(
        detector: OutlierDetector?,
        build: @escaping @Sendable (_ view: EndpointSetView, _ usable: [Int]) -> [UInt64]
    ) {
        self.detector = detector
        self.build = build
    }

    /// Registers with the cache (and the detector), building the first table at once.
    package func attach<Request, Response>(to cache: EndpointCache<Request, Response>) {
        detector?.addObserver(self)
        cache.addObserver(self)
    }

    @usableFromInline
    package func endpointSetWillPublish(_ set: EndpointSetView) {
        lastView.withLock { view in
            view = set
            rebuild(set)
        }
    }

    @usableFromInline
    package func ejectionsChanged() {
        lastView.withLock { view in
            if let view { rebuild(view) }
        }
    }

    private func rebuild(_ view: EndpointSetView) {
        let usable = detector?.usablePositions(in: view) ?? Array(view.instances.indices)
        table.write(generation: view.generation, payload: view.count == 0 ? [] : build(view, usable))
    }
}

extension BalancerTable {
    /// Makes a table for `endpoints`, built by `build` (and rebuilt on every set or ejection
    /// change), attached to the cache and the detector. Returns the owner, which the balancer keeps,
    /// and the storage, which its `pick()` reads without reference counting.
    package static func attached<Request, Response>(
        to endpoints: EndpointCache<Request, Response>,
        ejection: OutlierDetector?,
        build: @escaping @Sendable (_ view: EndpointSetView, _ usable: [Int]) -> [UInt64]
    ) -> (owner: BalancerTable, storage: Unmanaged<SeqLockTable>) {
        let table = BalancerTable(detector: ejection, build: build)
        let storage = Unmanaged.passUnretained(table.table)
        table.attach(to: endpoints)
        return (table, storage)
    }
}

/// The first value of a balancer's counter or random state: `seed`, or random.
func initialState(_ seed: UInt64?) -> UInt64 {
    if let seed { return seed }
    var generator = SystemRandomNumberGenerator()
    return generator.next()
}
