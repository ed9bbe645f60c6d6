import LoadBalancer
import LoadBalancerSimulation
import Testing

@Suite("Tail-latency simulation", .serialized)
struct TailLatencySimulationTests {
    /// The reference scenario, shortened to keep the test quick (the full 100 s run is in Benchmarks/).
    static let scenario = TailLatencyScenario.reference { $0.duration = .seconds(30) }

    func ratio(_ a: Duration, _ b: Duration) -> Double {
        Double(a.components.attoseconds / 1_000_000_000 + a.components.seconds * 1_000_000_000)
            / Double(b.components.attoseconds / 1_000_000_000 + b.components.seconds * 1_000_000_000)
    }

    @Test("peak-EWMA stays near the oracle; round robin and least-outstanding do not; ejection cuts errors")
    func referenceScenario() async throws {
        let results = await onDedicatedThread {
            await TailLatencySimulation.run(Self.scenario, policies: TailLatencySimulation.standardPolicies())
        }
        for result in results { print(result) }
        let byName = Dictionary(uniqueKeysWithValues: results.map { ($0.policy, $0) })
        let oracle = try #require(byName["oracle"])
        let ewma = try #require(byName["p2c-peak-ewma"])
        let leastOutstanding = try #require(byName["p2c-least-outstanding"])
        let roundRobin = try #require(byName["round-robin"])
        #expect(ratio(ewma.p999, oracle.p999) <= 1.5, "EWMA p99.9 \(ewma.p999) vs oracle \(oracle.p999)")
        #expect(ratio(roundRobin.p99, oracle.p99) >= 5, "RR p99 \(roundRobin.p99) vs oracle \(oracle.p99)")
        #expect(ratio(leastOutstanding.p999, oracle.p999) >= 2, "LO p99.9 \(leastOutstanding.p999) vs oracle \(oracle.p999)")
        for name in ["round-robin", "random", "p2c-least-outstanding", "p2c-peak-ewma"] {
            let plain = try #require(byName[name])
            let ejecting = try #require(byName[name + "+ejection"])
            #expect(ejecting.errorRate <= plain.errorRate / 10, "\(name): \(ejecting.errorRate) vs \(plain.errorRate)")
        }
    }

    @Test("no black hole: a backend failing every call in 1 ms gets at most its fair share, and under 0.1% with ejection")
    func blackHole() async throws {
        let scenario = TailLatencyScenario.reference {
            $0.duration = .seconds(30)
            $0.failureRate = 1
            $0.slowBackend = nil
        }
        let results = await onDedicatedThread {
            await TailLatencySimulation.run(scenario, policies: TailLatencySimulation.standardPolicies())
        }
        for result in results where result.policy != "oracle" {
            print(result.policy, result.shares[1])
            #expect(result.shares[1] <= 0.1 + 0.005, "\(result.policy) sent \(result.shares[1]) to the failing backend")
            if result.policy.hasSuffix("+ejection") {
                #expect(result.shares[1] < 0.001, "\(result.policy) sent \(result.shares[1]) with ejection")
            }
        }
    }

    @Test("a cold instance joining mid-run: slow start lowers its share while cold; P2C's p99 stays within 1.2x of the run without it")
    func coldInstance() async throws {
        // Benchmarks' 120 s run scaled down to stay quick in a debug build: the cold instance joins
        // at 15 s, ten times slower for 15 s, and the ramp lasts as long. No slow or failing backend.
        let quiet = TailLatencyScenario.reference {
            $0.duration = .seconds(45)
            $0.slowBackend = nil
            $0.failingBackend = nil
        }
        let scenario = TailLatencyScenario.reference {
            $0 = quiet
            $0.coldInstance = ColdInstance(joinsAt: 1.0 / 3, coldFor: .seconds(15), slowdown: 10)
        }
        let policies =
            TailLatencySimulation.slowStartPolicies(SlowStart(window: .seconds(15))).filter { $0.name != "oracle" } + [
                // Round robin needs a ramp that keeps the cold instance's share under its cold
                // capacity (about 1.7% of calls here) until it is warm: six times as long.
                .balancer("round-robin+slow-start-90s") { e, d, now in
                    AnyBalancer(RoundRobinBalancer(e, start: 0, ejection: d, slowStart: SlowStart(window: .seconds(90), now: now)))
                }
            ]
        let (results, baselines) = await onDedicatedThread {
            let results = await TailLatencySimulation.run(scenario, policies: policies)
            let baselines = await TailLatencySimulation.run(quiet, policies: policies.filter { !$0.name.contains("+slow-start") })
            return (results, baselines)
        }
        for result in results + baselines { print(result) }
        let byName = Dictionary(uniqueKeysWithValues: results.map { ($0.policy, $0) })
        let baseline = Dictionary(uniqueKeysWithValues: baselines.map { ($0.policy, $0) })
        // NaN (failing every comparison) for a policy that is missing.
        func share(_ name: String) -> Double { byName[name]?.coldInstanceShare ?? .nan }
        func p99Ratio(_ name: String, against plain: String) -> Double {
            guard let run = byName[name], let without = baseline[plain] else { return .nan }
            return ratio(run.p99, without.p99)
        }
        #expect(byName["round-robin"]?.shares.count == 11 && baseline["round-robin"]?.shares.count == 10)
        #expect(baseline["round-robin"]?.coldInstanceShare == nil)

        // Round robin gives the cold instance 1/11 of the calls and its queue grows without bound
        // while it is cold; a ramp as long as the cold spell halves that, not enough.
        #expect(abs(share("round-robin") - 1.0 / 11) < 0.005)
        #expect(share("round-robin+slow-start") < share("round-robin") * 0.7)
        #expect(p99Ratio("round-robin", against: "round-robin") > 10)
        #expect(share("round-robin+slow-start-90s") < share("round-robin+slow-start") * 0.7)
        #expect(p99Ratio("round-robin+slow-start-90s", against: "round-robin") <= 1.2)

        // P2C sees the cold instance's queue (least-outstanding) or latency (peak EWMA) and gives
        // it little at once; slow start lowers least-outstanding's share further.
        #expect(share("p2c-least-outstanding+slow-start") < share("p2c-least-outstanding"))
        for name in ["p2c-least-outstanding", "p2c-peak-ewma"] {
            #expect(share(name) < 0.03)
            #expect(share(name + "+slow-start") < 0.03)
            #expect(p99Ratio(name + "+slow-start", against: name) <= 1.2, "\(name)")
        }
    }

    @Test(
        "zones: with zone-aware routing ≥ 95% local while zone a is healthy, then spilling as its backends fail; the cross-zone penalty avoided"
    )
    func zones() async throws {
        // 3 zones of 4 backends, the client in zone a, +5 ms to zones b and c; zone a's backends
        // fail every call from 10, 20, 30 and 40 s on (Benchmarks runs 100 s).
        let scenario = TailLatencyScenario.reference {
            $0.backends = 12
            $0.duration = .seconds(50)
            $0.slowBackend = nil
            $0.failingBackend = nil
            $0.zones = ZoneOutage(zones: 3, crossZoneLatency: .milliseconds(5))
        }
        let results = await onDedicatedThread {
            await TailLatencySimulation.run(scenario, policies: TailLatencySimulation.zonePolicies())
        }
        for result in results { print(result) }
        let byName = Dictionary(uniqueKeysWithValues: results.map { ($0.policy, $0) })
        // The rule with clients spread like the instances (1/3 in zone a): k of 4 local backends
        // healthy, 12 - 4 + k in all: local share (k / (8 + k)) / (1/3), capped at 1.
        let rule = [1.0, 9.0 / 11, 6.0 / 10, 3.0 / 9, 0]
        for name in ["round-robin", "p2c-peak-ewma"] {
            let plain = try #require(byName[name]?.zonePhases)
            let zoned = try #require(byName[name + "+zones"]?.zonePhases)
            try #require(plain.count == 5 && zoned.count == 5)
            #expect(zoned.map(\.healthyLocalBackends) == [4, 3, 2, 1, 0])
            #expect(zoned[0].localShare >= 0.95, "\(name)+zones: \(zoned[0].localShare) local while healthy")
            for p in 1..<5 {
                #expect(zoned[p].localShare < zoned[p - 1].localShare, "\(name)+zones: \(zoned.map(\.localShare))")
            }
            for (phase, expected) in zip(zoned, rule) {
                #expect(abs(phase.localShare - expected) < 0.05, "\(name)+zones: \(phase.localShare) local for \(expected)")
                #expect(phase.errorRate < 0.01, "\(name)+zones: \(phase.errorRate) errors")
            }
            #expect(zoned[0].p50 < plain[0].p50, "\(name): p50 \(zoned[0].p50) with zones, \(plain[0].p50) without")
        }
        // Round robin without zones spreads evenly: a third local while zone a is healthy.
        let roundRobin = try #require(byName["round-robin"]?.zonePhases)
        #expect(abs(roundRobin[0].localShare - 1.0 / 3) < 0.02)
        #expect(roundRobin[4].localShare < 0.01)
    }
}
