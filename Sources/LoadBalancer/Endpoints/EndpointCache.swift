import Logging
import ServiceLifecycle
import Synchronization

/// Keeps one endpoint per instance across registry updates and publishes the current
/// ``EndpointSet`` for balancers.
///
/// Feed it instance sets, either by running it over a publisher (``run()``, or as a `Service` in a
/// `ServiceGroup`) or by hand with ``update(with:)``. For each update the cache:
///
/// - keeps the endpoint of every instance id that stays (the *same* ``Endpoint`` object, so its
///   connections and load state survive),
/// - asks the ``EndpointFactory`` for an endpoint for every new id; a factory that throws is logged,
///   its instance is left out, and it is asked again at the next update,
/// - publishes a new immutable snapshot ordered by instance id,
/// - and only then closes the endpoints of removed ids, each exactly once.
///
/// When ``run()`` ends (its task is cancelled, or the publisher finishes) the cache publishes an
/// empty set and closes every endpoint it still holds.
///
/// Balancers read the cache's ``version`` (one atomic load of a word that changes only with the
/// set) on every pick, so the pick path never takes the cache's lock; the built-in balancers derive
/// their snapshot of a new set while the cache publishes it (before ``version`` moves), so no pick
/// waits for that work. Updates are serialised among themselves; no observer runs under the
/// cache's lock.
///
/// An update costs a walk of the new set beside the published one in id order (a set already
/// ordered by id, as publishers deliver it, is neither deduplicated nor sorted again), endpoints
/// made for new ids only, and arrays copied in runs: no hashing of the ids that stay. An update
/// that says what changed (``InstanceUpdate/changes``, from etcd's and ZooKeeper's publishers)
/// against the set the cache last applied costs a binary search per changed id instead of the
/// walk; the result is the same.
public final class EndpointCache<Request: Sendable, Response: Sendable>: Sendable {
    /// Increases by one with every published set (never wraps in practice); balancers compare it
    /// with the version their snapshot was derived from.
    @usableFromInline
    let publishedVersion = Atomic<UInt64>(0)

    private let factory: EndpointFactory<Request, Response>
    private let publisher: (any InstancePublisher)?
    private let logger: Logger
    /// Metrics and tracing, when configured.
    let instruments: Instruments?
    let updateLock = AsyncLock()
    private let state = Mutex(State())
    /// The discovery status (readiness, errors, staleness) and its waiters.
    private let discovery = DiscoveryStatusRecorder()
    /// How many tasks wait in ``waitUntilReady()`` now (for tests).
    var readinessWaiterCount: Int { discovery.waiterCount }

    private struct Entry {
        var instance: Instance
        var managed: ManagedEndpoint<Request, Response>
        var slot: UInt32 = 0
    }

    private struct WeakObserver {
        weak var observer: (any EndpointSetObserver)?
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var generation: UInt32 = 0
        var updates = 0
        var isShutDown = false
        var factoryFailures: [String: String] = [:]
        var observers: [WeakObserver] = []
        var current = EndpointSet<Request, Response>(endpoints: [], instances: [], slots: [], generation: 0)
        var version: UInt64 = 0
        /// The set being published and the version it will have, while observers hear of it.
        var publishing: (set: EndpointSet<Request, Response>, version: UInt64)?
        /// Slots of removed endpoints, reused oldest first.
        var freeSlots: [UInt32] = []
        var freeSlotsHead = 0
        var nextSlot: UInt32 = 0
        /// The ``InstanceUpdate/serial`` of the publisher's set that the published set is exactly
        /// (every instance of it made an endpoint); `nil` when unknown.
        var appliedSerial: UInt64?
        /// Updates applied by their hint (``InstanceUpdate/changes``), not by a walk (for tests).
        var appliedByHint = 0

        mutating func takeSlot() -> UInt32 {
            if freeSlotsHead < freeSlots.count {
                defer {
                    freeSlotsHead += 1
                    if freeSlotsHead > 64, freeSlotsHead * 2 > freeSlots.count {
                        freeSlots.removeFirst(freeSlotsHead)
                        freeSlotsHead = 0
                    }
                }
                return freeSlots[freeSlotsHead]
            }
            defer { nextSlot += 1 }
            return nextSlot
        }

        mutating func liveObservers() -> [any EndpointSetObserver] {
            observers.removeAll { $0.observer == nil }
            return observers.compactMap(\.observer)
        }
    }

    /// Creates a cache that ``run()`` feeds from `publisher`.
    ///
    /// - Parameters:
    ///   - publisher: Where instance sets come from.
    ///   - factory: Makes an endpoint for each new instance.
    ///   - logger: Where the cache logs (registry errors, factory failures, close failures).
    ///     Default: a logger that discards everything.
    ///   - instrumentation: Metrics and tracing for the calls balanced over this cache. Default: none.
    public init(
        publisher: some InstancePublisher,
        factory: EndpointFactory<Request, Response>,
        logger: Logger = Logger(label: "loadbalancer", factory: { _ in SwiftLogNoOpLogHandler() }),
        instrumentation: LoadBalancerInstrumentation? = nil
    ) {
        self.publisher = publisher
        self.factory = factory
        self.logger = logger
        self.instruments = instrumentation.map(Instruments.init)
    }

    /// Creates a cache fed by hand with ``update(with:)``.
    public init(
        factory: EndpointFactory<Request, Response>,
        logger: Logger = Logger(label: "loadbalancer", factory: { _ in SwiftLogNoOpLogHandler() }),
        instrumentation: LoadBalancerInstrumentation? = nil
    ) {
        self.publisher = nil
        self.factory = factory
        self.logger = logger
        self.instruments = instrumentation.map(Instruments.init)
    }

    /// Creates a cache that already holds `endpoints` (a fixed set, for tests and simple clients).
    ///
    /// The endpoints need no closing. Later calls to ``update(with:)`` may only name instances of these endpoints.
    public convenience init(endpoints: [Endpoint<Request, Response>]) async {
        let byID = Dictionary(endpoints.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        self.init(
            factory: EndpointFactory { instance in
                guard let endpoint = byID[instance.id] else {
                    throw LoadBalancerError(code: .unknownInstance, message: "no fixed endpoint for \(instance.id)")
                }
                return ManagedEndpoint(endpoint)
            }
        )
        await self.update(with: endpoints.map(\.instance))
    }

    // MARK: Reading

    /// The version of the current set: one atomic load. It changes exactly when a new set is
    /// published; a balancer derives a new snapshot when it differs from the one it last used.
    @inlinable
    public var version: UInt64 { publishedVersion.load(ordering: .acquiring) }

    /// Whether tracing is configured.
    @usableFromInline
    package var hasTracer: Bool { instruments?.tracer != nil }

    /// Whether metrics or tracing are configured.
    @usableFromInline
    package var hasInstruments: Bool { instruments != nil }

    /// Reports a call made on a lease outside ``Balancer/withEndpoint(isolation:_:)`` (a transport
    /// that times its own streams) to the per-instance metrics: requests, failures, latency.
    package func instrumentCall(_ instanceID: String, outcome: CallRecord.Outcome, latency: Duration) {
        instruments?.called(instanceID, outcome: outcome, latency: latency)
    }

    /// Makes a lease with `leaser`, counting it as a pick (or a call with no endpoint) of `balancer`.
    @usableFromInline
    package func countPick<B: Balancer>(
        by balancer: B,
        _ leaser: () throws(LoadBalancerError) -> EndpointLease<Request, Response>
    ) throws(LoadBalancerError) -> EndpointLease<Request, Response> {
        guard let instruments else { return try leaser() }
        do {
            let lease = try leaser()
            instruments.picked(by: B.self) { balancer.name }
            return lease
        } catch {
            instruments.foundNoEndpoint(B.self) { balancer.name }
            throw error
        }
    }

    /// The current snapshot.
    public var snapshot: EndpointSet<Request, Response> {
        state.withLock { $0.current }
    }

    /// The current snapshot and its ``version``, read together.
    package var versionedSnapshot: (set: EndpointSet<Request, Response>, version: UInt64) {
        state.withLock { ($0.current, $0.version) }
    }

    /// The endpoint a pick refers to, if the pick was made against the current snapshot.
    ///
    /// Returns `nil` when the set has changed since the pick (its generation differs): pick again.
    public func endpoint(for pick: EndpointPick) -> Endpoint<Request, Response>? {
        let set = snapshot
        guard set.generation == pick.generation, pick.index >= 0, pick.index < set.count else { return nil }
        return set[pick.index]
    }

    /// The set being published and the ``version`` it will have, while its observers hear of it
    /// (``EndpointSetObserver/endpointSetWillPublish(_:)``): a balancer builds what it derives from
    /// the set then, before readers see it, so that no pick waits for that build.
    package var publishing: (set: EndpointSet<Request, Response>, version: UInt64)? {
        state.withLock { $0.publishing }
    }

    /// Publishes `set`: its observers hear of it first (outside the lock, in update order), then
    /// readers see it. Callers hold the update lock.
    private func publish(_ set: EndpointSet<Request, Response>) {
        let observers = state.withLock { state in
            state.publishing = (set, state.version &+ 1)
            return state.liveObservers()
        }
        for observer in observers { observer.endpointSetWillPublish(set.view) }
        state.withLock { state in
            state.current = set
            state.version &+= 1
            state.publishing = nil
            publishedVersion.store(state.version, ordering: .releasing)
        }
        // Balancers let go of the snapshots of older sets (and so of removed endpoints) now,
        // not at their shards' next pick.
        for observer in observers { observer.endpointSetDidPublish(set.view) }
    }

    // MARK: Updating

    /// Applies a whole new set of instances.
    ///
    /// Updates run one at a time, in call order. Instances with the same id are merged (the first wins).
    /// After ``run()`` has ended, updates are ignored. A set given by hand makes the cache ready
    /// (see ``waitUntilReady()``). A task cancelled while it waits for the update before it returns
    /// at once, its set not applied.
    public func update(with instances: [Instance]) async {
        do {
            try await updateLock.withLock {
                await self.apply(InstanceUpdate(instances: instances))
            }
        } catch {
            return // Cancelled while waiting: the set is not applied.
        }
        discovery.markReady()
    }

    /// Applies a publisher's update as ``run()`` does: its instances, using what it says changed
    /// (``InstanceUpdate/changes``) when that applies to the set the cache last applied, and its
    /// error, if any, recorded in ``discoveryStatus`` (and logged).
    ///
    /// Use it to feed the cache from a publisher's ``InstancePublisher/updates()`` by hand. Updates
    /// run one at a time, in call order; after ``run()`` has ended they are ignored. A task
    /// cancelled while it waits for the update before it returns at once, its update not applied.
    ///
    /// - Parameter update: The update, as a publisher delivered it.
    public func update(from update: InstanceUpdate) async {
        logIfFailed(update)
        do {
            try await updateLock.withLock {
                await self.apply(update)
            }
        } catch {
            return // Cancelled while waiting: the update is not applied.
        }
        discovery.record(update)
    }

    private func logIfFailed(_ update: InstanceUpdate) {
        guard let error = update.error else { return }
        logger.warning(
            "registry error; keeping the last good set",
            metadata: [
                "loadbalancer.error": "\(error)",
                "loadbalancer.instances": "\(update.instances.count)",
            ]
        )
    }

    /// What a new set changes against the published one, found by walking both in id order (no
    /// hashing of the ids that stay) or from an update's hint: the instances to make endpoints
    /// for, the ids removed, the instances whose fields changed, and where the published set
    /// changes.
    private struct Difference {
        var added: [Instance] = []
        var removed: [String] = []
        var changed: [Instance] = []
        /// The places where the published set changes, in id order.
        var edits: [Edit] = []
        /// Found from an update's hint (``InstanceUpdate/changes``), not by a walk.
        var byHint = false
    }

    /// One place where the published set changes, in id order: the instance at an old position
    /// leaves, or an added instance (``Difference/added`` at `added`) comes in before an old
    /// position, at a position of the new set.
    private enum Edit {
        case remove(old: Int)
        case insert(beforeOld: Int, added: Int, new: Int)
    }

    /// The first index of `instances` (ordered by id) whose id is not below `id`.
    private static func position(of id: String, in instances: UnsafeBufferPointer<Instance>) -> Int {
        partitionPoint(count: instances.count) { instances[$0].id < id }
    }

    /// The difference from `current` (the published set, exactly the publisher's set that
    /// `changes` starts from) to `wanted`, found from `changes` by binary searches, or `nil` when
    /// the change does not fit the two sets (an id removed that is not there, a count that does
    /// not add up, an instance not where the change puts it): then the sets are compared whole.
    private static func difference(from current: [Instance], to wanted: [Instance], changes: InstanceChanges) -> Difference? {
        let removedIDs = changes.removed
        let upserted = changes.upserted
        var difference = Difference()
        difference.byHint = true
        difference.edits.reserveCapacity(changes.count)
        let fits = current.withUnsafeBufferPointer { current -> Bool in
            wanted.withUnsafeBufferPointer { wanted -> Bool in
                upserted.withUnsafeBufferPointer { upserted -> Bool in
                    // Both lists in id order, walked together: old positions only grow.
                    var r = 0
                    var u = 0
                    var removedBefore = 0 // removed instances at old positions below the cursor
                    var addedBefore = 0
                    var lastOld = -1
                    while r < removedIDs.count || u < upserted.count {
                        let takeRemoved: Bool
                        if r < removedIDs.count, u < upserted.count {
                            if removedIDs[r] == upserted[u].id { return false }
                            takeRemoved = removedIDs[r] < upserted[u].id
                        } else {
                            takeRemoved = r < removedIDs.count
                        }
                        if takeRemoved {
                            let id = removedIDs[r]
                            let old = position(of: id, in: current)
                            guard old < current.count, current[old].id == id, old > lastOld else { return false }
                            lastOld = old
                            difference.edits.append(.remove(old: old))
                            difference.removed.append(id)
                            removedBefore += 1
                            r += 1
                        } else {
                            let instance = upserted.baseAddress! + u
                            let old = position(of: instance.pointee.id, in: current)
                            if old < current.count, current[old].id == instance.pointee.id {
                                guard old > lastOld else { return false }
                                lastOld = old
                                // A change of fields: the instance must be where the change puts it.
                                let new = old - removedBefore + addedBefore
                                guard new < wanted.count, sameFields(wanted.baseAddress! + new, instance) else { return false }
                                if !sameFields(current.baseAddress! + old, instance) {
                                    difference.changed.append(instance.pointee)
                                }
                            } else {
                                guard old > lastOld else { return false }
                                lastOld = old - 1 // The next edit may still be before `old`.
                                let new = old - removedBefore + addedBefore
                                guard new < wanted.count, sameFields(wanted.baseAddress! + new, instance) else { return false }
                                difference.edits.append(.insert(beforeOld: old, added: difference.added.count, new: new))
                                difference.added.append(instance.pointee)
                                addedBefore += 1
                            }
                            u += 1
                        }
                    }
                    return current.count - removedBefore + addedBefore == wanted.count
                }
            }
        }
        return fits ? difference : nil
    }

    /// The difference from `current` to `wanted`, or `nil` when `wanted` is not ordered by id (its
    /// ids do not increase strictly): then it needs ordering first.
    private static func difference(from current: [Instance], to wanted: [Instance]) -> Difference? {
        var difference = Difference()
        // Read through buffer pointers: an element is borrowed, not copied (an instance's copy
        // retains its five strings and collections).
        let ordered = current.withUnsafeBufferPointer { current in
            wanted.withUnsafeBufferPointer { wanted in
                var old = 0
                for new in wanted.indices {
                    if new > 0, !(wanted[new - 1].id < wanted[new].id) { return false }
                    while old < current.count, current[old].id < wanted[new].id {
                        difference.edits.append(.remove(old: old))
                        difference.removed.append(current[old].id)
                        old += 1
                    }
                    if old < current.count, current[old].id == wanted[new].id {
                        if !sameFields(current.baseAddress! + old, wanted.baseAddress! + new) {
                            difference.changed.append(wanted[new])
                        }
                        old += 1
                    } else {
                        difference.edits.append(.insert(beforeOld: old, added: difference.added.count, new: new))
                        difference.added.append(wanted[new])
                    }
                }
                while old < current.count {
                    difference.edits.append(.remove(old: old))
                    difference.removed.append(current[old].id)
                    old += 1
                }
                return true
            }
        }
        return ordered ? difference : nil
    }

    /// Whether two instances are equal, read in place (comparing `Instance` values would copy both).
    @inline(__always)
    private static func sameFields(_ a: UnsafePointer<Instance>, _ b: UnsafePointer<Instance>) -> Bool {
        a.pointee.port == b.pointee.port && a.pointee.weight == b.pointee.weight && a.pointee.priority == b.pointee.priority
            && a.pointee.id == b.pointee.id && a.pointee.host == b.pointee.host && a.pointee.zone == b.pointee.zone
            && a.pointee.tags == b.pointee.tags && a.pointee.metadata == b.pointee.metadata
    }

    /// The endpoints and slots of `wanted` (ordered by id), from `current`'s with `edits` made:
    /// the runs between edits copied whole (element by element, generic code would look up the
    /// endpoint type's metadata each time), `made`'s endpoints inserted; the instances whose
    /// factory failed are left out of all three arrays.
    private static func publishedArrays(
        _ wanted: [Instance], edits: [Edit], added: [Instance], current: EndpointSet<Request, Response>, made: [String: Entry]
    ) -> (endpoints: [Endpoint<Request, Response>], instances: [Instance], slots: [UInt32]) {
        var endpoints: [Endpoint<Request, Response>] = []
        var slots: [UInt32] = []
        endpoints.reserveCapacity(wanted.count)
        slots.reserveCapacity(wanted.count)
        var leftOut: [Int] = []
        // Read once: a stored property of a generic class is found through its type's metadata.
        let oldEndpoints = current.endpoints
        let oldSlots = current.slots
        var cursor = 0
        func copy(upTo end: Int) {
            guard cursor < end else { return }
            endpoints.append(contentsOf: oldEndpoints[cursor..<end])
            slots.append(contentsOf: oldSlots[cursor..<end])
            cursor = end
        }
        for edit in edits {
            switch edit {
            case .remove(let old):
                copy(upTo: old)
                cursor = old + 1
            case .insert(let beforeOld, let index, let new):
                copy(upTo: beforeOld)
                if let entry = made[added[index].id] {
                    endpoints.append(entry.managed.endpoint)
                    slots.append(entry.slot)
                } else {
                    leftOut.append(new) // Its factory failed.
                }
            }
        }
        copy(upTo: oldEndpoints.count)
        var instances = wanted
        for index in leftOut.reversed() { instances.remove(at: index) }
        return (endpoints, instances, slots)
    }

    private func apply(_ update: InstanceUpdate) async {
        // The published set is the cache's entries (updates are serialised: it cannot change
        // before this one publishes), ordered by id: a merge finds what changed. A set that is not
        // ordered by id (publishers deliver it so) is deduplicated and ordered first. An update
        // that says what changed since the set the cache last applied is applied by that instead.
        let (current, isShutDown, appliedSerial) = state.withLock { ($0.current, $0.isShutDown, $0.appliedSerial) }
        if isShutDown { return }
        if let serial = update.serial, serial == appliedSerial {
            // The very set the published one is: nothing changes (as a walk would find).
            state.withLock { state in
                state.updates += 1
                state.factoryFailures = [:]
            }
            return
        }
        let newInstances = update.instances
        var wanted = newInstances
        let difference: Difference
        if let changes = update.changes, let base = appliedSerial, changes.base == base,
            let hinted = Self.difference(from: current.instances, to: wanted, changes: changes)
        {
            difference = hinted
        } else if let ordered = Self.difference(from: current.instances, to: wanted) {
            difference = ordered
        } else {
            wanted = Instance.orderedByID(newInstances)
            difference = Self.difference(from: current.instances, to: wanted)!
        }

        // Make endpoints for new ids, outside the lock (factories may be slow).
        var made: [String: Entry] = [:]
        var failures: [String: String] = [:]
        for instance in difference.added {
            do {
                let managed = try await factory(instance)
                made[instance.id] = Entry(instance: instance, managed: managed)
            } catch {
                failures[instance.id] = "\(error)"
                logger.warning(
                    "endpoint factory failed; the instance is left out until the next update",
                    metadata: [
                        "loadbalancer.instance": "\(instance.id)",
                        "loadbalancer.error": "\(error)",
                    ]
                )
            }
        }

        let (removed, published, lateFactoryEndpoints) = state.withLock {
            state -> ([Entry], EndpointSet<Request, Response>?, [Entry]) in
            if state.isShutDown {
                // Shut down while the factories ran: close what they made.
                return ([], nil, Array(made.values))
            }
            var removed: [Entry] = []
            for id in difference.removed {
                if let entry = state.entries.removeValue(forKey: id) { removed.append(entry) }
            }
            for id in made.keys.sorted() {
                made[id]!.slot = state.takeSlot()
                state.entries[id] = made[id]
            }
            for instance in difference.changed {
                state.entries[instance.id]?.instance = instance
            }
            let changed = !removed.isEmpty || !made.isEmpty || !difference.changed.isEmpty
            state.factoryFailures = failures
            state.updates += 1
            // The published set is the publisher's exactly when every instance made an endpoint.
            state.appliedSerial = failures.isEmpty ? update.serial : nil
            if difference.byHint { state.appliedByHint += 1 }
            var published: EndpointSet<Request, Response>? = nil
            if changed || state.updates == 1 {
                state.generation &+= 1
                let (endpoints, instances, slots) = Self.publishedArrays(
                    wanted, edits: difference.edits, added: difference.added, current: current, made: made)
                published = EndpointSet(endpoints: endpoints, instances: instances, slots: slots, generation: state.generation)
            }
            // The removed endpoints' slots can be reused once they are closed; queueing them now
            // is safe because a slot is only handed out at a later update.
            state.freeSlots.append(contentsOf: removed.map(\.slot))
            return (removed, published, [])
        }
        if let published {
            publish(published)
            // The one log line of a registry change (publishers log their own steps at debug).
            logger.info(
                "instances changed",
                metadata: [
                    "loadbalancer.generation": "\(published.generation)",
                    "loadbalancer.endpoints": "\(published.count)",
                    "loadbalancer.added": "\(made.count)",
                    "loadbalancer.removed": "\(removed.count)",
                ]
            )
            instruments?.setChanged(published.instances.map(\.id))
        }
        // The removed endpoints have left the published snapshot: close them now, once each.
        await close(removed + lateFactoryEndpoints)
    }

    private func close(_ entries: [Entry]) async {
        await withTaskGroup(of: Void.self) { group in
            for entry in entries {
                guard let close = entry.managed.close else { continue }
                let logger = self.logger
                group.addTask {
                    do {
                        try await close()
                    } catch {
                        logger.warning(
                            "closing an endpoint failed",
                            metadata: [
                                "loadbalancer.instance": "\(entry.instance.id)",
                                "loadbalancer.error": "\(error)",
                            ]
                        )
                    }
                }
            }
        }
    }

    /// Waits until the cache is ready: the registry has answered once with a set (see
    /// ``DiscoveryStatus/isReady``), or a set was given with ``update(with:)``; or until the cache
    /// has shut down, or the waiting task is cancelled.
    ///
    /// Use it to hold the first request until discovery has answered once. Updates that only carry
    /// a registry failure (the registry is down at start-up) do not make the cache ready: it keeps
    /// waiting while the publisher retries. It returns on cancellation without throwing; to learn
    /// why the cache is not ready, use ``waitUntilReady(timeout:clock:)`` or read
    /// ``discoveryStatus``.
    public func waitUntilReady() async {
        await discovery.waitUntilReadyOrShutDown()
    }

    /// Waits until the cache is ready (as ``waitUntilReady()``), at most `timeout`.
    ///
    /// ```swift
    /// try await cache.waitUntilReady(timeout: .seconds(5))
    /// ```
    ///
    /// - Parameters:
    ///   - timeout: How long to wait.
    ///   - clock: The clock `timeout` is measured on. Default: `ContinuousClock`.
    /// - Throws: `CancellationError` when the task is cancelled. ``DiscoveryError`` with code
    ///   ``DiscoveryError/Code/notReady`` when `timeout` passes first, or the cache shuts down
    ///   before it was ready: its message says why (no update yet, or how long the registry has
    ///   been failing) and its ``DiscoveryError/cause`` is the last registry error, if any.
    public func waitUntilReady<C: Clock>(
        timeout: Duration,
        clock: C = ContinuousClock()
    ) async throws where C.Duration == Duration {
        let discovery = self.discovery
        let timedOut = try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                await discovery.waitUntilReadyOrShutDown()
                return false
            }
            group.addTask {
                try await clock.sleep(for: timeout)
                return true
            }
            defer { group.cancelAll() }
            return try await group.next() ?? false
        }
        try Task.checkCancellation()
        let status = discovery.status
        if status.isReady { return }
        let why: String
        if status.updates == 0 {
            why = "no update from the publisher yet"
        } else {
            why = "the registry has failed \(status.consecutiveFailures) time\(status.consecutiveFailures == 1 ? "" : "s") in a row"
        }
        throw DiscoveryError(
            code: .notReady,
            message: timedOut && !status.isShutDown
                ? "not ready after \(timeout.formatted()): \(why)" : "shut down before it was ready: \(why)",
            cause: status.lastError
        )
    }

    /// The discovery state now: ready or not, the last error and when, whether the set is stale
    /// and since when.
    public var discoveryStatus: DiscoveryStatus {
        discovery.status
    }

    /// Registers an observer of every set the cache publishes, and calls it at once with the current set.
    ///
    /// The cache holds the observer weakly and never calls it under its lock. An observer added
    /// while an update runs may hear of the newer set before the current one it is called with
    /// here; ``EndpointSetView/generation`` tells them apart.
    public func addObserver(_ observer: some EndpointSetObserver) {
        let current = state.withLock { state in
            state.observers.append(WeakObserver(observer: observer))
            return state.current.view
        }
        observer.endpointSetWillPublish(current)
    }

    /// How many updates were applied by what they said changed, without comparing the whole sets
    /// (for tests and benchmarks).
    package var updatesAppliedByHint: Int {
        state.withLock { $0.appliedByHint }
    }

    /// The ids whose factory failed at the last update, with the error text.
    public var factoryFailures: [String: String] {
        state.withLock { $0.factoryFailures }
    }

    /// Publishes an empty set and closes every endpoint. Later updates are ignored. Idempotent.
    ///
    /// It runs to its end even when the calling task is cancelled (as ``run()``'s is, when it
    /// ends): the endpoints must be closed.
    public func shutdown() async {
        // Not a child of the caller: a cancelled caller must not stop the shutdown waiting for
        // the update in progress.
        await Task { await self.shutDownAfterUpdates() }.value
    }

    private func shutDownAfterUpdates() async {
        try? await updateLock.withLock {
            let shutDown = state.withLock { state -> (entries: [Entry], generation: UInt32)? in
                guard !state.isShutDown else { return nil }
                state.isShutDown = true
                state.generation &+= 1
                defer { state.entries.removeAll() }
                return (Array(state.entries.values), state.generation)
            }
            var entries: [Entry] = []
            if let shutDown {
                publish(EndpointSet(endpoints: [], instances: [], slots: [], generation: shutDown.generation))
                entries = shutDown.entries
            }
            await close(entries)
        }
        discovery.markShutDown()
    }
}

extension EndpointCache: Service {
    /// Applies every update of the publisher until the task is cancelled, graceful shutdown is
    /// triggered, or the publisher finishes; then shuts down (publishes an empty set and closes
    /// every endpoint).
    ///
    /// A registry error carried by an update is logged and recorded in ``discoveryStatus``; the
    /// update's instances (the publisher's last good set, or empty once invalidated) are applied as
    /// usual.
    ///
    /// A cache made without a publisher waits for cancellation or graceful shutdown, then shuts down.
    public func run() async throws {
        if let publisher {
            await cancelWhenGracefulShutdown {
                for await update in publisher.updates() {
                    self.logIfFailed(update)
                    do {
                        try await self.updateLock.withLock {
                            await self.apply(update)
                        }
                    } catch {
                        return // Cancelled while waiting for an update by hand.
                    }
                    self.discovery.record(update)
                }
            }
        } else {
            try? await gracefulShutdown()
        }
        await shutdown()
    }
}
