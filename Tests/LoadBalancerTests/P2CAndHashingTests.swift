import LoadBalancer
import LoadBalancerSimulation
import Synchronization
import Testing

@Suite("P2C and consistent hashing")
struct P2CAndHashingTests {
    /// A call completed on `port` as the balancer's scoped call would report it.
    func complete(
        _ balancer: P2CBalancer<Int, Int>,
        port: Int,
        _ outcome: CallRecord.Outcome = .success,
        latency: Duration
    ) {
        let set = balancer.snapshot
        let index = set.instances.firstIndex { $0.port == port }!
        let pick = EndpointPick(index: index, generation: set.generation)
        balancer.willCall(pick, slot: set.slots[index])
        balancer.record(
            CallRecord(pick: pick, instanceID: set.instances[index].id, slot: set.slots[index], outcome: outcome, latency: latency)
        )
    }

    func start(_ balancer: P2CBalancer<Int, Int>, port: Int) {
        let set = balancer.snapshot
        let index = set.instances.firstIndex { $0.port == port }!
        balancer.willCall(EndpointPick(index: index, generation: set.generation), slot: set.slots[index])
    }

    @Test("least-outstanding: with two instances, the one with fewer calls in flight always wins")
    func leastOutstanding() async throws {
        let endpoints = await cache(weighted([1, 1]))
        let balancer = P2CBalancer(endpoints, metric: .leastOutstanding, seed: 1)
        for _ in 0..<3 { start(balancer, port: 1000) }
        #expect(try histogram(balancer, 1_000) == [1001: 1_000])
        for _ in 0..<4 { start(balancer, port: 1001) }
        #expect(try histogram(balancer, 1_000) == [1000: 1_000])
    }

    @Test("least-outstanding over many instances avoids the loaded ones")
    func leastOutstandingMany() async throws {
        let endpoints = await cache(weighted([Int](repeating: 1, count: 10)))
        let balancer = P2CBalancer(endpoints, metric: .leastOutstanding, seed: 2)
        for _ in 0..<5 { start(balancer, port: 1000) }
        let counts = try histogram(balancer, 10_000)
        // Port 1000 wins only when sampled with itself, which never happens: P2C samples two distinct.
        #expect(counts[1000] == nil)
        #expect(counts.count == 9)
    }

    @Test("peak EWMA: a slow instance loses to a fast one; the peak counts at once; it decays back")
    func peakEWMA() async throws {
        let time = TestTime()
        let endpoints = await cache(weighted([1, 1]))
        let balancer = P2CBalancer(endpoints, metric: .peakEWMA(decayTime: .seconds(1)), seed: 3, now: { time.now })
        for _ in 0..<10 {
            complete(balancer, port: 1000, latency: .milliseconds(10))
            complete(balancer, port: 1001, latency: .milliseconds(10))
            time.advance(.milliseconds(10))
        }
        let even = try histogram(balancer, 2_000)
        #expect(even.count == 2)

        // One slow response: the peak replaces the estimate at once.
        complete(balancer, port: 1001, latency: .milliseconds(500))
        #expect(try histogram(balancer, 1_000) == [1000: 1_000])

        // Keep 1000 busy and fast while time passes: 1001's estimate decays toward 0 (τ = 1 s) and it is tried again.
        for _ in 0..<300 {
            time.advance(.milliseconds(20))
            complete(balancer, port: 1000, latency: .milliseconds(10))
        }
        #expect(try histogram(balancer, 1_000)[1001, default: 0] > 0)
    }

    @Test(
        "failing fast makes an instance look expensive, not fast (no black hole)", arguments: [P2CLoadMetric.leastOutstanding, .peakEWMA()])
    func noBlackHole(metric: P2CLoadMetric) async throws {
        let time = TestTime()
        let endpoints = await cache(weighted([Int](repeating: 1, count: 10)))
        let balancer = P2CBalancer(endpoints, metric: metric, seed: 4, now: { time.now })
        // Drive 20,000 calls: port 1000 fails every call in 1 ms, the others succeed in 10 ms.
        var toFailing = 0
        let set = endpoints.snapshot
        for _ in 0..<20_000 {
            time.advance(.microseconds(500))
            let pick = try balancer.pick()
            let port = set.instances[pick.index].port
            if port == 1000 {
                toFailing += 1
                complete(balancer, port: port, .failure, latency: .milliseconds(1))
            } else {
                complete(balancer, port: port, latency: .milliseconds(10))
            }
        }
        #expect(Double(toFailing) / 20_000 < 0.10, "share to the failing instance: \(Double(toFailing) / 20_000)")
    }

    @Test(
        "exp(-x) approximation",
        arguments: [
            (0.0, 1.0), (0.001, 0.999_000_499_833_375), (0.5, 0.606_530_659_712_633), (1.0, 0.367_879_441_171_442),
            (5.0, 0.006_737_946_999_085), (20.0, 2.061_153_622_438_558e-9),
        ])
    func expApproximation(x: Double, expected: Double) {
        let value = P2CBalancer<Int, Int>.decayFactor(x)
        #expect(abs(value - expected) <= expected * 1e-5 + 1e-12, "exp(-\(x)) = \(value), expected \(expected)")
    }

    @Test("consistent hashing: the same key, the same instance; one of N leaving moves about 1/N of 100k keys")
    func hashingStability() async throws {
        let endpoints = EndpointCache<Int, Int>(factory: .calling { instance, _ in instance.port })
        let all = weighted([Int](repeating: 1, count: 10))
        await endpoints.update(with: all)
        let balancer = ConsistentHashBalancer(endpoints)
        let keys = (0..<100_000).map { "user-\($0)" }
        func owners() throws -> [String] {
            let set = endpoints.snapshot
            return try keys.map { set.instances[try balancer.pick(forKey: $0).index].id }
        }
        let before = try owners()
        #expect(try owners() == before, "stable for a stable set")
        let removed = all[3].id
        await endpoints.update(with: all.filter { $0.id != removed })
        let after = try owners()
        let moved = zip(before, after).filter { $0 != $1 }
        let movedShare = Double(moved.count) / Double(keys.count)
        // Keys of the removed instance (about 10%) must move; Maglev moves few others.
        #expect(moved.allSatisfy { $1 != removed })
        let onRemoved = before.filter { $0 == removed }.count
        #expect(moved.count >= onRemoved)
        #expect(movedShare < 0.13, "moved \(movedShare)")
        #expect(Double(onRemoved) / Double(keys.count) > 0.07, "balance: \(onRemoved) keys on one of 10")

        // It comes back: again about 1/N move.
        await endpoints.update(with: all)
        let back = try owners()
        let movedBack = Double(zip(after, back).filter { $0 != $1 }.count) / Double(keys.count)
        #expect(movedBack < 0.13, "moved back \(movedBack)")
    }

    @Test("consistent hashing: a key's instance is the same across balancers (stable hash)")
    func hashingAcrossInstances() async throws {
        let endpoints = await cache(weighted([Int](repeating: 1, count: 7)))
        let a = ConsistentHashBalancer(endpoints)
        let b = ConsistentHashBalancer(endpoints)
        for key in ["alice", "bob", "carol", ""] {
            #expect(try a.pick(forKey: key) == b.pick(forKey: key))
        }
        #expect(ConsistentHashBalancer<Int, Int>.stableHash("a") == 0xaf63_dc4c_8601_ec8c)
        let port = try await a.withEndpoint(forKey: "alice") { try await $0(0) }
        #expect(port == endpoints.snapshot.instances[try a.pick(forKey: "alice").index].port)
    }

    @Test("all balancers stay safe and in range under concurrent picks while the set churns", arguments: BalancerKind.allCases)
    func concurrentChurn(kind: BalancerKind) async throws {
        let endpoints = EndpointCache<Int, Int>(factory: .calling { instance, _ in instance.port })
        await endpoints.update(with: weighted([Int](repeating: 2, count: 20)))
        let detector = OutlierDetector(
            endpoints,
            configuration: .defaults {
                $0.consecutiveFailures = 3
                $0.maxEjectionPercent = 30
            })
        let balancer = kind.make(endpoints, ejection: detector)
        let stop = Counter()
        let wrong = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<4 {
                group.addTask {
                    var calls = 0
                    while stop.value == 0 {
                        do {
                            let port = try await balancer.withEndpoint { endpoint in
                                // Some calls fail, so ejection and returns run concurrently too.
                                if endpoint.instance.port % 7 == worker { throw TestFailure(message: "fail") }
                                return try await endpoint(0)
                            }
                            if port < 1000 || port >= 1040 { wrong.increment() }
                        } catch is TestFailure {
                        }
                        calls += 1
                        if calls % 32 == 0 { await Task.yield() }
                    }
                }
            }
            group.addTask {
                var generator = SplitMix64(seed: 11)
                for _ in 0..<200 {
                    let count = Int(generator.next() % 20) + 1
                    let weights = (0..<40).map { _ in Int(generator.next() % 4) }
                    let chosen = (0..<40).filter { _ in generator.next() % 40 < UInt64(count) }
                    await endpoints.update(
                        with: chosen.isEmpty ? [weighted(weights)[0]] : chosen.map { weighted(weights, priorities: weights)[$0] })
                    await Task.yield()
                }
                stop.increment()
            }
            try await group.waitForAll()
        }
        #expect(wrong.value == 0)
    }

    /// Shares of `calls` calls through `balancer` with `inFlight` calls outstanding at every pick,
    /// each taking `latency` (time moves by `latency / inFlight` per call), by port.
    func sharesUnderLoad(_ balancer: P2CBalancer<Int, Int>, time: TestTime, inFlight: Int, calls: Int, latency: Duration) throws -> [Int:
        Double]
    {
        var open: [EndpointLease<Int, Int>] = []
        var counts: [Int: Int] = [:]
        for _ in 0..<calls {
            let lease = try balancer.lease()
            counts[lease.endpoint.instance.port, default: 0] += 1
            open.append(lease)
            if open.count == inFlight {
                time.advance(latency / inFlight)
                balancer.finish(open.removeFirst(), outcome: .success, latency: latency)
            }
        }
        return counts.mapValues { Double($0) / Double(calls) }
    }

    @Test(
        "weighted P2C: under load, instances of equal latency get shares that follow their weights",
        arguments: [P2CLoadMetric.leastOutstanding, .peakEWMA(decayTime: .seconds(1))], [[3, 1], [1, 2, 1, 4]]
    )
    func weightedShares(metric: P2CLoadMetric, weights: [Int]) async throws {
        let time = TestTime()
        let balancer = P2CBalancer(await cache(weighted(weights)), metric: metric, seed: 21, now: { time.now })
        let shares = try sharesUnderLoad(balancer, time: time, inFlight: 16, calls: 40_000, latency: .milliseconds(10))
        let total = Double(weights.reduce(0, +))
        for (i, weight) in weights.enumerated() {
            let share = shares[1000 + i, default: 0]
            #expect(abs(share - Double(weight) / total) <= 0.05, "weight \(weight) of \(weights): share \(share)")
        }
    }

    @Test("weighted P2C: equal weights pick exactly as unweighted; weight 0 only when every weight is 0")
    func weightedEdges() async throws {
        for metric in [P2CLoadMetric.leastOutstanding, .peakEWMA()] {
            let ones = P2CBalancer(await cache(weighted([1, 1, 1, 1])), metric: metric, seed: 5)
            let fives = P2CBalancer(await cache(weighted([5, 5, 5, 5])), metric: metric, seed: 5)
            let zeros = P2CBalancer(await cache(weighted([0, 0, 0, 0])), metric: metric, seed: 5)
            for _ in 0..<2_000 {
                let pick = try ones.pick().index
                #expect(try fives.pick().index == pick)
                #expect(try zeros.pick().index == pick)
            }
            let someZero = P2CBalancer(await cache(weighted([1, 0, 2, 0])), metric: metric, seed: 6)
            #expect(Set(try histogram(someZero, 2_000).keys) == [1000, 1002])
        }
    }
}
