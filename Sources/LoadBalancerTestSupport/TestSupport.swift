import LoadBalancer
import LoadBalancerTestKit
import Synchronization

// Helpers the test suites share that need nothing but the core: bounded waiting, a flag, recording
// a publisher's updates, and running services beside a test. Apart from LoadBalancerTestServers
// (which exports this module), so that the sanitizer runs' subset of the package, which leaves
// out the registry modules over AsyncHTTPClient and gRPC, can use them.

/// The test kit's `pollUntil`, every 10 ms, 20 s by default (scaled by `TestTimeScale`): throws its
/// `TestKitError` (`timedOut`, naming `what`) when `timeout` passes first.
public func eventually(_ what: String, timeout: Duration = .seconds(20), _ condition: () async -> Bool) async throws {
    try await pollUntil(what, timeout: timeout, interval: .milliseconds(10), condition)
}

/// Set once, read from any task: whether something has happened (a task's end, say), for
/// ``eventually(_:timeout:_:)`` to wait on.
public final class Flag: Sendable {
    private let value = Mutex(false)
    public init() {}
    /// Sets the flag.
    public func set() { value.withLock { $0 = true } }
    /// Whether the flag has been set.
    public var isSet: Bool { value.withLock { $0 } }
}

/// Every update of a publisher, recorded by a background reader.
public final class Recorder: Sendable {
    private let updates = Mutex<[(update: InstanceUpdate, time: ContinuousClock.Instant)]>([])
    public init() {}
    public var all: [InstanceUpdate] { updates.withLock { $0.map(\.update) } }
    public var latest: InstanceUpdate? { updates.withLock { $0.last?.update } }
    /// When each update that carried an error arrived, in order.
    public var errorTimes: [ContinuousClock.Instant] {
        updates.withLock { $0.filter { $0.update.error != nil }.map(\.time) }
    }
    public var ids: [String] { latest?.instances.map(\.id) ?? [] }
    /// Whether the set stayed non-empty from the first non-empty update on.
    public var neverEmptiedOnceFilled: Bool {
        all.drop(while: { $0.instances.isEmpty }).allSatisfy { !$0.instances.isEmpty }
    }
    public func record(_ update: InstanceUpdate) { updates.withLock { $0.append((update, .now)) } }

    /// A task body that records `publisher`'s updates until cancelled.
    public func recording(_ publisher: some InstancePublisher) -> @Sendable () async -> Void {
        { for await update in publisher.updates() { self.record(update) } }
    }
}

/// Runs `body` with `services` running beside it; cancels them when it returns.
@discardableResult
public func withRunning<T: Sendable>(_ services: [@Sendable () async -> Void], _ body: () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for service in services { group.addTask { await service() } }
        defer { group.cancelAll() }
        return try await body()
    }
}
