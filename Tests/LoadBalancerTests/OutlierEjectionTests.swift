import LoadBalancer
import Synchronization
import Testing

@Suite("Outlier ejection")
struct OutlierEjectionTests {
    final class Setup: Sendable {
        let time = TestTime()
        let endpoints: EndpointCache<Int, Int>
        let detector: OutlierDetector

        init(count: Int, configure: (inout OutlierDetector.Configuration) -> Void) async {
            endpoints = await cache(weighted([Int](repeating: 1, count: count)))
            let time = self.time
            detector = OutlierDetector(endpoints, configuration: .defaults(configure), now: { time.now })
        }

        func advance(_ duration: Duration) { time.advance(duration) }
        func report(_ port: Int, _ outcome: CallRecord.Outcome, times: Int = 1) {
            for _ in 0..<times { LoadBalancerTests.report(detector, endpoints, port: port, outcome) }
        }
    }

    @Test("consecutive failures eject; the ejection grows with each one; the instance is probed back")
    func consecutiveTiming() async throws {
        let s = await Setup(count: 10) {
            $0.consecutiveFailures = 5
            $0.failureRate = nil
            $0.baseEjectionTime = .seconds(30)
            $0.interval = .seconds(1000)
        }
        s.report(1000, .failure, times: 4)
        s.report(1000, .success)
        s.report(1000, .failure, times: 4)
        #expect(s.detector.ejectedInstanceIDs.isEmpty, "a success breaks the run")
        s.report(1000, .failure)
        #expect(s.detector.ejectedInstanceIDs == ["10.0.0.1:1000"])
        let set = s.endpoints.snapshot
        let index = try #require(set.instances.firstIndex { $0.port == 1000 })
        #expect(s.detector.isEjected(slot: set.slots[index]))
        #expect(set.slots.indices.filter { s.detector.isEjected(slot: set.slots[$0]) } == [index])

        s.advance(.seconds(29))
        s.report(1001, .success)
        #expect(s.detector.ejectedInstanceIDs == ["10.0.0.1:1000"], "still out at 29 s")
        s.advance(.seconds(1))
        s.report(1001, .success)
        #expect(s.detector.ejectedInstanceIDs.isEmpty, "back at 30 s, on probation")

        // A failed probe ejects at once, for twice as long.
        s.report(1000, .failure)
        #expect(s.detector.ejectedInstanceIDs == ["10.0.0.1:1000"])
        s.advance(.seconds(59))
        s.report(1001, .success)
        #expect(!s.detector.ejectedInstanceIDs.isEmpty, "second ejection lasts 60 s")
        s.advance(.seconds(1))
        s.report(1001, .success)
        #expect(s.detector.ejectedInstanceIDs.isEmpty)

        // Enough successes end probation: a single failure no longer ejects.
        s.report(1000, .success, times: 3)
        s.report(1000, .failure)
        #expect(s.detector.ejectedInstanceIDs.isEmpty)

        let kinds = s.detector.events.map(\.kind)
        #expect(
            kinds == [
                .ejected(.consecutiveFailures, until: .seconds(30)), .returned,
                .ejected(.failedProbe, until: .seconds(90)), .returned,
            ])
    }

    @Test("the failure-rate rule catches an instance failing 20% of calls that 5-in-a-row misses")
    func failureRate() async throws {
        let s = await Setup(count: 10) {
            $0.consecutiveFailures = 5
            $0.failureRate = .init(minimumRequests: 20, threshold: 0.1, relativeFactor: 2)
            $0.interval = .seconds(1)
        }
        // Every fifth call fails: never 5 in a row, but a 20% failure rate.
        for i in 0..<100 {
            s.report(1001, i % 5 == 0 ? .failure : .success)
            for port in [1000, 1002, 1003] { s.report(port, .success) }
        }
        #expect(s.detector.ejectedInstanceIDs.isEmpty)
        s.advance(.seconds(1))
        s.report(1000, .success)
        #expect(s.detector.ejectedInstanceIDs == ["10.0.0.2:1001"])
        #expect(s.detector.events.first?.kind == .ejected(.failureRate, until: .seconds(31)))
    }

    @Test("when every instance fails alike, the failure-rate rule ejects nobody")
    func failureRateRelative() async throws {
        let s = await Setup(count: 4) {
            $0.consecutiveFailures = 0
            $0.maxEjectionPercent = 100
        }
        for i in 0..<100 {
            for port in 1000...1003 { s.report(port, i % 4 == 0 ? .failure : .success) }
        }
        s.advance(.seconds(1))
        s.report(1000, .success)
        #expect(s.detector.ejectedInstanceIDs.isEmpty)
    }

    @Test("at most maxEjectionPercent of the instances are ejected (at least one)")
    func maxEjection() async throws {
        let s = await Setup(count: 10) {
            $0.consecutiveFailures = 1
            $0.maxEjectionPercent = 20
        }
        for port in 1000...1009 { s.report(port, .failure) }
        #expect(s.detector.ejectedInstanceIDs.count == 2)

        let small = await Setup(count: 3) {
            $0.consecutiveFailures = 1
            $0.maxEjectionPercent = 10
        }
        for port in 1000...1002 { small.report(port, .failure) }
        #expect(small.detector.ejectedInstanceIDs.count == 1, "10% of 3 rounds down, but one may always go")
    }

    @Test("panic: with too few healthy instances, balancers ignore ejection")
    func panic() async throws {
        let s = await Setup(count: 4) {
            $0.consecutiveFailures = 1
            $0.maxEjectionPercent = 100
            $0.panicThreshold = 0.5
        }
        let balancer = RoundRobinBalancer(s.endpoints, start: 0, ejection: s.detector)
        s.report(1000, .failure)
        #expect(Set(try histogram(balancer, 300).keys) == [1001, 1002, 1003])
        s.report(1001, .failure)
        #expect(Set(try histogram(balancer, 300).keys) == [1002, 1003], "2 of 4 healthy is not below 50%")
        s.report(1002, .failure)
        #expect(Set(try histogram(balancer, 400).keys) == [1000, 1001, 1002, 1003], "1 of 4 healthy: panic")
    }

    @Test("every balancer skips an ejected instance", arguments: BalancerKind.allCases)
    func everyBalancerHonoursEjection(kind: BalancerKind) async throws {
        let s = await Setup(count: 5) { $0.consecutiveFailures = 1 }
        let balancer = kind.make(s.endpoints, ejection: s.detector)
        s.report(1002, .failure)
        #expect(s.detector.ejectedInstanceIDs == ["10.0.0.3:1002"])
        let counts = try histogram(balancer, 2_000)
        #expect(counts[1002] == nil, "\(kind): \(counts)")
        #expect(counts.count >= (kind == .consistentHash ? 1 : 4))
    }

    @Test("an instance that leaves and comes back starts clean")
    func slotReuse() async throws {
        let endpoints = EndpointCache<Int, Int>(factory: .calling { instance, _ in instance.port })
        await endpoints.update(with: weighted([1, 1, 1]))
        let detector = OutlierDetector(endpoints, configuration: .defaults { $0.consecutiveFailures = 1 })
        report(detector, endpoints, port: 1000, .failure)
        #expect(detector.ejectedInstanceIDs.count == 1)
        await endpoints.update(with: Array(weighted([1, 1, 1])[1...]))
        #expect(detector.ejectedInstanceIDs.isEmpty)
        await endpoints.update(with: weighted([1, 1, 1]))
        #expect(detector.ejectedInstanceIDs.isEmpty)
        #expect(endpoints.snapshot.slots.allSatisfy { !detector.isEjected(slot: $0) })
    }
}

/// Every balancer of the library, for table-driven tests.
enum BalancerKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case roundRobin, random, weightedRoundRobin, weightedRandom, priority, leastOutstanding, peakEWMA, consistentHash

    var description: String { rawValue }

    func make(
        _ endpoints: EndpointCache<Int, Int>, ejection: OutlierDetector? = nil, slowStart: SlowStart? = nil, zones: ZoneAwareRouting? = nil
    ) -> AnyBalancer<Int, Int> {
        switch self {
        case .roundRobin: AnyBalancer(RoundRobinBalancer(endpoints, ejection: ejection, slowStart: slowStart, zones: zones))
        case .random: AnyBalancer(RandomBalancer(endpoints, seed: 3, ejection: ejection, slowStart: slowStart, zones: zones))
        case .weightedRoundRobin: AnyBalancer(WeightedRoundRobinBalancer(endpoints, ejection: ejection, slowStart: slowStart, zones: zones))
        case .weightedRandom:
            AnyBalancer(WeightedRandomBalancer(endpoints, seed: 3, ejection: ejection, slowStart: slowStart, zones: zones))
        case .priority: AnyBalancer(PriorityBalancer(endpoints, seed: 3, ejection: ejection, slowStart: slowStart, zones: zones))
        case .leastOutstanding:
            AnyBalancer(P2CBalancer(endpoints, metric: .leastOutstanding, seed: 3, ejection: ejection, slowStart: slowStart, zones: zones))
        case .peakEWMA:
            AnyBalancer(P2CBalancer(endpoints, metric: .peakEWMA(), seed: 3, ejection: ejection, slowStart: slowStart, zones: zones))
        case .consistentHash:
            AnyBalancer(ConsistentHashBalancer(endpoints, tableSize: 4_099, ejection: ejection, slowStart: slowStart, zones: zones))
        }
    }
}
