// Runs the tail-latency simulation (the reference scenario, and the black-hole variant in which
// the failing backend fails every call) for every balancer and the oracle, then a cold instance
// joining mid-run with and without slow start, then three zones losing the client's zone backend
// by backend, with and without zone-aware routing, and prints markdown tables for BENCHMARKS.md.
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

// A cold instance joining a third into the run, ten times slower for its first 30 s, with and
// without slow start. No slow or failing backend: the cold instance is the only disturbance. Each
// policy is compared with its own run on the same traffic without the cold instance.
let quiet = TailLatencyScenario.reference {
    $0.duration = .seconds(120)
    $0.slowBackend = nil
    $0.failingBackend = nil
}
var coldScenario = quiet
coldScenario.coldInstance = ColdInstance(joinsAt: 1.0 / 3, coldFor: .seconds(30), slowdown: 10)

/// The run's results with the cold instance, and the p99 of the same policy without it, by policy name.
func coldRuns(_ slowStart: SlowStart) async -> (results: [SimulationResult], baselineP99: [String: Duration]) {
    let policies = TailLatencySimulation.slowStartPolicies(slowStart)
    let results = await TailLatencySimulation.run(coldScenario, policies: policies)
    // Without a cold instance nothing ramps: a policy with slow start runs as the one without.
    let baseline = await TailLatencySimulation.run(quiet, policies: policies.filter { !$0.name.hasSuffix("+slow-start") })
    var baselineP99: [String: Duration] = [:]
    for result in baseline { baselineP99[result.policy] = result.p99 }
    for result in results where result.policy.hasSuffix("+slow-start") {
        baselineP99[result.policy] = baselineP99[String(result.policy.dropLast("+slow-start".count))]
    }
    return (results, baselineP99)
}

let coldStart = ContinuousClock.now
let (coldResults, baselineP99) = await coldRuns(SlowStart(window: .seconds(30)))
print("### Cold instance joining at 40 s, ten times slower for its first 30 s: slow start (window 30 s)\n")
print("| policy | p50 | p99 | p99.9 | to the cold instance while cold | p99 without the cold instance | p99 / without |")
print("|---|---|---|---|---|---|---|")
for result in coldResults {
    let base = baselineP99[result.policy]!
    print(
        "| \(result.policy) | \(format(milliseconds(result.p50))) | \(format(milliseconds(result.p99))) | "
            + "\(format(milliseconds(result.p999))) | \(percent(result.coldInstanceShare ?? 0)) | "
            + "\(format(milliseconds(base))) | \((milliseconds(result.p99) / milliseconds(base) * 100).rounded() / 100) |"
    )
}
print(
    "\n\(coldResults[0].requests) requests, \(coldScenario.duration) simulated, 7 policies and 4 baselines in "
        + "\(ContinuousClock.now - coldStart) of wall time.\n"
)

// Other ramps: the cold instance's share while cold and p99 / without, per load-aware policy and round robin.
let ramps: [(String, SlowStart)] = [
    ("window 30 s, minimum 10%, linear (the default curve)", SlowStart(window: .seconds(30))),
    ("window 60 s", SlowStart(window: .seconds(60))),
    ("window 120 s", SlowStart(window: .seconds(120))),
    ("window 30 s, minimum 1%", SlowStart(window: .seconds(30), minimumShare: 0.01)),
    ("window 30 s, minimum 1%, aggression 0.5", SlowStart(window: .seconds(30), minimumShare: 0.01, aggression: 0.5)),
    ("window 60 s, minimum 1%, aggression 0.5", SlowStart(window: .seconds(60), minimumShare: 0.01, aggression: 0.5)),
]
print("### The same with other ramps: share while cold, p99 / without\n")
print("| slow start | round-robin | p2c-least-outstanding | p2c-peak-ewma |")
print("|---|---|---|---|")
for (name, ramp) in ramps {
    let (results, baseline) = await coldRuns(ramp)
    var cells: [String] = []
    for policy in ["round-robin+slow-start", "p2c-least-outstanding+slow-start", "p2c-peak-ewma+slow-start"] {
        let result = results.first { $0.policy == policy }!
        let ratio = milliseconds(result.p99) / milliseconds(baseline[policy]!)
        cells.append("\(percent(result.coldInstanceShare ?? 0)), \((ratio * 100).rounded() / 100)×")
    }
    print("| \(name) | \(cells.joined(separator: " | ")) |")
}
print("")

// Zones: 3 zones of 4 backends, the client in zone a, +5 ms on every call to zones b and c; zone
// a's backends fail every call from 1/5, 2/5, 3/5 and 4/5 of the run on, one after another. Round
// robin and P2C peak-EWMA with ejection (at most 50% ejected), without and with zone-aware routing.
let zoneScenario = TailLatencyScenario.reference {
    $0.backends = 12
    $0.duration = .seconds(100)
    $0.slowBackend = nil
    $0.failingBackend = nil
    $0.zones = ZoneOutage(zones: 3, crossZoneLatency: .milliseconds(5), failuresAt: [0.2, 0.4, 0.6, 0.8])
}
let zonesStart = ContinuousClock.now
let zoneResults = await TailLatencySimulation.run(zoneScenario, policies: TailLatencySimulation.zonePolicies())
print("### Zones: zone a losing its 4 backends one by one (at 20, 40, 60 and 80 s), +5 ms across zones\n")
print("| policy | phase | zone a healthy | local (rule) | local | p50 | p99 | errors |")
print("|---|---|---|---|---|---|---|---|")
let routing = ZoneAwareRouting(localZone: ZoneOutage.localZone)
for result in zoneResults {
    let phases = result.zonePhases ?? []
    for (index, phase) in phases.enumerated() {
        let end = index + 1 < phases.count ? phases[index + 1].start : zoneScenario.duration
        // The rule's local share for this phase, with every instance still in the set.
        let healthy = ["a": phase.healthyLocalBackends, "b": 4, "c": 4]
        let rule = routing.shares(healthy: healthy, total: ["a": 4, "b": 4, "c": 4]).map { $0["a", default: 0] } ?? 0
        print(
            "| \(result.policy) | \(Int(milliseconds(phase.start) / 1000))–\(Int(milliseconds(end) / 1000)) s | \(phase.healthyLocalBackends) of 4 | "
                + (result.policy.hasSuffix("+zones") ? percent(rule, digits: 10) : "–") + " | "
                + "\(percent(phase.localShare, digits: 10)) | \(format(milliseconds(phase.p50))) | "
                + "\(format(milliseconds(phase.p99))) | \(percent(phase.errorRate, digits: 1000)) |"
        )
    }
}
print(
    "\n\(zoneResults[0].requests) requests, \(zoneScenario.duration) simulated, 5 policies in "
        + "\(ContinuousClock.now - zonesStart) of wall time.\n"
)
