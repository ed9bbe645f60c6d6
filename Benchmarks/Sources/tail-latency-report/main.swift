// Runs the tail-latency simulation (the reference scenario, and the black-hole variant in which
// the failing backend fails every call) for every balancer and the oracle, and prints markdown
// tables for BENCHMARKS.md.
import LoadBalancer
import LoadBalancerSimulation

func milliseconds(_ duration: Duration) -> Double {
    let (seconds, attoseconds) = duration.components
    return Double(seconds) * 1e3 + Double(attoseconds) / 1e15
}

func format(_ ms: Double) -> String {
    ms >= 1000 ? "\(Int((ms / 100).rounded()) * 100) ms" : "\((ms * 10).rounded() / 10) ms"
}

func percent(_ share: Double, digits: Double = 100) -> String {
    "\((share * 100 * digits).rounded() / digits)%"
}

let scenarios: [(String, TailLatencyScenario)] = [
    ("Reference scenario: backend 0 ten times slower in the middle third, backend 1 failing 20% of calls in 1 ms", .reference()),
    (
        "Black hole: backend 1 failing every call in 1 ms, no slow backend",
        .reference {
            $0.failureRate = 1
            $0.slowBackend = nil
        }
    ),
]

for (title, scenario) in scenarios {
    let start = ContinuousClock.now
    let results = await TailLatencySimulation.run(scenario, policies: TailLatencySimulation.standardPolicies())
    let oracle = results[0]
    print("### \(title)\n")
    print("| policy | p50 | p99 | p99.9 | errors | to backend 0 | to backend 1 | p99 / oracle | p99.9 / oracle |")
    print("|---|---|---|---|---|---|---|---|---|")
    for result in results {
        let p99Ratio = milliseconds(result.p99) / milliseconds(oracle.p99)
        let p999Ratio = milliseconds(result.p999) / milliseconds(oracle.p999)
        print(
            "| \(result.policy) | \(format(milliseconds(result.p50))) | \(format(milliseconds(result.p99))) | "
                + "\(format(milliseconds(result.p999))) | \(percent(result.errorRate, digits: 1000)) | "
                + "\(percent(result.shares[0])) | \(percent(result.shares[1], digits: 1000)) | "
                + "\((p99Ratio * 100).rounded() / 100) | \((p999Ratio * 100).rounded() / 100) |"
        )
    }
    print("\n\(oracle.requests) requests, \(scenario.duration) simulated, \(ContinuousClock.now - start) of wall time.\n")
}
