import ArgumentParser
import LoadBalancer
import LoadBalancerSimulation
import Synchronization

/// `lbctl replay FILE [--balancer NAME]... [--ejection] [--seed N] [--window SECONDS] [--instance-concurrency N] [--chart FILE.svg]`
struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Replay a recording of lbctl bench --record with other balancers, in virtual time, against the oracle.",
        discussion: """
            The recorded call starts arrive again in virtual time (the tail-latency simulation's engine, \
            with the library's real balancers); the recorded set changes are published when they happened. \
            A call sent to an instance takes the latency and outcome of one of the calls recorded to that \
            instance in the same window (--window, default 1 s; else the nearest window with a call to it), \
            drawn with a generator seeded by --seed: each balancer meets each instance's recorded latency \
            distribution and failure rate, window by window. By default an instance serves any number of \
            calls at once (latencies as recorded, whatever the load); --instance-concurrency N gives each \
            instance N slots with a FIFO queue behind, a recorded latency then being the service time. \
            The oracle knows each instance's mean latency and failure rate in each window and sends each \
            call where it completes soonest. The same recording, options and seed print the same output, \
            byte for byte.

            Balancers: \(BalancerName.helpList) (default: all). Random choices of the balancers are \
            seeded from --seed too.
            """
    )

    @Argument(help: "The recording (lbctl bench --record FILE).")
    var file: String

    @Option(name: .customLong("balancer"), help: "A balancer to replay (repeat for several). Default: every balancer.")
    var balancers: [BalancerName] = []

    @Flag(help: "Add passive outlier ejection: each balancer also with ejection (rows named NAME+ejection).")
    var ejection = false

    @Option(help: "Seed of the draws and of the balancers' random choices.")
    var seed: UInt64 = 1

    @Option(help: ArgumentHelp("The span over which an instance's recorded behaviour is taken as steady.", valueName: "seconds"))
    var window = 1.0

    @Option(help: "Calls an instance serves at once, the rest waiting in a queue. Default: no limit.")
    var instanceConcurrency: Int?

    @Option(
        help: ArgumentHelp(
            "Write an SVG chart to this file: each policy's latency CDF (log scale) and each balancer's shares per instance over time.",
            valueName: "file.svg"))
    var chart: String?

    func validate() throws {
        guard window > 0, window.isFinite else { throw ValidationError("--window must be a positive number of seconds") }
        if let instanceConcurrency {
            guard instanceConcurrency >= 1 else { throw ValidationError("--instance-concurrency must be at least 1") }
        }
        if let chart { guard !chart.isEmpty else { throw ValidationError("--chart needs a file name") } }
    }

    func run() async throws {
        let recording = try Recording.read(path: file)
        let run = recording.run
        let instances = run.instances
        let names =
            balancers.isEmpty ? BalancerName.allCases : balancers.reduce(into: [BalancerName]()) { if !$0.contains($1) { $0.append($1) } }
        var policies: [SimulatedPolicy] = [.oracle]
        policies += names.map { $0.simulatedPolicy(seed: seed, ejection: nil) }
        if ejection {
            policies += names.map { $0.simulatedPolicy(seed: seed, ejection: OutlierDetector.Configuration()) }
        }
        let scenario = ReplayScenario(
            run,
            window: .nanoseconds(Int64(window * 1e9)),
            instanceConcurrency: instanceConcurrency,
            seed: seed
        )
        let results = await TailLatencySimulation.replay(scenario, policies: policies)

        let starts = run.calls.map { $0.start.secondsValue }
        let span = (starts.max() ?? 0) - (starts.min() ?? 0)
        print(
            "Recorded with \(recording.balancer): \(run.calls.count) calls to \(instances.count) instances over "
                + "\(SVGChart.trimmed(span)) s, \(run.sets.count) set changes"
                + (recording.cancelled > 0 ? " (\(recording.cancelled) cancelled calls left out)" : "") + "."
        )
        print(
            "Replayed in virtual time: seed \(seed), \(SVGChart.trimmed(window)) s windows, "
                + (instanceConcurrency.map { "\($0) calls at once per instance" } ?? "no limit on calls at once per instance") + ".\n"
        )
        print(SimulationTable.latencies(results))
        print("\nshare of calls per instance:")
        print(SimulationTable.shares(results, instances: instances))
        if let chart {
            try SVGChart(
                title: "lbctl replay: \(run.calls.count) recorded calls (\(recording.balancer)), seed \(seed)",
                subtitle: "each call's latency and outcome drawn from its instance's recorded calls, \(SVGChart.trimmed(window)) s windows",
                results: results,
                instances: instances,
                shareOf: results.map(\.policy).filter { $0 != "oracle" }
            ).write(to: chart)
            print("\nChart written to \(chart).")
        }
    }
}

extension BalancerName {
    /// This balancer as a simulation policy, its random choices seeded from `seed`, with outlier
    /// ejection by `ejection` when set (then named `NAME+ejection`). The settings are `make`'s.
    func simulatedPolicy(seed: UInt64, ejection: OutlierDetector.Configuration?) -> SimulatedPolicy {
        let name = rawValue + (ejection == nil ? "" : "+ejection")
        let seed = seed &* 0x9E37_79B9_7F4A_7C15 &+ 7
        return .balancer(name, ejection: ejection) { e, d, now in
            switch self {
            case .roundRobin: AnyBalancer(RoundRobinBalancer(e, start: 0, rotation: .exact, ejection: d))
            case .random: AnyBalancer(RandomBalancer(e, seed: seed, ejection: d))
            case .weightedRoundRobin: AnyBalancer(WeightedRoundRobinBalancer(e, start: 0, ejection: d))
            case .weightedRandom: AnyBalancer(WeightedRandomBalancer(e, seed: seed, ejection: d))
            case .priority: AnyBalancer(PriorityBalancer(e, seed: seed, ejection: d))
            case .p2cLeastOutstanding: AnyBalancer(P2CBalancer(e, metric: .leastOutstanding, seed: seed, ejection: d, now: now))
            case .p2cPeakEWMA: AnyBalancer(P2CBalancer(e, metric: .peakEWMA(), seed: seed, ejection: d, now: now))
            case .consistentHash: AnyBalancer(SeededKeysConsistentHash(ConsistentHashBalancer(e, ejection: d), seed: seed))
            }
        }
    }
}

/// Consistent hashing whose keyless picks hash a key drawn from a seeded generator (the library's
/// balancer draws an unseeded random key), so that a replay repeats. Everything else is the
/// wrapped balancer's.
final class SeededKeysConsistentHash: Balancer {
    let base: ConsistentHashBalancer<Int, Int>
    private let state: Atomic<UInt64>

    init(_ base: ConsistentHashBalancer<Int, Int>, seed: UInt64) {
        self.base = base
        self.state = Atomic(seed)
    }

    var cache: EndpointCache<Int, Int>? { base.cache }
    var snapshot: EndpointSet<Int, Int> { base.snapshot }

    /// The entry of the next seeded key's hash (SplitMix64).
    func pick() throws(LoadBalancerError) -> EndpointPick {
        var z = state.wrappingAdd(0x9E37_79B9_7F4A_7C15, ordering: .relaxed).newValue
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return try base.pick(forHash: z ^ (z >> 31))
    }

    func lease() throws(LoadBalancerError) -> EndpointLease<Int, Int> { try base.lease() }
    func lease(avoiding ids: Set<String>) throws(LoadBalancerError) -> EndpointLease<Int, Int>? { try base.lease(avoiding: ids) }
    func finish(_ lease: EndpointLease<Int, Int>, outcome: CallRecord.Outcome, latency: Duration) {
        base.finish(lease, outcome: outcome, latency: latency)
    }
    var observesCalls: Bool { base.observesCalls }
    func willCall(_ pick: EndpointPick, slot: UInt32) { base.willCall(pick, slot: slot) }
    func record(_ call: CallRecord) { base.record(call) }
}
