import Synchronization

/// The shared core of publishers: holds the current snapshot, keeps the last good set through
/// failures (per a ``StalenessPolicy``), and fans every change out to all subscribers.
///
/// A publisher calls ``publish(_:)`` with each whole set it discovers and ``fail(_:)`` with each
/// registry error, and returns ``updates()`` from ``InstancePublisher/updates()``.
///
/// Each subscriber has a buffer of one: a subscriber that falls behind gets the newest snapshot,
/// not every intermediate one. Nothing blocks the publisher.
public final class InstanceBroadcaster: Sendable {
    private struct State {
        var lastGood: [Instance]?
        var current: InstanceUpdate?
        var firstFailure: ContinuousClock.Instant?
        var subscribers: [Int: AsyncStream<InstanceUpdate>.Continuation] = [:]
        var nextSubscriber = 0
        var finished = false
    }

    private let state = Mutex(State())
    private let policy: StalenessPolicy
    private let now: @Sendable () -> ContinuousClock.Instant

    /// Creates a broadcaster.
    ///
    /// - Parameter staleness: What to do with the last good set while the registry fails.
    ///   Default ``StalenessPolicy/keepLastGood``.
    public convenience init(staleness: StalenessPolicy = .keepLastGood) {
        self.init(staleness: staleness, now: { ContinuousClock.now })
    }

    /// Creates a broadcaster with an injected time source (for tests).
    package init(staleness: StalenessPolicy, now: @escaping @Sendable () -> ContinuousClock.Instant) {
        self.policy = staleness
        self.now = now
    }

    /// The current snapshot, if any has been published or failed.
    public var current: InstanceUpdate? { state.withLock { $0.current } }

    /// The number of live subscriptions.
    public var subscriberCount: Int { state.withLock { $0.subscribers.count } }

    /// Publishes a whole new set. Instances are ordered by id; duplicate ids keep the first.
    ///
    /// A set equal to the current good one is not sent again.
    public func publish(_ instances: [Instance]) {
        var seen = Set<String>()
        let unique = instances.filter { seen.insert($0.id).inserted }.sorted()
        let update = InstanceUpdate(instances: unique)
        state.withLock { state in
            guard !state.finished else { return }
            let unchanged = state.current.map { $0.error == nil && $0.instances == unique } ?? false
            state.lastGood = unique
            state.firstFailure = nil
            state.current = update
            if unchanged { return }
            for continuation in state.subscribers.values { continuation.yield(update) }
        }
    }

    /// Reports a registry failure: subscribers get the last good set with `error` attached (or an
    /// empty set, once failures outlast the staleness policy).
    public func fail(_ error: DiscoveryError) {
        let time = now()
        state.withLock { state in
            guard !state.finished else { return }
            let first = state.firstFailure ?? time
            state.firstFailure = first
            var update = InstanceUpdate(instances: state.lastGood ?? [], error: error)
            if let limit = policy.invalidateAfter, time - first >= limit, !(state.lastGood ?? []).isEmpty {
                update.instances = []
                update.error = DiscoveryError(
                    code: .invalidated,
                    message: "registry failures have lasted \(time - first), past the limit of \(limit): the last good set is dropped",
                    cause: error
                )
            } else if let limit = policy.invalidateAfter, time - first >= limit {
                update.instances = []
            }
            state.current = update
            for continuation in state.subscribers.values { continuation.yield(update) }
        }
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
            defer { state.subscribers.removeAll() }
            return Array(state.subscribers.values)
        }
        for continuation in continuations { continuation.finish() }
    }

    deinit {
        let continuations = state.withLock { Array($0.subscribers.values) }
        for continuation in continuations { continuation.finish() }
    }
}
