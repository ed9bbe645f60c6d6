import Synchronization

/// The shared core of publishers: holds the current snapshot, keeps the last good set through
/// failures (per a ``StalenessPolicy``), and fans every change out to all subscribers.
///
/// A publisher calls ``publish(_:)`` with each whole set it discovers and ``fail(_:)`` with each
/// registry error, and returns ``updates()`` from ``InstancePublisher/updates()``.
///
/// With ``StalenessPolicy/invalidate(after:)``, the first failure after a good set starts a timer;
/// when it fires with no ``publish(_:)`` in between, subscribers get an empty set with an
/// ``DiscoveryError/Code/invalidated`` error whose cause is that *first* failure. It fires on time
/// whether or not more failures come in (a publisher that went quiet is invalidated too). Errors
/// with code ``DiscoveryError/Code/invalidInstances`` report bad entries next to a good set: they
/// do not start the timer.
///
/// Each subscriber has a buffer of one: a subscriber that falls behind gets the newest snapshot,
/// not every intermediate one. Nothing blocks the publisher.
///
/// Every update it sends carries an ``InstanceUpdate/serial`` (the same set, the same serial), and
/// an update of ``publish(_:upserted:removed:)`` also says what changed since the set of the
/// publish before it (``InstanceUpdate/changes``). A subscriber that skipped an update sees a base
/// that is not the set it holds, and compares the whole sets instead (the ``EndpointCache`` does).
public final class InstanceBroadcaster: Sendable {
    private struct State {
        var lastGood: [Instance]?
        var current: InstanceUpdate?
        /// The first failure of the current run of failures (the invalidation's cause).
        var firstFailure: DiscoveryError?
        /// Counts runs of failures, so that a timer of an earlier run does nothing.
        var failureRun = 0
        /// The staleness timer of the current run, if one is pending.
        var timer: Task<Void, Never>?
        /// Whether the current run of failures has outlasted the policy.
        var invalidated = false
        var subscribers: [Int: AsyncStream<InstanceUpdate>.Continuation] = [:]
        var nextSubscriber = 0
        var finished = false
        /// The last serial handed out (each new set content gets the next one).
        var serial: UInt64 = 0
        /// The serial of ``lastGood``, and what changed to make it, when the publisher said.
        var lastGoodSerial: UInt64?
        var lastGoodChanges: InstanceChanges?

        mutating func nextSerial() -> UInt64 {
            serial &+= 1
            return serial
        }

        /// Ends the run of failures, cancelling its timer.
        mutating func endFailures() {
            timer?.cancel()
            timer = nil
            firstFailure = nil
            invalidated = false
        }
    }

    private let state = Mutex(State())
    /// Updates dropped because a subscriber had not yet taken the one before (it gets the newest).
    private let coalesced = Atomic<Int>(0)
    private let policy: StalenessPolicy
    private let sleep: @Sendable (Duration) async throws -> Void

    /// Creates a broadcaster.
    ///
    /// - Parameter staleness: What to do with the last good set while the registry fails.
    ///   Default ``StalenessPolicy/keepLastGood``.
    public convenience init(staleness: StalenessPolicy = .keepLastGood) {
        self.init(staleness: staleness, clock: ContinuousClock())
    }

    /// Creates a broadcaster whose staleness timer runs on `clock` (tests pass a manual clock).
    package init<C: Clock>(staleness: StalenessPolicy, clock: C) where C.Duration == Duration {
        self.policy = staleness
        self.sleep = { duration in try await clock.sleep(for: duration) }
    }

    /// The current snapshot, if any has been published or failed.
    public var current: InstanceUpdate? { state.withLock { $0.current } }

    /// The number of live subscriptions.
    public var subscriberCount: Int { state.withLock { $0.subscribers.count } }

    /// How many updates were dropped, over all subscribers, because the subscriber had not yet taken
    /// the update before: a subscriber holds at most one update it has not taken (the newest), so a
    /// publisher that changes faster than a subscriber applies its sets queues nothing.
    package var coalescedUpdates: Int { coalesced.load(ordering: .relaxed) }

    /// Hands `update` to each subscriber, in place of one it has not taken yet, if any.
    private func yield(_ update: InstanceUpdate, to subscribers: Dictionary<Int, AsyncStream<InstanceUpdate>.Continuation>.Values) {
        for continuation in subscribers {
            if case .dropped = continuation.yield(update) { coalesced.add(1, ordering: .relaxed) }
        }
    }

    /// Publishes a whole new set. Instances are ordered by id; duplicate ids keep the first.
    ///
    /// A set equal to the current good one is not sent again.
    public func publish(_ instances: [Instance]) {
        publish(Instance.orderedByID(instances), changes: nil)
    }

    /// Publishes a whole new set and what changed since the set of the previous publish:
    /// subscribers get the set with ``InstanceUpdate/changes`` saying so, and an
    /// ``EndpointCache`` applies the change without comparing the whole sets.
    ///
    /// ```swift
    /// // A watch event said that 10.0.0.7:8080 left.
    /// instances.removeAll { $0.id == "10.0.0.7:8080" }
    /// broadcaster.publish(instances, upserted: [], removed: ["10.0.0.7:8080"])
    /// ```
    ///
    /// `instances` stays the set: when it is not ordered by id (or names an id twice), or the
    /// change names an id twice, or in both lists, the hint is dropped and the set published as
    /// ``publish(_:)`` would. The change must be exact: applied to the previous set, it gives
    /// `instances`. An empty change is checked against the current set, as ``publish(_:)`` does.
    ///
    /// - Parameters:
    ///   - instances: The whole new set, ordered by id, unique by id.
    ///   - upserted: The instances added or changed since the previous publish (any order).
    ///   - removed: The ids removed since the previous publish (any order).
    public func publish(_ instances: [Instance], upserted: [Instance], removed: [String]) {
        guard Instance.isOrderedByID(instances), let hint = Self.normalized(upserted: upserted, removed: removed) else {
            publish(Instance.orderedByID(instances), changes: nil)
            return
        }
        publish(instances, changes: hint)
    }

    /// The change ordered by id, or `nil` when it names an id twice or in both lists.
    private static func normalized(upserted: [Instance], removed: [String]) -> (upserted: [Instance], removed: [String])? {
        let upserted = Instance.isOrderedByID(upserted) ? upserted : upserted.sorted { $0.id < $1.id }
        let removed = removed.sorted()
        // Sorted, each list is unique when its ids increase strictly.
        guard Instance.isOrderedByID(upserted), zip(removed, removed.dropFirst()).allSatisfy({ $0 < $1 }) else { return nil }
        // No id in both: the two ordered lists walked together never meet on one id.
        var u = 0
        var r = 0
        while u < upserted.count, r < removed.count {
            if upserted[u].id == removed[r] { return nil }
            if upserted[u].id < removed[r] { u += 1 } else { r += 1 }
        }
        return (upserted, removed)
    }

    /// Publishes `unique` (ordered by id, unique), with the change since the previous publish when
    /// the publisher said what it was.
    private func publish(_ unique: [Instance], changes hint: (upserted: [Instance], removed: [String])?) {
        state.withLock { state in
            guard !state.finished else { return }
            let unchanged: Bool
            if let hint, !hint.upserted.isEmpty || !hint.removed.isEmpty {
                unchanged = false
            } else {
                unchanged = state.current.map { $0.error == nil && $0.instances == unique } ?? false
            }
            let base = state.lastGoodSerial
            state.lastGood = unique
            state.endFailures()
            if unchanged, let current = state.current {
                // The same set: it keeps its serial (and what changed to make it).
                state.current = InstanceUpdate(instances: unique, serial: current.serial, changes: current.changes)
                return
            }
            let serial = state.nextSerial()
            let changes = hint.flatMap { hint in
                base.map { InstanceChanges(base: $0, upserted: hint.upserted, removed: hint.removed) }
            }
            let update = InstanceUpdate(instances: unique, serial: serial, changes: changes)
            state.lastGoodSerial = serial
            state.lastGoodChanges = changes
            state.current = update
            yield(update, to: state.subscribers.values)
        }
    }

    /// Reports a registry failure: subscribers get the last good set with `error` attached (or an
    /// empty set, once the staleness timer has fired).
    ///
    /// The first failure after a good set starts the staleness timer, when the policy has a limit
    /// (a limit of zero invalidates at once). An ``DiscoveryError/Code/invalidInstances`` error
    /// reports bad entries beside the good set: it is sent with the last good set and starts no timer.
    public func fail(_ error: DiscoveryError) {
        state.withLock { state in
            guard !state.finished else { return }
            // The last good set keeps its serial; an empty one (no good set yet) gets a new one.
            var update: InstanceUpdate
            if let lastGood = state.lastGood, let serial = state.lastGoodSerial {
                update = InstanceUpdate(instances: lastGood, error: error, serial: serial, changes: state.lastGoodChanges)
            } else {
                update = InstanceUpdate(instances: state.lastGood ?? [], error: error, serial: state.nextSerial())
            }
            if error.code != .invalidInstances {
                if state.firstFailure == nil {
                    state.firstFailure = error
                    state.failureRun += 1
                    if let limit = policy.invalidateAfter {
                        if limit <= .zero {
                            state.invalidated = true
                        } else {
                            let run = state.failureRun
                            let sleep = self.sleep
                            state.timer = Task { [weak self] in
                                do { try await sleep(limit) } catch { return }
                                self?.invalidate(run: run)
                            }
                        }
                    }
                }
                // Without a good set there is nothing to drop: the error stays the registry's own.
                if state.invalidated, !(state.lastGood ?? []).isEmpty {
                    update = Self.invalidatedUpdate(first: state.firstFailure ?? error, latest: error, limit: policy.invalidateAfter)
                    update.serial = state.nextSerial()
                }
            }
            state.current = update
            yield(update, to: state.subscribers.values)
        }
    }

    /// The staleness timer of run `run` fired: drops the last good set, unless the run has ended.
    private func invalidate(run: Int) {
        state.withLock { state in
            guard !state.finished, state.failureRun == run, let first = state.firstFailure, !state.invalidated else { return }
            state.invalidated = true
            state.timer = nil
            // Without a good set there is nothing to drop: the current update is already empty.
            guard !(state.lastGood ?? []).isEmpty else { return }
            var update = Self.invalidatedUpdate(first: first, latest: nil, limit: policy.invalidateAfter)
            update.serial = state.nextSerial()
            state.current = update
            yield(update, to: state.subscribers.values)
        }
    }

    private static func invalidatedUpdate(first: DiscoveryError, latest: DiscoveryError?, limit: Duration?) -> InstanceUpdate {
        var message: String
        if let limit, limit > .zero {
            message = "registry failures have lasted \(limit.formatted()) or more: the last good set is dropped"
        } else {
            message = "the registry failed: the last good set is dropped at once (staleness limit zero)"
        }
        if let latest { message += "; latest failure: \(latest.code): \(latest.message)" }
        return InstanceUpdate(instances: [], error: DiscoveryError(code: .invalidated, message: message, cause: first))
    }

    /// A new subscription: the current snapshot first (if any), then every change.
    public func updates() -> InstanceUpdates {
        let (stream, continuation) = AsyncStream<InstanceUpdate>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = state.withLock { state -> Int? in
            if state.finished { return nil }
            let id = state.nextSubscriber
            state.nextSubscriber += 1
            state.subscribers[id] = continuation
            if let current = state.current { continuation.yield(current) }
            return id
        }
        if let id {
            continuation.onTermination = { [weak self] _ in
                self?.state.withLock { _ = $0.subscribers.removeValue(forKey: id) }
            }
        } else {
            continuation.finish()
        }
        return InstanceUpdates(stream)
    }

    /// Ends every subscription; later publishes and failures are ignored.
    public func finish() {
        let continuations = state.withLock { state -> [AsyncStream<InstanceUpdate>.Continuation] in
            state.finished = true
            state.endFailures()
            defer { state.subscribers.removeAll() }
            return Array(state.subscribers.values)
        }
        for continuation in continuations { continuation.finish() }
    }

    deinit {
        let continuations = state.withLock { state in
            state.timer?.cancel()
            return Array(state.subscribers.values)
        }
        for continuation in continuations { continuation.finish() }
    }
}
