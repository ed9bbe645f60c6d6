import Synchronization

/// What an ``EndpointCache`` knows about its discovery at one moment: whether the registry has
/// answered, the last error and when it came, and whether the set is stale (kept through failures)
/// and since when.
///
/// Read it with ``EndpointCache/discoveryStatus``; wait for readiness with
/// ``EndpointCache/waitUntilReady(timeout:clock:)``.
///
/// Times are `ContinuousClock` instants (monotonic, not wall-clock time): subtract one from
/// `ContinuousClock.now` to tell how long ago it was.
public struct DiscoveryStatus: Sendable, CustomStringConvertible {
    /// Whether the registry has answered at least once with a set (an update without a registry
    /// failure, or with only ``DiscoveryError/Code/invalidInstances``), or the set was given by hand
    /// with ``EndpointCache/update(with:)``. Failures after that do not make it false again.
    public var isReady = false
    /// Whether the cache has shut down (its set is empty for good).
    public var isShutDown = false
    /// How many updates the cache has received.
    public var updates = 0
    /// When the last update arrived.
    public var lastUpdateAt: ContinuousClock.Instant?
    /// When the registry last answered (an update that carries no registry failure).
    public var lastSuccessAt: ContinuousClock.Instant?
    /// The newest error an update carried, kept after the registry recovers (compare
    /// ``lastErrorAt`` with ``lastSuccessAt``). Bad instances (``DiscoveryError/Code/invalidInstances``)
    /// are recorded here too, without making the set stale.
    public var lastError: DiscoveryError?
    /// When ``lastError`` arrived.
    public var lastErrorAt: ContinuousClock.Instant?
    /// When the current run of registry failures began: since then the set is the last good one,
    /// kept (or dropped, see ``isInvalidated``) while the registry fails. `nil` while the registry
    /// answers.
    public var staleSince: ContinuousClock.Instant?
    /// How many updates in a row have carried a registry failure.
    public var consecutiveFailures = 0
    /// Whether the staleness policy has dropped the last good set (the set is empty until the
    /// registry answers again).
    public var isInvalidated = false

    /// A status with nothing received yet.
    public init() {}

    /// Whether the set is stale: the registry is failing, so the set is the last good one (or empty).
    public var isStale: Bool { staleSince != nil }

    /// Folds one update in, received at `time`.
    package mutating func record(_ update: InstanceUpdate, at time: ContinuousClock.Instant) {
        updates += 1
        lastUpdateAt = time
        if let error = update.error {
            lastError = error
            lastErrorAt = time
        }
        if update.error == nil || update.error?.code == .invalidInstances {
            // The registry answered: the set is fresh.
            isReady = true
            lastSuccessAt = time
            staleSince = nil
            consecutiveFailures = 0
            isInvalidated = false
        } else {
            consecutiveFailures += 1
            if staleSince == nil { staleSince = time }
            if update.error?.code == .invalidated { isInvalidated = true }
        }
    }

    /// The state in a few words, durations measured back from `now`: `ready`, `stale for 2.1s
    /// (invalidated)`, `last error 0.4s ago: ...`.
    public func description(now: ContinuousClock.Instant) -> String {
        var parts: [String] = []
        if isShutDown {
            parts.append("shut down")
        } else if isReady {
            parts.append("ready")
        } else {
            parts.append("not ready")
        }
        if let staleSince {
            parts.append(
                "stale for \((now - staleSince).formatted())"
                    + " (\(consecutiveFailures) failure\(consecutiveFailures == 1 ? "" : "s")\(isInvalidated ? ", set invalidated" : ""))"
            )
        }
        if let lastError, let lastErrorAt {
            parts.append("last error \((now - lastErrorAt).formatted()) ago: \(lastError)")
        }
        return parts.joined(separator: ", ")
    }

    /// ``description(now:)`` at the current time.
    public var description: String { description(now: .now) }
}

/// The discovery status of one cache and the tasks waiting for it to become ready.
///
/// Its own lock, apart from the cache's: recording a status never contends with publishing a set.
final class DiscoveryStatusRecorder: Sendable {
    private struct State {
        var status = DiscoveryStatus()
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0

        mutating func takeWaiters() -> [CheckedContinuation<Void, Never>] {
            defer { waiters.removeAll() }
            return Array(waiters.values)
        }
    }

    private let state = Mutex(State())

    init() {}

    var status: DiscoveryStatus { state.withLock { $0.status } }

    /// How many tasks wait for readiness now (for tests).
    var waiterCount: Int { state.withLock { $0.waiters.count } }

    /// Records an update from the publisher; wakes the waiters when it makes the status ready.
    func record(_ update: InstanceUpdate) {
        let now = ContinuousClock.now
        let waiters = state.withLock { state in
            state.status.record(update, at: now)
            return state.status.isReady ? state.takeWaiters() : []
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Marks the status ready (a set given by hand); wakes the waiters.
    func markReady() {
        let waiters = state.withLock { state in
            state.status.isReady = true
            return state.takeWaiters()
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Marks the status shut down; wakes the waiters.
    func markShutDown() {
        let waiters = state.withLock { state in
            state.status.isShutDown = true
            return state.takeWaiters()
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the status is ready or shut down, or the task is cancelled.
    func waitUntilReadyOrShutDown() async {
        let id = state.withLock { state -> Int in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let done = state.withLock { state -> Bool in
                    if state.status.isReady || state.status.isShutDown || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if done { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}
