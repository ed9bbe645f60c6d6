import LoadBalancer
import Synchronization
import Testing

/// Endpoints answering with their port, for the given instances.
func cache(_ instances: [Instance]) async -> EndpointCache<Int, Int> {
    await EndpointCache(endpoints: instances.map { instance in Endpoint<Int, Int>(instance: instance) { _ in instance.port } })
}

func weighted(_ weights: [Int], priorities: [Int]? = nil) -> [Instance] {
    weights.enumerated().map { i, weight in
        try! Instance(host: "10.0.0.\(i + 1)", port: 1000 + i, weight: weight, priority: priorities?[i] ?? 0)
    }
}

/// A cache of weight-1 instances at `priorities` (ports from 1000), and an outlier detector over it
/// that ejects at the first failure, configured further by `configure`, on `time` (which stands
/// still unless advanced).
func levels(
    _ priorities: [Int],
    time: TestTime = TestTime(),
    _ configure: (inout OutlierDetector.Configuration) -> Void = { _ in }
) async -> (EndpointCache<Int, Int>, OutlierDetector) {
    let endpoints = EndpointCache<Int, Int>(factory: .calling { instance, _ in instance.port })
    await endpoints.update(with: weighted([Int](repeating: 1, count: priorities.count), priorities: priorities))
    var configuration = OutlierDetector.Configuration()
    configuration.consecutiveFailures = 1
    configure(&configuration)
    return (endpoints, OutlierDetector(endpoints, configuration: configuration, now: { time.now }))
}

/// Picks `n` times and counts picks per port.
func histogram(_ balancer: some Balancer<Int, Int>, _ n: Int) throws -> [Int: Int] {
    let set = balancer.snapshot
    var counts: [Int: Int] = [:]
    for _ in 0..<n {
        let pick = try balancer.pick()
        counts[set.instances[pick.index].port, default: 0] += 1
    }
    return counts
}

func chiSquare(_ observed: [Int], expectedShares: [Double]) -> Double {
    let n = Double(observed.reduce(0, +))
    return zip(observed, expectedShares).reduce(0.0) { sum, pair in
        let expected = n * pair.1
        return sum + (Double(pair.0) - expected) * (Double(pair.0) - expected) / expected
    }
}

@Suite("Weighted and priority balancers")
struct WeightedAndPriorityTests {
    @Test("weighted random follows the weights (chi-square, 3 degrees of freedom)", arguments: [UInt64(1), 2, 3])
    func weightedRandomDistribution(seed: UInt64) async throws {
        let endpoints = await cache(weighted([1, 2, 3, 4]))
        let balancer = WeightedRandomBalancer(endpoints, seed: seed)
        let counts = try histogram(balancer, 100_000)
        let observed = (1000...1003).map { counts[$0, default: 0] }
        let chi = chiSquare(observed, expectedShares: [0.1, 0.2, 0.3, 0.4])
        // 99.99th percentile of chi-square with 3 degrees of freedom: 21.1.
        #expect(chi < 21.1, "chi-square \(chi) for \(observed)")
    }

    @Test("smooth weighted round robin gives exact shares per cycle, interleaved")
    func smoothRoundRobin() async throws {
        let endpoints = await cache(weighted([5, 1, 1]))
        let balancer = WeightedRoundRobinBalancer(endpoints, start: 0)
        let set = endpoints.snapshot
        let ports = try (0..<70).map { _ in set.instances[try balancer.pick().index].port }
        #expect(ports.filter { $0 == 1000 }.count == 50)
        #expect(ports.filter { $0 == 1001 }.count == 10)
        #expect(ports.filter { $0 == 1002 }.count == 10)
        // Smooth: the heavy instance never runs more than 3 picks in a row (5 of 7, spread out).
        var longest = 0
        var run = 0
        for port in ports {
            run = port == 1000 ? run + 1 : 0
            longest = max(longest, run)
        }
        #expect(longest <= 3, "\(ports.prefix(14))")
    }

    @Test("weights are reduced by their common divisor and huge ones are scaled, not refused")
    func hugeWeights() async throws {
        let endpoints = await cache(weighted([60_000, 30_000, 65_535 * 1000]))
        let balancer = WeightedRoundRobinBalancer(endpoints, start: 0)
        let counts = try histogram(balancer, 200_000)
        #expect(counts.count == 3)
        #expect(counts[1002, default: 0] > counts[1000, default: 0] * 100)
    }

    @Test("weight-0 instances get traffic only when all candidates have weight 0")
    func zeroWeights() async throws {
        let mixed = await cache(weighted([0, 3]))
        #expect(try histogram(WeightedRandomBalancer(mixed, seed: 1), 1_000)[1000] == nil)
        #expect(try histogram(WeightedRoundRobinBalancer(mixed), 1_000)[1000] == nil)
        let zeros = await cache(weighted([0, 0]))
        let counts = try histogram(WeightedRandomBalancer(zeros, seed: 1), 10_000)
        #expect(counts.count == 2)
    }

    @Test("weights follow updates of an instance's weight")
    func weightUpdate() async throws {
        let endpoints = EndpointCache<Int, Int>(factory: .calling { instance, _ in instance.port })
        await endpoints.update(with: weighted([1, 1]))
        let balancer = WeightedRoundRobinBalancer(endpoints, start: 0)
        #expect(try histogram(balancer, 1_000) == [1000: 500, 1001: 500])
        await endpoints.update(with: weighted([3, 1]))
        #expect(try histogram(balancer, 1_000) == [1000: 750, 1001: 250])
    }

    @Test("priority: the lowest level takes the traffic, by weight; gone, it falls over; back, it falls back")
    func priorityGone() async throws {
        let endpoints = EndpointCache<Int, Int>(factory: .calling { instance, _ in instance.port })
        let all = weighted([1, 3, 1, 1], priorities: [10, 10, 20, 30])
        await endpoints.update(with: all)
        let balancer = PriorityBalancer(endpoints, seed: 5)
        let level10 = try histogram(balancer, 40_000)
        #expect(Set(level10.keys) == [1000, 1001])
        let chi = chiSquare([level10[1000, default: 0], level10[1001, default: 0]], expectedShares: [0.25, 0.75])
        #expect(chi < 15.1, "weights within the level: \(level10)") // 99.99th percentile, 1 dof

        await endpoints.update(with: Array(all[2...]))
        #expect(Set(try histogram(balancer, 1_000).keys) == [1002])
        await endpoints.update(with: [all[3]])
        #expect(Set(try histogram(balancer, 1_000).keys) == [1003])
        await endpoints.update(with: all)
        #expect(Set(try histogram(balancer, 1_000).keys) == [1000, 1001])
    }

    @Test("priority: ejected instances make traffic fall over to the next level, and it comes back")
    func priorityEjection() async throws {
        let time = TestTime()
        let (endpoints, detector) = await levels([0, 0, 1, 1], time: time) {
            $0.consecutiveFailures = 2
            $0.maxEjectionPercent = 100
            $0.panicThreshold = 0
            $0.baseEjectionTime = .seconds(10)
        }
        let balancer = PriorityBalancer(endpoints, seed: 9, ejection: detector)
        #expect(Set(try histogram(balancer, 1_000).keys) == [1000, 1001])

        for port in [1000, 1001] {
            for _ in 0..<2 { report(detector, endpoints, port: port, .failure) }
        }
        #expect(detector.ejectedInstanceIDs == ["10.0.0.1:1000", "10.0.0.2:1001"])
        #expect(Set(try histogram(balancer, 1_000).keys) == [1002, 1003])

        // One of them comes back after its ejection time (on probation) and takes the traffic again.
        time.advance(.seconds(10))
        report(detector, endpoints, port: 1002, .success) // any completed call moves the detector's time
        #expect(detector.ejectedInstanceIDs.isEmpty)
        #expect(Set(try histogram(balancer, 1_000).keys) == [1000, 1001])
    }

    /// Envoy's documented priority loads (two levels, the second fully healthy unless given), and
    /// its panic examples, with the default factor 1.4 and panic threshold 50%.
    @Test(
        "gradual failover: each level's share of the traffic follows Envoy's rule",
        arguments: [
            // (healthy, total per level) -> loads, panic
            ([100, 100], [100, 100], [100, 0], [false, false]),
            ([72, 100], [100, 100], [100, 0], [false, false]),
            ([71, 100], [100, 100], [99, 1], [false, false]),
            ([50, 100], [100, 100], [70, 30], [false, false]),
            ([25, 100], [100, 100], [35, 65], [false, false]),
            ([0, 100], [100, 100], [0, 100], [false, false]),
            ([2, 4], [4, 4], [70, 30], [false, false]),
            // Not enough healthy capacity in all: normalised, and levels under 50% healthy in panic.
            ([20, 20], [100, 100], [50, 50], [true, true]),
            ([50, 10], [100, 100], [84, 16], [false, true]),
            ([0, 0], [4, 4], [100, 0], [true, false]),
            // Three levels: the third takes what the first two leave.
            ([60, 20, 100], [100, 100, 100], [84, 16, 0], [false, false, false]),
            ([40, 20, 100], [100, 100, 100], [56, 28, 16], [false, false, false]),
        ] as [([Int], [Int], [Int], [Bool])]
    )
    func priorityLoads(healthy: [Int], total: [Int], loads: [Int], panic: [Bool]) {
        let result = PriorityBalancer<Int, Int>.priorityLoads(healthy: healthy, total: total, configuration: .init())
        #expect(result.loads == loads)
        #expect(result.panic == panic)
        #expect(result.loads.reduce(0, +) == 100)
    }

    @Test("gradual failover: half of level 0 ejected sends it 70% of the picks; a level in panic uses all its instances")
    func gradualFailover() async throws {
        let (endpoints, detector) = await levels([0, 0, 0, 0, 1, 1, 1, 1]) { $0.maxEjectionPercent = 100 }
        let balancer = PriorityBalancer(endpoints, seed: 12, ejection: detector)
        func levelZeroShare() throws -> Double {
            let counts = try histogram(balancer, 20_000)
            return Double((1000...1003).map { counts[$0, default: 0] }.reduce(0, +)) / 20_000
        }
        #expect(try levelZeroShare() == 1)
        report(detector, endpoints, port: 1000, .failure)
        #expect(try levelZeroShare() == 1, "3 of 4 healthy: 75% x 1.4 is over 100%")
        report(detector, endpoints, port: 1001, .failure)
        let share = try levelZeroShare()
        #expect(abs(share - 0.7) < 0.02, "2 of 4 healthy: \(share)")
        let counts = try histogram(balancer, 20_000)
        #expect(counts[1000] == nil && counts[1001] == nil, "ejected instances of a level not in panic take nothing")

        // 1 of 4 healthy in each level: 35% + 35% is short of 100%, so 50/50, both levels in panic.
        for port in [1002, 1004, 1005, 1006] { report(detector, endpoints, port: port, .failure) }
        #expect(detector.ejectedInstanceIDs.count == 6)
        let panicked = try histogram(balancer, 20_000)
        #expect(Set(panicked.keys) == Set(1000...1007), "levels in panic use every instance: \(panicked)")
        let panicShare = Double((1000...1003).map { panicked[$0, default: 0] }.reduce(0, +)) / 20_000
        #expect(abs(panicShare - 0.5) < 0.02, "\(panicShare)")
    }

    @Test("strict failover with a very large factor: a level keeps all its traffic while any of it is healthy")
    func strictFailover() async throws {
        let (endpoints, detector) = await levels([0, 0, 0, 1]) { $0.maxEjectionPercent = 100 }
        let balancer = PriorityBalancer(
            endpoints, configuration: .defaults { $0.overprovisioningFactor = .greatestFiniteMagnitude }, seed: 4, ejection: detector)
        report(detector, endpoints, port: 1000, .failure)
        report(detector, endpoints, port: 1001, .failure)
        #expect(Set(try histogram(balancer, 2_000).keys) == [1002])
    }

    @Test("the default max-ejection share does not hold a failing level in: it fails over, and the last healthy level keeps the cap")
    func ejectionCapAndLevels() async throws {
        // Default cap: 10% of 20 instances, 2 at a time.
        let (endpoints, detector) = await levels((0..<20).map { $0 < 10 ? 0 : 1 })
        let balancer = PriorityBalancer(endpoints, seed: 8, ejection: detector)
        for port in 1000...1009 { report(detector, endpoints, port: port, .failure) }
        #expect(detector.ejectedInstanceIDs.count == 10, "every instance of the failing level is ejected")
        #expect(Set(try histogram(balancer, 4_000).keys) == Set(1010...1019), "its calls failed over")
        // Level 1 is now the only one with healthy instances: the cap (2) holds, already reached.
        for port in 1010...1012 { report(detector, endpoints, port: port, .failure) }
        #expect(detector.ejectedInstanceIDs.count == 10)

        // In a set of one level the cap holds as before.
        let (single, capped) = await levels([Int](repeating: 0, count: 20))
        for port in 1000...1009 { report(capped, single, port: port, .failure) }
        #expect(capped.ejectedInstanceIDs.count == 2)
    }
}

/// Reports one call on `port` to the detector, as a balancer would.
func report(
    _ detector: OutlierDetector,
    _ endpoints: EndpointCache<Int, Int>,
    port: Int,
    _ outcome: CallRecord.Outcome,
    latency: Duration = .milliseconds(1)
) {
    let set = endpoints.snapshot
    let index = set.instances.firstIndex { $0.port == port }!
    detector.record(
        CallRecord(
            pick: EndpointPick(index: index, generation: set.generation),
            instanceID: set.instances[index].id,
            slot: set.slots[index],
            outcome: outcome,
            latency: latency
        )
    )
}
