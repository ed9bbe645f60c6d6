import LoadBalancer
import LoadBalancerSimulation

/// The tables of a simulation run, shared by `lbctl demo` and `lbctl replay`.
enum SimulationTable {
    /// One row per policy: its p50, p99 and p99.9 latencies, error rate, and p99.9 over the
    /// oracle's (the first result).
    static func latencies(_ results: [SimulationResult]) -> String {
        func ns(_ d: Duration) -> Double { d.nanosecondsValue }
        let oracle = results.first { $0.policy == "oracle" } ?? results[0]
        return Output.table(
            ["POLICY", "P50", "P99", "P99.9", "ERRORS", "P99.9/ORACLE"],
            results.map {
                [
                    $0.policy, Output.milliseconds(ns($0.p50)), Output.milliseconds(ns($0.p99)), Output.milliseconds(ns($0.p999)),
                    Output.percent($0.errorRate),
                    ns(oracle.p999) > 0 ? "\((ns($0.p999) / ns(oracle.p999) * 100).rounded() / 100)x" : "-",
                ]
            },
            rightAligned: [1, 2, 3, 4, 5]
        )
    }

    /// One row per policy: each instance's share of the requests.
    static func shares(_ results: [SimulationResult], instances: [String]) -> String {
        Output.table(
            ["POLICY"] + instances,
            results.map { result in [result.policy] + instances.indices.map { Output.percent(result.shares[$0]) } },
            rightAligned: Set(1..<(1 + instances.count))
        )
    }
}
