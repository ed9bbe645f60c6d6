import LoadBalancer
import LoadBalancerSimulation
import Testing

/// Whether two durations are within a microsecond (virtual times are doubles).
private func near(_ a: Duration?, _ b: Duration) -> Bool {
    guard let a else { return false }
    return a > b - .microseconds(1) && a < b + .microseconds(1)
}

@Suite("Replaying a recorded run", .serialized)
struct ReplaySimulationTests {
    /// A recorded run of 3 s, a call every 10 ms sent round robin over the set: "a" and "b" answer
    /// in 1 ms, "c" (in the set from 1 s on) in 50 ms; "a" leaves at 2 s; "b" fails one call in
    /// `bFailsEvery` (after 2 ms).
    static func recording(bFailsEvery: Int = 0) -> RecordedRun {
        let sets: [RecordedRun.SetChange] = [
            .init(at: .zero, members: [.init(id: "a"), .init(id: "b")]),
            .init(at: .seconds(1), members: [.init(id: "a"), .init(id: "b"), .init(id: "c")]),
            .init(at: .seconds(2), members: [.init(id: "b"), .init(id: "c")]),
        ]
        var calls: [RecordedRun.Call] = []
        var bCalls = 0
        for index in 0..<300 {
            let start = Duration.milliseconds(10 * index)
            let set = sets.last { $0.at <= start }!.members.map(\.id)
            let instance = set[index % set.count]
            var failed = false
            if instance == "b" {
                bCalls += 1
                failed = bFailsEvery > 0 && bCalls % bFailsEvery == 0
            }
            let latency: Duration = instance == "c" ? .milliseconds(50) : failed ? .milliseconds(2) : .milliseconds(1)
            calls.append(.init(instance: instance, start: start, latency: latency, failed: failed))
        }
        return RecordedRun(sets: sets, calls: calls.reversed()) // in any order
    }

    static let roundRobin = SimulatedPolicy.balancer("round-robin") { e, d, _ in
        AnyBalancer(RoundRobinBalancer(e, start: 0, rotation: .exact, ejection: d))
    }
    static let peakEWMA = SimulatedPolicy.balancer("p2c-peak-ewma") { e, d, now in
        AnyBalancer(P2CBalancer(e, metric: .peakEWMA(decayTime: .seconds(1)), seed: 7, ejection: d, now: now))
    }

    @Test("the recorded set changes are published when they happened")
    func setChanges() async throws {
        let run = Self.recording()
        #expect(run.instances == ["a", "b", "c"])
        let results = await TailLatencySimulation.replay(ReplayScenario(run), policies: [.oracle, Self.roundRobin, Self.peakEWMA])
        for result in results {
            #expect(result.requests == 300)
            #expect(result.errorRate == 0)
            #expect(result.sharesOverTime.count == ShareBucket.count)
            #expect(result.sharesOverTime.map { $0.requests.reduce(0, +) }.reduce(0, +) == 300)
            for bucket in result.sharesOverTime {
                // "c" only from 1 s on, "a" only before 2 s (the buckets are 59.8 ms long).
                if bucket.end <= .seconds(1) { #expect(bucket.requests[2] == 0, "\(result.policy) \(bucket)") }
                if bucket.start >= .seconds(2) { #expect(bucket.requests[0] == 0, "\(result.policy) \(bucket)") }
            }
        }
        let roundRobin = results[1]
        // 100 calls over a and b, 100 over a, b and c, 100 over b and c.
        #expect(abs(roundRobin.shares[2] - (33.0 + 50) / 300) < 0.01, "\(roundRobin.shares)")
        // c takes 50 ms: round robin's p99 is c's; the oracle and peak-EWMA send it little.
        #expect(near(roundRobin.p99, .milliseconds(50)), "\(roundRobin.p99)")
        #expect(results[0].shares[2] == 0)
        #expect(results[2].shares[2] < roundRobin.shares[2] / 2, "\(results[2].shares)")
        #expect(results[0].latencyQuantiles.count == LatencyQuantile.probabilities.count)
        #expect(near(results[0].latencyQuantiles.last?.latency, .milliseconds(1)))
    }

    @Test("the same seed gives the same results; another seed draws other latencies")
    func seeds() async throws {
        // Latencies that vary within each window: a draw picks one.
        var run = Self.recording()
        for index in run.calls.indices { run.calls[index].latency += .microseconds(37 * (index % 53)) }
        func replay(_ seed: UInt64) async -> [String] {
            await TailLatencySimulation.replay(ReplayScenario(run, seed: seed), policies: [.oracle, Self.roundRobin, Self.peakEWMA])
                .map { "\($0) \($0.shares) \($0.latencyQuantiles.map(\.latency))" }
        }
        let first = await replay(3)
        #expect(await replay(3) == first)
        #expect(await replay(4) != first)
    }

    @Test("an empty set fails calls at once; the oracle avoids an instance that fails")
    func failures() async throws {
        var run = Self.recording(bFailsEvery: 4)
        run.sets.append(.init(at: .milliseconds(2500), members: []))
        let results = await TailLatencySimulation.replay(ReplayScenario(run), policies: [.oracle, Self.roundRobin])
        let oracle = results[0]
        let roundRobin = results[1]
        // The last 50 calls arrive with no instance.
        #expect(roundRobin.sharesOverTime.last?.requests.reduce(0, +) == 0)
        #expect(oracle.errorRate == 50.0 / 300)
        // Round robin also meets b's failures (a quarter of its calls to b).
        #expect(roundRobin.errorRate > oracle.errorRate + 0.05, "\(roundRobin.errorRate)")
        #expect(oracle.shares[1] == 0, "\(oracle.shares)")
    }

    @Test("an instance with no recorded call in a window behaves as in the nearest window that has one")
    func nearestWindow() async throws {
        // 1 s windows, a call every 10 ms: "a" answers in 1 ms in the first second, has no call in
        // the second, and answers in 30 ms in the third; "b" takes every call of the second and
        // answers in 1 ms throughout.
        let calls = (0..<300).map { index -> RecordedRun.Call in
            let window = index / 100
            let instance = window == 1 || index % 2 == 1 ? "b" : "a"
            let latency: Duration = instance == "a" && window == 2 ? .milliseconds(30) : .milliseconds(1)
            return RecordedRun.Call(instance: instance, start: .milliseconds(10 * index), latency: latency, failed: false)
        }
        let run = RecordedRun(sets: [.init(at: .zero, members: [.init(id: "a"), .init(id: "b")])], calls: calls)
        let result = await TailLatencySimulation.replay(ReplayScenario(run), policies: [Self.roundRobin])[0]
        // Round robin sends "a" half of each second. In the second, "a" draws from the first
        // (as near as the third; the earlier wins): only the third second's half, a sixth of all
        // calls, takes 30 ms.
        func quantile(_ p: Double) -> Duration? { result.latencyQuantiles.first { $0.probability == p }?.latency }
        #expect(near(quantile(0.8), .milliseconds(1)), "\(result.latencyQuantiles)")
        #expect(near(quantile(0.9), .milliseconds(30)), "\(result.latencyQuantiles)")
        #expect(abs(result.shares[0] - 0.5) < 0.01)
    }

    @Test("with a limit on calls at once, calls queue behind a slow instance")
    func instanceConcurrency() async throws {
        // Every call takes 50 ms on one instance, a call every 10 ms: unlimited, 50 ms each; one
        // at a time, the queue grows.
        let calls = (0..<100).map {
            RecordedRun.Call(instance: "a", start: .milliseconds(10 * $0), latency: .milliseconds(50), failed: false)
        }
        let run = RecordedRun(sets: [], calls: calls)
        let unlimited = await TailLatencySimulation.replay(ReplayScenario(run), policies: [Self.roundRobin])[0]
        let single = await TailLatencySimulation.replay(ReplayScenario(run, instanceConcurrency: 1), policies: [Self.roundRobin])[0]
        #expect(near(unlimited.max, .milliseconds(50)), "\(unlimited.max)")
        #expect(single.p50 > .seconds(1), "\(single)")
        // The last call waits for the 99 before it: 100 × 50 ms after the first arrival, less its 990 ms.
        #expect(near(single.max, .milliseconds(5000 - 990)), "\(single.max)")
    }
}
