import LoadBalancer
import LoadBalancerTestKit
import Synchronization
import Testing

/// The test kit's `pollUntil` (every millisecond, the bound scaled by `TestTimeScale`), also
/// recording its timeout as an issue where it was called (a caller that ignores the error still fails).
///
/// The default bound is generous: under ThreadSanitizer, with every suite running in parallel on
/// two cores, a step that takes microseconds alone has been seen to take over 10 s.
func waitUntil(
    timeout: Duration = .seconds(60),
    sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () -> Bool
) async throws {
    try await pollUntil("the condition", timeout: timeout, onTimeout: { Issue.record("\($0)", sourceLocation: sourceLocation) }, condition)
}

struct TestFailure: Error, CustomStringConvertible, Equatable {
    var message: String
    var description: String { message }
}

/// Records every endpoint a factory makes and every close, to check "closed exactly once": the
/// test kit's recording factory, plus whether an endpoint was still published when it was closed.
final class EndpointLedger: Sendable {
    struct Record {
        var made = 0
        var closed = 0
        var closedWhileInSnapshot = 0
    }
    /// What the factory's close hook needs: whether the closing endpoint is still published (asked
    /// of the `isInSnapshot` given to `factory`), and how often it was.
    private final class CloseCheck: Sendable {
        let isInSnapshot = Mutex<@Sendable (Endpoint<Int, String>) -> Bool>({ _ in false })
        let closedWhilePublished = Mutex<[String: Int]>([:])
    }
    private let check: CloseCheck
    private let recorder: RecordingEndpointFactory<Int, String>

    init() {
        let check = CloseCheck()
        self.check = check
        recorder = RecordingEndpointFactory(onClose: { endpoint in
            let isInSnapshot = check.isInSnapshot.withLock { $0 }
            if isInSnapshot(endpoint) { check.closedWhilePublished.withLock { $0[endpoint.id, default: 0] += 1 } }
        }) { instance, _ in instance.id }
    }

    /// The ids the factory made an endpoint for, with what happened to them.
    var snapshot: [String: Record] {
        let whilePublished = check.closedWhilePublished.withLock { $0 }
        var records: [String: Record] = [:]
        for (id, lifecycle) in recorder.lifecycles where lifecycle.made > 0 {
            records[id] = Record(made: lifecycle.made, closed: lifecycle.closed, closedWhileInSnapshot: whilePublished[id] ?? 0)
        }
        return records
    }

    /// Makes the factory throw for `id` until `heal` is called.
    func breakFactory(for id: String) { recorder.refuse(id) }
    func heal(_ id: String) { recorder.accept(id) }

    /// A factory whose endpoints echo their instance id, recording makes and closes.
    /// `isInSnapshot` is asked at close time whether the closing endpoint is still published.
    func factory(
        isInSnapshot: @escaping @Sendable (Endpoint<Int, String>) -> Bool = { _ in false }
    ) -> EndpointFactory<Int, String> {
        check.isInSnapshot.withLock { $0 = isInSnapshot }
        return recorder.factory
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
