import Synchronization
import Testing

@testable import LoadBalancerTestKit

@Suite("pollUntil", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct PollUntilTests {
    @Test("returns once the condition holds, having checked it until then")
    func returnsWhenTheConditionHolds() async throws {
        let checks = Mutex(0)
        try await pollUntil("the third check", timeout: .seconds(60)) {
            checks.withLock { checks in
                checks += 1
                return checks == 3
            }
        }
        #expect(checks.withLock { $0 } == 3)
    }

    @Test("a condition that holds at once is checked once, even with no time to wait")
    func holdsAtOnce() async throws {
        let checks = Mutex(0)
        try await pollUntil("it", timeout: .zero) {
            checks.withLock { $0 += 1 }
            return true
        }
        #expect(checks.withLock { $0 } == 1)
    }

    @Test("a condition that never holds ends with a timedOut error naming what was awaited and what was seen")
    func timesOut() async throws {
        let start = ContinuousClock.now
        let error = await #expect(throws: TestKitError.self) {
            try await pollUntil("the registrar's node", timeout: .milliseconds(20), seen: { "2 nodes" }) { false }
        }
        let elapsed = ContinuousClock.now - start
        #expect(error?.code == .timedOut)
        #expect(
            error?.message == "waited \(TestTimeScale.scaled(.milliseconds(20))) for the registrar's node; 2 nodes",
            "\(String(describing: error))")
        // It gave up only once the bound had passed.
        #expect(elapsed >= TestTimeScale.scaled(.milliseconds(20)), "\(elapsed)")

        let unseen = await #expect(throws: TestKitError.self) {
            try await pollUntil("the leader", timeout: .zero) { false }
        }
        #expect(unseen?.message == "waited 0.0 seconds for the leader", "\(String(describing: unseen))")
    }

    @Test("onTimeout sees the error just before it is thrown, and only on timeout")
    func onTimeoutSeesTheError() async throws {
        let seen = Mutex<[String]>([])
        let error = await #expect(throws: TestKitError.self) {
            try await pollUntil("a leader", timeout: .milliseconds(5), onTimeout: { error in seen.withLock { $0.append(error.message) } }) {
                false
            }
        }
        #expect(seen.withLock { $0 } == [try #require(error?.message)])

        try await pollUntil("it", onTimeout: { error in seen.withLock { $0.append(error.message) } }) { true }
        #expect(seen.withLock { $0.count } == 1)
    }

    @Test("the bound is stretched by the time scale, once")
    func scalesItsBound() async throws {
        let start = ContinuousClock.now
        let error = await #expect(throws: TestKitError.self) {
            try await pollUntil(
                "nothing", timeout: .milliseconds(20), interval: .milliseconds(1), seen: { "" }, onTimeout: { _ in }, scaledBy: 5
            ) { false }
        }
        let elapsed = ContinuousClock.now - start
        #expect(error?.message == "waited \(Duration.milliseconds(100)) for nothing", "\(String(describing: error))")
        #expect(elapsed >= .milliseconds(100), "\(elapsed)")
    }

    @Test("an error the condition throws ends the wait unchanged")
    func conditionErrorsPassThrough() async throws {
        struct Refused: Error, Equatable {}
        await #expect(throws: Refused()) {
            try await pollUntil("an answer", timeout: .seconds(60)) { throw Refused() }
        }
    }

    @Test("a cancelled wait ends with CancellationError, long before its bound")
    func honoursCancellation() async throws {
        let checks = Atomic(0)
        let waiting = Task {
            try await pollUntil("what never comes", timeout: .seconds(3600), interval: .milliseconds(10)) {
                checks.add(1, ordering: .relaxed)
                return false
            }
        }
        try await pollUntil("the waiting task's first check") { checks.load(ordering: .relaxed) > 0 }
        waiting.cancel()
        // The suite's time limit bounds this; the wait's own bound is an hour.
        let result = await waiting.result
        #expect(throws: CancellationError.self) { try result.get() }
    }
}
