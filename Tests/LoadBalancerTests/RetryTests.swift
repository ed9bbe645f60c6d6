import LoadBalancer
import LoadBalancerTestKit
import Synchronization
import Testing

@Suite("Retry", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct RetryTests {
    /// Endpoints on ports 1...n; `behaviour` decides what a call to a port does.
    func balancer(
        _ count: Int,
        behaviour: @escaping @Sendable (Instance, Int) async throws -> String
    ) async -> RoundRobinBalancer<Int, String> {
        let endpoints = instances(1...count).map { instance in
            Endpoint<Int, String>(instance: instance) { request in try await behaviour(instance, request) }
        }
        return RoundRobinBalancer(await EndpointCache(endpoints: endpoints), start: 0)
    }

    @Test("every attempt is a fresh pick, up to max attempts; the error lists every attempt")
    func attemptsExhausted() async throws {
        let calls = Mutex<[Int]>([])
        let balancer = await balancer(5) { instance, _ in
            calls.withLock { $0.append(instance.port) }
            throw TestFailure(message: "refused by \(instance.port)")
        }
        let retry = Retry(balancer, maxAttempts: 3, timeout: .seconds(10), clock: ManualClock())
        let error = try await #require(throws: RetryError.self) { try await retry(0) }
        #expect(calls.withLock { $0 } == [1, 2, 3])
        #expect(error.reason == .attemptsExhausted)
        #expect(error.attempts.map(\.number) == [1, 2, 3])
        #expect(error.attempts.map { $0.instance?.port } == [1, 2, 3])
        #expect(error.lastError as? TestFailure == TestFailure(message: "refused by 3"))
        #expect(
            error.description
                == "all 3 attempts failed: #1 127.0.0.1:1 after 0us: refused by 1; #2 127.0.0.1:2 after 0us: refused by 2; #3 127.0.0.1:3 after 0us: refused by 3"
        )
    }

    @Test("a call that succeeds after failures returns the response", arguments: [1, 2, 3])
    func succeedsAfterFailures(failures: Int) async throws {
        let calls = Atomic(0)
        let balancer = await balancer(4) { instance, _ in
            let n = calls.add(1, ordering: .relaxed).newValue
            if n <= failures { throw TestFailure(message: "fail \(n)") }
            return "ok from \(instance.port)"
        }
        let retry = Retry(balancer, maxAttempts: 4, timeout: .seconds(10), clock: ManualClock())
        #expect(try await retry(0) == "ok from \(failures + 1)")
        #expect(calls.load(ordering: .relaxed) == failures + 1)
    }

    @Test("the decision callback sees each attempt and error, and can stop early")
    func callback() async throws {
        let seen = Mutex<[(Int, String)]>([])
        let balancer = await balancer(5) { instance, _ in throw TestFailure(message: "e\(instance.port)") }
        let retry = Retry(balancer, maxAttempts: 10, timeout: .seconds(10), clock: ManualClock()) { attempt, error in
            seen.withLock { $0.append((attempt, "\(error)")) }
            return attempt < 2
        }
        let error = try await #require(throws: RetryError.self) { try await retry(0) }
        #expect(error.reason == .notRetryable)
        #expect(error.attempts.count == 2)
        #expect(seen.withLock { $0.map(\.0) } == [1, 2])
        #expect(seen.withLock { $0.map(\.1) } == ["e1", "e2"])
        #expect(error.description.hasPrefix("stopped after 2 attempts (not retryable): #1 127.0.0.1:1"))
    }

    @Test("no endpoints counts as a failed attempt with no instance")
    func noEndpoints() async throws {
        let empty = RoundRobinBalancer(EndpointCache<Int, String>(factory: .calling { _, _ in "" }))
        let retry = Retry(empty, maxAttempts: 2, timeout: .seconds(10), clock: ManualClock())
        let error = try await #require(throws: RetryError.self) { try await retry(0) }
        #expect(error.attempts.count == 2)
        #expect(error.attempts.allSatisfy { $0.instance == nil && ($0.error as? LoadBalancerError)?.code == .noEndpoints })
        #expect(error.description.contains("#1 (no endpoint)"))
    }

    @Test("the overall timeout cancels the attempt in flight and ends the call")
    func overallTimeout() async throws {
        let entered = Atomic(0)
        let balancer = await balancer(3) { instance, _ in
            entered.add(1, ordering: .relaxed)
            // Hang until cancelled.
            try await Task.sleep(for: .seconds(3600))
            return "never"
        }
        let clock = ManualClock()
        let retry = Retry(balancer, maxAttempts: 3, timeout: .seconds(2), clock: clock)
        let call = Task { try await retry(0) }
        try await waitUntil { entered.load(ordering: .relaxed) == 1 && clock.sleeperCount == 1 }
        clock.advance(by: .milliseconds(1999))
        #expect(clock.sleeperCount == 1, "not yet timed out")
        clock.advance(by: .milliseconds(1))
        let result = await call.result
        let error = try #require(throws: RetryError.self) { try result.get() }
        #expect(error.reason == .timedOut)
        #expect(error.attempts.count == 1, "the hung attempt is not retried after the deadline")
        #expect(error.attempts.first?.instance?.port == 1)
        #expect(error.attempts.first?.error is CancellationError)
        #expect(error.description.hasPrefix("timed out after 2s and 1 attempt: #1 127.0.0.1:1 after 2s"))
        #expect(entered.load(ordering: .relaxed) == 1)
    }

    @Test("the timeout also bounds a call that keeps failing fast")
    func timeoutWhileRetrying() async throws {
        let clock = ManualClock()
        let calls = Atomic(0)
        let balancer = await balancer(2) { instance, _ in
            let n = calls.add(1, ordering: .relaxed).newValue
            if n == 2 {
                // The second attempt takes the clock past the deadline, then hangs.
                clock.advance(by: .seconds(5))
                try await Task.sleep(for: .seconds(3600))
            }
            throw TestFailure(message: "fail")
        }
        let retry = Retry(balancer, maxAttempts: 10, timeout: .seconds(5), clock: clock)
        let error = try await #require(throws: RetryError.self) { try await retry(0) }
        #expect(error.reason == .timedOut)
        #expect(error.attempts.count == 2)
        #expect(calls.load(ordering: .relaxed) == 2)
    }

    @Test("cancelling the caller cancels the attempt at once, is rethrown as CancellationError, never retried")
    func callerCancellation() async throws {
        let entered = Atomic(0)
        let cancelledInside = Atomic(false)
        let balancer = await balancer(3) { _, _ in
            entered.add(1, ordering: .relaxed)
            do {
                try await Task.sleep(for: .seconds(3600))
            } catch {
                cancelledInside.store(true, ordering: .relaxed)
                throw error
            }
            return "never"
        }
        let retry = Retry(balancer, maxAttempts: 5, timeout: .seconds(3600))
        // The call on a thread of its own; its attempt, in a task of its own, on the shared pool, which
        // the other suites' start keeps busy for seconds on two cores: 30 s, far from the hour the
        // attempt and the timeout would take if cancellation did not reach it.
        let (result, elapsed) = try await timeToReturn(
            afterCancelling: { () -> Result<String, any Error> in
                do { return .success(try await retry(0)) } catch { return .failure(error) }
            },
            once: { entered.load(ordering: .relaxed) == 1 }
        )
        #expect(throws: CancellationError.self) { try result.get() }
        #expect(entered.load(ordering: .relaxed) == 1, "cancellation is never retried")
        let wasCancelledInside = cancelledInside.load(ordering: .relaxed)
        #expect(wasCancelledInside)
        #expect(elapsed < callTimeLimit(.seconds(30)), "\(elapsed)")
    }

    @Test("a caller already cancelled makes no attempt")
    func alreadyCancelled() async throws {
        let entered = Atomic(0)
        let balancer = await balancer(1) { _, _ in
            entered.add(1, ordering: .relaxed)
            return "ok"
        }
        let retry = Retry(balancer, maxAttempts: 3, timeout: .seconds(10))
        let call = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await retry(0)
        }
        await #expect(throws: CancellationError.self) { try await call.value }
        #expect(entered.load(ordering: .relaxed) == 0)
    }

    @Test("an endpoint's own CancellationError (caller not cancelled) is not retried")
    func endpointCancellation() async throws {
        let calls = Atomic(0)
        let balancer = await balancer(3) { _, _ in
            calls.add(1, ordering: .relaxed)
            throw CancellationError()
        }
        let retry = Retry(balancer, maxAttempts: 3, timeout: .seconds(10), clock: ManualClock())
        let error = try await #require(throws: RetryError.self) { try await retry(0) }
        #expect(error.reason == .notRetryable)
        #expect(calls.load(ordering: .relaxed) == 1)
    }
}
