import LoadBalancer
import LoadBalancerTestKit
import Synchronization
import Testing

/// The call path's shapes: balancers over plain arrays, one snapshot per call, per-thread rotation,
/// `Retry` running deadline-enforcing endpoints inline and other endpoints in one task each.
@Suite("Call path", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct CallPathTests {
    static func endpoints(_ ports: some Sequence<Int>, enforcesDeadline: Bool = false) -> [Endpoint<Int, Int>] {
        instances(ports).map { instance in
            Endpoint<Int, Int>(instance: instance, enforcesDeadline: enforcesDeadline) { _ in instance.port }
        }
    }

    @Test("every balancer can be built and used from a plain array of endpoints, without a cache", arguments: BalancerKind.allCases)
    func fromArray(kind: BalancerKind) async throws {
        // Given out of order and with a duplicate id: the set is ordered and unique by id.
        let given = Self.endpoints([3, 1, 2]) + Self.endpoints([1])
        let balancer = kind.make(endpoints: given)
        #expect(balancer.cache == nil)
        #expect(balancer.snapshot.instances.map(\.port) == [1, 2, 3])
        var seen = Set<Int>()
        for _ in 0..<300 {
            let pick = try balancer.pick()
            #expect((0..<3).contains(pick.index))
            seen.insert(try await balancer.call(0))
        }
        #expect(seen == [1, 2, 3], "\(kind) reaches every instance")
        let empty = kind.make(endpoints: [])
        #expect(throws: LoadBalancerError.noEndpoints) { try empty.pick() }
        await #expect(throws: LoadBalancerError.noEndpoints) { try await empty.call(0) }
    }

    @Test("a call's endpoint comes from the snapshot its pick was made in, while the set churns")
    func leaseIsConsistent() async throws {
        let cache = EndpointCache<Int, Int>(factory: .calling { instance, _ in instance.port })
        await cache.update(with: instances(1...4))
        let balancer = RandomBalancer(cache)
        let stop = Flag()
        let mismatches = Counter()
        let leases = Counter()
        let rounds = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            // The set churns for as long as the callers run (no wall-clock wait: on a loaded machine
            // or under a sanitizer the callers may get a thread late, and then the churn waits too).
            group.addTask {
                var round = 0
                while !stop.isSet, round < 1_000_000 {
                    await cache.update(with: instances(round % 2 == 0 ? Array(1...4) : [2, 3, 5, 6]))
                    rounds.increment()
                    round += 1
                    await Task.yield()
                }
            }
            // Two callers (one per core here), each making a fixed number of calls.
            try await withThrowingTaskGroup(of: Void.self) { callers in
                for _ in 0..<2 {
                    callers.addTask {
                        for _ in 0..<2_000 {
                            let lease = try balancer.lease()
                            leases.increment()
                            // The lease's pick names the lease's endpoint in the set of that generation.
                            let answer = try await lease.endpoint(0)
                            if lease.endpoint.instance.port != answer { mismatches.increment() }
                            // The pick names the same instance in the set of its generation.
                            let set = cache.snapshot
                            if set.generation == lease.pick.generation, set.instances[lease.pick.index].id != lease.endpoint.id {
                                mismatches.increment()
                            }
                            // Nothing here suspends: let the updating task have a thread.
                            await Task.yield()
                        }
                    }
                }
                try await callers.waitForAll()
            }
            stop.set()
            try await group.waitForAll()
        }
        #expect(leases.value == 4_000)
        #expect(rounds.value > 0, "the set changed while the callers ran")
        #expect(mismatches.value == 0)
    }

    @Test("per-thread rotation: each thread rotates exactly; concurrent picks stay even")
    func perThreadRotation() async throws {
        let balancer = RoundRobinBalancer(endpoints: Self.endpoints(1...7))
        // One thread: consecutive picks visit every endpoint once per 7 picks.
        let first = try (0..<70).map { _ in try balancer.pick().index }
        for cycle in stride(from: 0, to: 70, by: 7) {
            #expect(Set(first[cycle..<cycle + 7]).count == 7, "\(first)")
        }
        // Four tasks: every index within 1% of an even share.
        let perTask = 70_000
        let total = try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<4 {
                group.addTask {
                    var histogram = [Int](repeating: 0, count: 7)
                    for _ in 0..<perTask { histogram[try balancer.pick().index] += 1 }
                    return histogram
                }
            }
            var total = [Int](repeating: 0, count: 7)
            for try await histogram in group { for i in 0..<7 { total[i] += histogram[i] } }
            return total
        }
        #expect(total.reduce(0, +) == 4 * perTask)
        #expect(total.allSatisfy { abs($0 - 40_000) <= 400 }, "\(total)")
    }

    @Test("exact rotation: concurrent picks split exactly evenly without a start")
    func exactRotation() async throws {
        let balancer = RoundRobinBalancer(endpoints: Self.endpoints(1...7), rotation: .exact)
        let total = try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<4 {
                group.addTask {
                    var histogram = [Int](repeating: 0, count: 7)
                    for _ in 0..<70_000 { histogram[try balancer.pick().index] += 1 }
                    return histogram
                }
            }
            var total = [Int](repeating: 0, count: 7)
            for try await histogram in group { for i in 0..<7 { total[i] += histogram[i] } }
            return total
        }
        #expect(total == [Int](repeating: 40_000, count: 7))
    }

    @Test("an ejection changes the next pick's snapshot (balancers pull the detector's version)")
    func ejectionVersion() async throws {
        let time = TestTime()
        let detector = OutlierDetector(
            configuration: .defaults {
                $0.consecutiveFailures = 1
                $0.failureRate = nil
                $0.maxEjectionPercent = 50
            },
            now: { time.now }
        )
        let balancer = RoundRobinBalancer(endpoints: Self.endpoints(1...4), ejection: detector)
        let before = detector.version
        let set = balancer.snapshot
        detector.record(
            CallRecord(
                pick: EndpointPick(index: 0, generation: set.generation), instanceID: set.instances[0].id, slot: set.slots[0],
                outcome: .failure, latency: .zero)
        )
        #expect(detector.version != before)
        let ports = try (0..<40).map { _ in set.instances[try balancer.pick().index].port }
        #expect(!ports.contains(1), "the ejected instance gets no picks")
    }

    @Test("Retry runs a deadline-enforcing endpoint inline, with the call's deadline")
    func inlineDeadline() async throws {
        let seen = Mutex<[ContinuousClock.Instant?]>([])
        let endpoint = Endpoint<Int, Int>(instance: try Instance(host: "127.0.0.1", port: 1), enforcesDeadline: true) { request in
            seen.withLock { $0.append(CallDeadline.current) }
            return request + 1
        }
        let retry = Retry(RoundRobinBalancer(endpoints: [endpoint]), maxAttempts: 3, timeout: .seconds(5))
        let before = ContinuousClock.now
        #expect(try await retry(41) == 42)
        let deadline = try #require(seen.withLock { $0.first } ?? nil)
        #expect(deadline > before.advanced(by: .seconds(4)))
        #expect(deadline <= ContinuousClock.now.advanced(by: .seconds(5)))
        #expect(CallDeadline.current == nil, "the deadline is set only around the attempt")
    }

    @Test("inline: an attempt ended by its endpoint at the attempt deadline is retried elsewhere; the overall deadline ends the call")
    func inlineTimeouts() async throws {
        struct DeadlineExceeded: Error {}
        // Port 1 hangs until its deadline, then throws (as AsyncHTTPClient does); port 2 answers.
        let make: @Sendable (Int) throws -> Endpoint<Int, Int> = { port in
            Endpoint(instance: try Instance(host: "127.0.0.1", port: port), enforcesDeadline: true) { _ in
                if port == 1 {
                    let deadline = try #require(CallDeadline.current)
                    try await ContinuousClock().sleep(until: deadline, tolerance: nil)
                    throw DeadlineExceeded()
                }
                return port
            }
        }
        var retry = Retry(RoundRobinBalancer(endpoints: [try make(1), try make(2)], start: 0), maxAttempts: 3, timeout: .seconds(30))
        retry.attemptTimeout = .milliseconds(50)
        #expect(try await retry(0) == 2)

        let hanging = Retry(RoundRobinBalancer(endpoints: [try make(1)]), maxAttempts: 3, timeout: .milliseconds(100))
        let error = try await #require(throws: RetryError.self) { try await hanging(0) }
        #expect(error.reason == .timedOut)
        #expect(error.attempts.count == 1)
        #expect(error.attempts[0].error is DeadlineExceeded)
    }

    /// Cancels a call whose one endpoint hangs (until its deadline, an hour away, or for an hour):
    /// the call ends at once with `CancellationError`, after one attempt.
    ///
    /// The call runs on a thread of its own. An inline attempt runs there too, so 5 s is ample. An
    /// attempt in a task of its own runs on the shared pool, which the other suites' start keeps
    /// busy for seconds on a two-core machine: 30 s, still far from the hour the attempt and the
    /// call's timeout would take if cancellation did not reach it.
    static func cancellationEndsCall(enforcesDeadline: Bool) async throws {
        let calls = Atomic(0)
        let entered = Atomic(false)
        let endpoint = Endpoint<Int, Int>(instance: try Instance(host: "127.0.0.1", port: 1), enforcesDeadline: enforcesDeadline) { _ in
            calls.add(1, ordering: .relaxed)
            entered.store(true, ordering: .relaxed)
            if enforcesDeadline {
                try await ContinuousClock().sleep(until: try #require(CallDeadline.current), tolerance: nil)
            } else {
                try await ContinuousClock().sleep(for: .seconds(3600))
            }
            return 0
        }
        let retry = Retry(RoundRobinBalancer(endpoints: [endpoint]), maxAttempts: 5, timeout: .seconds(3600))
        let (outcome, elapsed) = try await timeToReturn(
            afterCancelling: { () -> Result<Int, any Error> in
                do { return .success(try await retry(0)) } catch { return .failure(error) }
            },
            once: { entered.load(ordering: .relaxed) }
        )
        #expect(throws: CancellationError.self) { try outcome.get() }
        #expect(elapsed < callTimeLimit(.seconds(enforcesDeadline ? 5 : 30)), "\(elapsed)")
        #expect(calls.load(ordering: .relaxed) == 1)
    }

    @Test("inline: the caller's cancellation is rethrown as CancellationError and never retried")
    func inlineCancellation() async throws {
        try await Self.cancellationEndsCall(enforcesDeadline: true)
    }

    @Test("an endpoint that does not enforce deadlines is still cut off by the timeout (in a task of its own)")
    func supervisedFallback() async throws {
        let endpoint = Endpoint<Int, Int>(instance: try Instance(host: "127.0.0.1", port: 1)) { _ in
            try await ContinuousClock().sleep(for: .seconds(600))
            return 0
        }
        let retry = Retry(RoundRobinBalancer(endpoints: [endpoint]), maxAttempts: 2, timeout: .milliseconds(100))
        let start = ContinuousClock.now
        let error = try await #require(throws: RetryError.self) { try await retry(0) }
        #expect(error.reason == .timedOut)
        #expect(ContinuousClock.now - start < TestTimeScale.scaled(.seconds(30)))
    }

    @TaskLocal static var requestID: Int?

    @Test("Retry runs a plain endpoint in a task of its own, with the call's deadline and the caller's task-locals")
    func guardedTaskLocals() async throws {
        let seen = Mutex<[(ContinuousClock.Instant?, Int?)]>([])
        let endpoint = Endpoint<Int, Int>(instance: try Instance(host: "127.0.0.1", port: 1)) { request in
            seen.withLock { $0.append((CallDeadline.current, Self.requestID)) }
            // Answer after a suspension too: the task goes on off the caller's thread.
            if request.isMultiple(of: 2) { await Task.yield() }
            return request + 1
        }
        let retry = Retry(RoundRobinBalancer(endpoints: [endpoint]), maxAttempts: 3, timeout: .seconds(30))
        let before = ContinuousClock.now
        for request in 0..<20 {
            let response = try await Self.$requestID.withValue(request) { try await retry(request) }
            #expect(response == request + 1)
        }
        let calls = seen.withLock { $0 }
        #expect(calls.count == 20)
        #expect(calls.map(\.1) == Array(0..<20).map { Optional($0) }, "the caller's task-local reaches the attempt")
        for (deadline, _) in calls {
            let deadline = try #require(deadline)
            #expect(deadline > before.advanced(by: .seconds(29)))
            #expect(deadline <= ContinuousClock.now.advanced(by: .seconds(30)))
        }
        #expect(CallDeadline.current == nil, "the deadline is set only around the attempt")
    }

    @Test("in a task of its own: an attempt past its attempt timeout is cancelled and retried elsewhere, logged as cancelled")
    func guardedAttemptTimeout() async throws {
        // Port 1 hangs until cancelled; port 2 answers.
        let cancelled = Atomic(0)
        let make: @Sendable (Int) throws -> Endpoint<Int, Int> = { port in
            Endpoint(instance: try Instance(host: "127.0.0.1", port: port)) { _ in
                if port == 1 {
                    do {
                        try await ContinuousClock().sleep(for: .seconds(600))
                    } catch {
                        cancelled.add(1, ordering: .relaxed)
                        throw error
                    }
                }
                return port
            }
        }
        var retry = Retry(
            RoundRobinBalancer(endpoints: [try make(1), try make(2)], start: 0), maxAttempts: 3,
            timeout: TestTimeScale.scaled(.seconds(60))
        )
        retry.attemptTimeout = .milliseconds(50)
        #expect(try await retry(0) == 2)
        #expect(cancelled.load(ordering: .relaxed) == 1)

        var hanging = Retry(RoundRobinBalancer(endpoints: [try make(1)]), maxAttempts: 2, timeout: TestTimeScale.scaled(.seconds(60)))
        hanging.attemptTimeout = .milliseconds(50)
        let error = try await #require(throws: RetryError.self) { try await hanging(0) }
        #expect(error.reason == .attemptsExhausted)
        #expect(error.attempts.count == 2)
        for attempt in error.attempts {
            let timeout = try #require(attempt.error as? AttemptTimeoutError, "\(attempt.error)")
            #expect(timeout.code == .cancelled)
            #expect(timeout.timeout == .milliseconds(50))
        }
        #expect(cancelled.load(ordering: .relaxed) == 3)
    }

    @Test("in a task of its own: the caller's cancellation cancels the attempt, is rethrown as CancellationError, never retried")
    func guardedCancellation() async throws {
        try await Self.cancellationEndsCall(enforcesDeadline: false)
    }

    @Test("in a task of its own: the overall timeout waits for an attempt that ignores cancellation, then logs its error")
    func guardedIgnoresCancellation() async throws {
        struct Late: Error {}
        let release = Atomic(false)
        let sawCancellation = Atomic(false)
        let endpoint = Endpoint<Int, Int>(instance: try Instance(host: "127.0.0.1", port: 1)) { _ in
            // Ignores cancellation: ends only when the test releases it (bounded by a minute).
            let until = ContinuousClock.now.advanced(by: .seconds(60))
            while !release.load(ordering: .relaxed), ContinuousClock.now < until {
                if Task.isCancelled { sawCancellation.store(true, ordering: .relaxed) }
                try? await ContinuousClock().sleep(for: .milliseconds(5))
            }
            throw Late()
        }
        let retry = Retry(RoundRobinBalancer(endpoints: [endpoint]), maxAttempts: 3, timeout: .milliseconds(50))
        let finished = Atomic(false)
        let call = Task {
            defer { finished.store(true, ordering: .relaxed) }
            return try await retry(0)
        }
        // The deadline cancels the attempt; the call still waits for it to end.
        try await waitUntil { sawCancellation.load(ordering: .relaxed) }
        let finishedEarly = finished.load(ordering: .relaxed)
        #expect(!finishedEarly)
        release.store(true, ordering: .relaxed)
        let error = try await #require(throws: RetryError.self) { try await call.value }
        #expect(error.reason == .timedOut)
        #expect(error.attempts.count == 1)
        #expect(error.attempts.first?.error is Late)
    }

    @Test("the decision callback can stop with an error of its own (go-kit's error replacement)", arguments: [false, true])
    func decideReplacesError(deadlineAware: Bool) async throws {
        struct Fatal: Error, Equatable { var attempt: Int }
        let calls = Atomic(0)
        let endpoints = instances(1...3).map { instance in
            Endpoint<Int, Int>(instance: instance, enforcesDeadline: deadlineAware) { _ in
                calls.add(1, ordering: .relaxed)
                throw TestFailure(message: "down")
            }
        }
        var retry = Retry(RoundRobinBalancer(endpoints: endpoints), maxAttempts: 5, timeout: .seconds(30))
        retry.decide = { attempt, _ in attempt < 2 ? .retry : .fail(Fatal(attempt: attempt)) }
        await #expect(throws: Fatal(attempt: 2)) { try await retry(0) }
        #expect(calls.load(ordering: .relaxed) == 2)

        retry.decide = { _, _ in .stop }
        let error = try await #require(throws: RetryError.self) { try await retry(0) }
        #expect(error.reason == .notRetryable)
        #expect(error.attempts.count == 1)
    }

    @Test("calls on ContinuousClock hold no timer once they end; a cancelled sleep is released at once")
    func sharedTimer() async throws {
        let endpoint = Endpoint<Int, Int>(instance: try Instance(host: "127.0.0.1", port: 1)) { $0 }
        let retry = Retry(RoundRobinBalancer(endpoints: [endpoint]), maxAttempts: 3, timeout: .seconds(30))
        for i in 0..<200 { #expect(try await retry(i) == i) }
        // Every call's 30-second deadline timer is gone (other suites may be sleeping on the
        // shared timer at the same time, so wait for the count to fall rather than read it once).
        try await waitUntil { SharedTimer.shared.sleeperCount == 0 }

        let sleeping = Task { try await SharedTimer.shared.sleep(until: .now.advanced(by: .seconds(600))) }
        let started = ContinuousClock.now
        sleeping.cancel()
        await #expect(throws: CancellationError.self) { try await sleeping.value }
        // Released at once, not at its 600 s deadline (the bound is for a busy or sanitized run).
        #expect(ContinuousClock.now - started < callTimeLimit(.seconds(10)))

        let start = ContinuousClock.now
        try await SharedTimer.shared.sleep(until: start.advanced(by: .milliseconds(20)))
        #expect(ContinuousClock.now >= start.advanced(by: .milliseconds(20)))
    }

    @Test("P2C counts a call in flight from lease to finish")
    func p2cInFlight() async throws {
        let balancer = P2CBalancer(endpoints: Self.endpoints(1...2), metric: .leastOutstanding)
        // Hold a lease on port 1 (other leases are ended at once).
        var held: EndpointLease<Int, Int>?
        for _ in 0..<1_000 where held == nil {
            let lease = try balancer.lease()
            if lease.endpoint.instance.port == 1 {
                held = lease
            } else {
                balancer.finish(lease, outcome: .success, latency: .milliseconds(1))
            }
        }
        let lease = try #require(held)
        #expect(!lease.isPlain, "a load-aware balancer's lease must be finished")
        // One call in flight on port 1: least-outstanding sends every call to port 2.
        for _ in 0..<50 { #expect(try await balancer.call(0) == 2) }
        balancer.finish(lease, outcome: .success, latency: .milliseconds(1))
        // Both idle again: both get calls.
        var ports = Set<Int>()
        for _ in 0..<200 { ports.insert(try await balancer.call(0)) }
        #expect(ports == [1, 2])
    }
}

extension BalancerKind {
    func make(endpoints: [Endpoint<Int, Int>]) -> AnyBalancer<Int, Int> {
        switch self {
        case .roundRobin: AnyBalancer(RoundRobinBalancer(endpoints: endpoints))
        case .random: AnyBalancer(RandomBalancer(endpoints: endpoints, seed: 3))
        case .weightedRoundRobin: AnyBalancer(WeightedRoundRobinBalancer(endpoints: endpoints))
        case .weightedRandom: AnyBalancer(WeightedRandomBalancer(endpoints: endpoints, seed: 3))
        case .priority: AnyBalancer(PriorityBalancer(endpoints: endpoints, seed: 3))
        case .leastOutstanding: AnyBalancer(P2CBalancer(endpoints: endpoints, metric: .leastOutstanding, seed: 3))
        case .peakEWMA: AnyBalancer(P2CBalancer(endpoints: endpoints, metric: .peakEWMA(), seed: 3))
        case .consistentHash: AnyBalancer(ConsistentHashBalancer(endpoints: endpoints, tableSize: 4_099))
        }
    }
}

/// A flag closures can capture.
final class Flag: Sendable {
    private let storage = Atomic(false)
    var isSet: Bool { storage.load(ordering: .relaxed) }
    func set() { storage.store(true, ordering: .relaxed) }
}
