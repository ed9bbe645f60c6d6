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
}
