import LoadBalancer
import Synchronization
import Testing

/// A clock that moves only when told to; sleepers wake when `advance` passes their deadline.
final class ManualClock: Clock, Sendable {
    struct Instant: InstantProtocol {
        var offset: Duration
        func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    private struct Sleeper {
        var id: Int
        var deadline: Instant
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now = Instant(offset: .zero)
        var sleepers: [Sleeper] = []
        var nextID = 0
        var cancelledBeforeSleeping: Set<Int> = []
    }

    private let state = Mutex(State())

    var now: Instant { state.withLock { $0.now } }
    var minimumResolution: Duration { .zero }

    /// How many tasks are sleeping on the clock.
    var sleeperCount: Int { state.withLock { $0.sleepers.count } }

    /// How far in the future each sleeper's deadline is, soonest first.
    var sleeperDelays: [Duration] {
        state.withLock { state in state.sleepers.map { state.now.duration(to: $0.deadline) }.sorted() }
    }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        let id = state.withLock { state -> Int in
            defer { state.nextID += 1 }
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let action = state.withLock { state -> Result<Void, any Error>? in
                    if state.cancelledBeforeSleeping.remove(id) != nil { return .failure(CancellationError()) }
                    if deadline <= state.now { return .success(()) }
                    state.sleepers.append(Sleeper(id: id, deadline: deadline, continuation: continuation))
                    return nil
                }
                if let action { continuation.resume(with: action) }
            }
        } onCancel: {
            let sleeper = state.withLock { state -> Sleeper? in
                guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else {
                    state.cancelledBeforeSleeping.insert(id)
                    return nil
                }
                return state.sleepers.remove(at: index)
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward and wakes every sleeper whose deadline has come.
    func advance(by duration: Duration) {
        let due = state.withLock { state -> [Sleeper] in
            state.now = state.now.advanced(by: duration)
            let now = state.now
            let due = state.sleepers.filter { $0.deadline <= now }
            state.sleepers.removeAll { $0.deadline <= now }
            return due
        }
        for sleeper in due { sleeper.continuation.resume() }
    }
}

/// Waits, by bounded polling, until `condition` holds. Fails the test (and throws) if it does not within `timeout`.
///
/// The default bound is generous: under ThreadSanitizer, with every suite running in parallel on
/// two cores, a step that takes microseconds alone has been seen to take over 10 s.
func waitUntil(
    timeout: Duration = .seconds(60),
    sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now >= deadline {
            Issue.record("condition not met within \(timeout)", sourceLocation: sourceLocation)
            throw WaitTimeout()
        }
        try await Task.sleep(for: .milliseconds(1))
    }
}

struct WaitTimeout: Error {}

struct TestFailure: Error, CustomStringConvertible, Equatable {
    var message: String
    var description: String { message }
}

/// Records every endpoint a factory makes and every close, to check "closed exactly once".
final class EndpointLedger: Sendable {
    struct Record {
        var made = 0
        var closed = 0
        var closedWhileInSnapshot = 0
    }
    private let records = Mutex<[String: Record]>([:])
    private let failing = Mutex<Set<String>>([])

    var snapshot: [String: Record] { records.withLock { $0 } }

    /// Makes the factory throw for `id` until `heal` is called.
    func breakFactory(for id: String) { _ = failing.withLock { $0.insert(id) } }
    func heal(_ id: String) { _ = failing.withLock { $0.remove(id) } }

    /// A factory whose endpoints echo their instance id, recording makes and closes.
    /// `isInSnapshot` is asked at close time whether the closing endpoint is still published.
    func factory(
        isInSnapshot: @escaping @Sendable (Endpoint<Int, String>) -> Bool = { _ in false }
    ) -> EndpointFactory<Int, String> {
        EndpointFactory { instance in
            if self.failing.withLock({ $0.contains(instance.id) }) {
                throw TestFailure(message: "factory refused \(instance.id)")
            }
            self.records.withLock { $0[instance.id, default: Record()].made += 1 }
            let endpoint = Endpoint<Int, String>(instance: instance) { _ in instance.id }
            return ManagedEndpoint(endpoint) {
                let stillPublished = isInSnapshot(endpoint)
                self.records.withLock {
                    $0[instance.id, default: Record()].closed += 1
                    if stillPublished { $0[instance.id, default: Record()].closedWhileInSnapshot += 1 }
                }
            }
        }
    }
}

func instances(_ ports: some Sequence<Int>) -> [Instance] {
    ports.map { try! Instance(host: "127.0.0.1", port: $0) }
}

/// A shared counter that closures can capture.
final class Counter: Sendable {
    private let storage = Atomic(0)
    init() {}
    func increment() { storage.add(1, ordering: .relaxed) }
    var value: Int { storage.load(ordering: .relaxed) }
}

/// A settable monotonic time for components that take a `now` closure.
final class TestTime: Sendable {
    private let storage = Mutex<Duration>(.zero)
    init() {}
    var now: Duration { storage.withLock { $0 } }
    func advance(_ duration: Duration) { storage.withLock { $0 += duration } }
}
