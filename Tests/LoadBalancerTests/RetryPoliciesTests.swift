import LoadBalancer
import LoadBalancerTestKit
import Synchronization
import Testing

@Suite("Retry: backoff, budget, avoidance, attempt timeout, hedging", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct RetryPoliciesTests {
    func endpoints(_ count: Int, _ behaviour: @escaping @Sendable (Instance, Int) async throws -> String) async -> EndpointCache<
        Int, String
    > {
        await EndpointCache(
            endpoints: instances(1...count).map { instance in
                Endpoint<Int, String>(instance: instance) { request in try await behaviour(instance, request) }
            }
        )
    }

    /// Runs one always-failing call with backoff and returns the backoff delays it slept, in order.
    func backoffDelays(seed: UInt64) async throws -> (delays: [Duration], attempts: Int, error: RetryError) {
        let clock = ManualClock()
        let calls = Counter()
        let cache = await endpoints(3) { _, _ in
            calls.increment()
            throw TestFailure(message: "down")
        }
        var retry = Retry(RoundRobinBalancer(cache, start: 0), maxAttempts: 4, timeout: .seconds(60), clock: clock, seed: seed)
        retry.backoff = Backoff(base: .milliseconds(100), cap: .milliseconds(250))
        let call = Task { try await retry(0) }
        var delays: [Duration] = []
        for attempt in 1...3 {
            // After attempt n fails, two sleepers: the backoff and the overall deadline.
            try await waitUntil { calls.value == attempt && clock.sleeperCount == 2 }
            let delay = clock.sleeperDelays[0]
            delays.append(delay)
            clock.advance(by: delay)
        }
        let error = try await #require(throws: RetryError.self) { try await call.value }
        return (delays, calls.value, error)
    }

    @Test("jittered exponential backoff: exact attempt count, delays within each window, reproducible with a seed")
    func backoff() async throws {
        let first = try await backoffDelays(seed: 99)
        #expect(first.attempts == 4)
        #expect(first.error.reason == .attemptsExhausted)
        let backoff = Backoff(base: .milliseconds(100), cap: .milliseconds(250))
        #expect(backoff.window(forRetry: 1) == .milliseconds(100))
        #expect(backoff.window(forRetry: 2) == .milliseconds(200))
        #expect(backoff.window(forRetry: 3) == .milliseconds(250), "capped")
        for (retry, delay) in first.delays.enumerated() {
            #expect(delay >= .zero && delay <= backoff.window(forRetry: retry + 1), "retry \(retry + 1): \(delay)")
        }
        let again = try await backoffDelays(seed: 99)
        #expect(again.delays == first.delays)
        let other = try await backoffDelays(seed: 100)
        #expect(other.delays != first.delays)
    }

    @Test("under 100% failure the budget caps retries at 20% of requests plus the reserve")
    func budget() async throws {
        let time = TestTime()
        let calls = Counter()
        let cache = await endpoints(4) { _, _ in
            calls.increment()
            throw TestFailure(message: "down")
        }
        let budget = RetryBudget(ratio: 0.2, minimumPerSecond: 10, window: .seconds(10), now: { time.now })
        var retry = Retry(RandomBalancer(cache, seed: 1), maxAttempts: 5, timeout: .seconds(60), clock: ManualClock())
        retry.budget = budget
        var exhausted = 0
        for request in 0..<1_000 {
            do {
                _ = try await retry(request)
            } catch let error as RetryError {
                if error.reason == .budgetExhausted { exhausted += 1 }
            }
        }
        let retries = calls.value - 1_000
        // 20% of 1,000 requests plus 10/s × 10 s of reserve.
        #expect(retries <= 300, "retries \(retries)")
        #expect(retries >= 299, "the budget is used, retries \(retries)")
        #expect(exhausted > 900)
        #expect(Double(retries) / 1_000 <= 0.3)

        // Without a budget the same outage costs 4 retries per request.
        let unbounded = Counter()
        let cache2 = await endpoints(4) { _, _ in
            unbounded.increment()
            throw TestFailure(message: "down")
        }
        let noBudget = Retry(RandomBalancer(cache2, seed: 1), maxAttempts: 5, timeout: .seconds(60), clock: ManualClock())
        for request in 0..<100 { _ = try? await noBudget(request) }
        #expect(unbounded.value == 500)
    }

    @Test("the budget refills as its window moves on")
    func budgetWindow() {
        let time = TestTime()
        let budget = RetryBudget(ratio: 0, minimumPerSecond: 1, window: .seconds(10), now: { time.now })
        for _ in 0..<10 { #expect(budget.withdraw()) }
        #expect(!budget.withdraw())
        time.advance(.seconds(10))
        #expect(budget.withdraw())
    }

    @Test("a retry avoids instances already tried for the call while others are available", arguments: [true, false])
    func hostAvoidance(avoid: Bool) async throws {
        let attempts = Mutex<[Int: [Int]]>([:])
        let cache = await endpoints(2) { instance, request in
            attempts.withLock { $0[request, default: []].append(instance.port) }
            throw TestFailure(message: "down")
        }
        var retry = Retry(RandomBalancer(cache, seed: 5), maxAttempts: 2, timeout: .seconds(60), clock: ManualClock())
        retry.avoidsTriedInstances = avoid
        for request in 0..<200 { _ = try? await retry(request) }
        let repeats = attempts.withLock { $0.values.filter { $0.count == 2 && $0[0] == $0[1] }.count }
        if avoid {
            #expect(repeats == 0)
        } else {
            #expect(repeats > 50, "random picks repeat an instance about half the time: \(repeats)")
        }
    }

    @Test("a per-attempt timeout cancels a hung attempt and retries elsewhere, within the overall timeout")
    func attemptTimeout() async throws {
        let clock = ManualClock()
        let hungCancelled = Counter()
        let cache = await endpoints(2) { instance, _ in
            if instance.port == 1 {
                do {
                    try await Task.sleep(for: .seconds(3600))
                } catch {
                    hungCancelled.increment()
                    throw error
                }
            }
            return "answer from \(instance.port)"
        }
        var retry = Retry(RoundRobinBalancer(cache, start: 0), maxAttempts: 3, timeout: .seconds(10), clock: clock)
        retry.attemptTimeout = .milliseconds(200)
        let call = Task { try await retry(0) }
        try await waitUntil { clock.sleeperCount == 2 } // the attempt timeout and the overall deadline
        #expect(clock.sleeperDelays == [.milliseconds(200), .seconds(10)])
        clock.advance(by: .milliseconds(200))
        #expect(try await call.value == "answer from 2")
        #expect(hungCancelled.value == 1)
    }

    @Test("hedging: a slow first attempt gets a second one elsewhere; the first success wins and the other is cancelled")
    func hedging() async throws {
        let clock = ManualClock()
        let slowCancelled = Counter()
        let entered = Counter()
        let cache = await endpoints(2) { instance, _ in
            entered.increment()
            if instance.port == 1 {
                do {
                    try await Task.sleep(for: .seconds(3600))
                } catch {
                    slowCancelled.increment()
                    throw error
                }
            }
            return "answer from \(instance.port)"
        }
        var retry = Retry(RoundRobinBalancer(cache, start: 0), maxAttempts: 3, timeout: .seconds(10), clock: clock)
        retry.hedging = HedgingPolicy(delay: .fixed(.milliseconds(50)))
        let call = Task { try await retry(0) }
        try await waitUntil { entered.value == 1 && clock.sleeperCount == 2 } // the hedge timer and the deadline
        #expect(clock.sleeperDelays == [.milliseconds(50), .seconds(10)])
        clock.advance(by: .milliseconds(50))
        #expect(try await call.value == "answer from 2")
        try await waitUntil { slowCancelled.value == 1 }
        #expect(entered.value == 2)
    }

    @Test("hedges draw on the budget: with none left, no hedge is sent")
    func hedgingBudget() async throws {
        let clock = ManualClock()
        let entered = Counter()
        let cache = await endpoints(2) { instance, _ in
            entered.increment()
            try await Task.sleep(for: .seconds(3600))
            return "never"
        }
        var retry = Retry(RoundRobinBalancer(cache, start: 0), maxAttempts: 3, timeout: .seconds(1), clock: clock)
        retry.hedging = HedgingPolicy(delay: .fixed(.milliseconds(50)))
        retry.budget = RetryBudget(ratio: 0, minimumPerSecond: 0, now: { .zero })
        let call = Task { try await retry(0) }
        try await waitUntil { entered.value == 1 && clock.sleeperCount == 2 }
        clock.advance(by: .milliseconds(50))
        try await waitUntil { clock.sleeperCount == 1 } // the hedge timer fired and sent nothing
        clock.advance(by: .seconds(1))
        let error = try await #require(throws: RetryError.self) { try await call.value }
        #expect(error.reason == .timedOut)
        #expect(entered.value == 1)
    }

    @Test("percentile hedging delays follow recent latencies")
    func percentileDelay() async throws {
        let policy = HedgingPolicy(delay: .percentile(90, minimum: .milliseconds(1), initial: .milliseconds(70)))
        #expect(policy.currentDelay == .milliseconds(70), "before enough samples")
        let clock = ManualClock()
        let cache = await endpoints(1) { _, _ in
            clock.advance(by: .milliseconds(10))
            return "ok"
        }
        var retry = Retry(RoundRobinBalancer(cache), maxAttempts: 2, timeout: .seconds(60), clock: clock)
        retry.hedging = policy
        for request in 0..<30 { _ = try await retry(request) }
        #expect(policy.currentDelay == .milliseconds(10))
    }
}
