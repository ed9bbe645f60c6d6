import ArgumentParser
import AsyncHTTPClient
import LoadBalancer
import LoadBalancerHTTP
import LoadBalancerLocalBackends
import LoadBalancerSimulation

/// `lbctl demo`: every balancer against local backends, then the tail-latency simulation.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Compare every balancer against local HTTP backends (no registry needed).",
        discussion: """
            Starts four HTTP backends on 127.0.0.1 (two fast, one slow, one that fails now and then), \
            sends the same load through every balancer, and prints one comparison table. Then runs the \
            tail-latency simulation (10 backends, one turning 10x slower, one failing 20% of calls) \
            against an oracle that knows every backend's queue.
            """
    )

    @Option(help: "Requests per balancer.")
    var requests = 600

    @Option(help: "Requests in flight at once.")
    var concurrency = 8

    @Option(help: "Simulated seconds of the tail-latency simulation (0 skips it).")
    var simulatedSeconds = 30

    @Option(
        help: ArgumentHelp(
            "Write an SVG chart of the tail-latency simulation to this file: each policy's latency CDF (log scale) and "
                + "each backend's share over time under round robin and P2C peak-EWMA.",
            valueName: "file.svg"))
    var chart: String?

    /// The policies whose shares over time the chart shows.
    static let chartedShares = ["round-robin", "p2c-peak-ewma"]

    func validate() throws {
        if let chart {
            guard !chart.isEmpty else { throw ValidationError("--chart needs a file name") }
            guard simulatedSeconds > 0 else {
                throw ValidationError("--chart charts the tail-latency simulation: it needs --simulated-seconds above 0")
            }
        }
        guard requests > 0 else { throw ValidationError("--requests must be at least 1") }
        guard concurrency > 0 else { throw ValidationError("--concurrency must be at least 1") }
        guard simulatedSeconds >= 0 else { throw ValidationError("--simulated-seconds must not be negative") }
    }

    struct Backend {
        var name: String
        var behaviour: LocalHTTPBackend.Behaviour
    }

    static let backends = [
        Backend(name: "fast-a", behaviour: .init(latency: .milliseconds(2))),
        Backend(name: "fast-b", behaviour: .init(latency: .milliseconds(2))),
        Backend(name: "slow", behaviour: .init(latency: .milliseconds(40))),
        Backend(name: "flaky", behaviour: .init(latency: .milliseconds(2), failureRate: 0.2, seed: 7)),
    ]

    func run() async throws {
        var servers: [LocalHTTPBackend] = []
        for backend in Self.backends { servers.append(try await LocalHTTPBackend.start(backend.behaviour)) }
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPEndpointFactory.clientConfiguration())
        let names = Dictionary(uniqueKeysWithValues: zip(servers.map { "127.0.0.1:\($0.port)" }, Self.backends.map(\.name)))
        print(
            "Backends on 127.0.0.1: "
                + zip(Self.backends, servers).map { backend, server in
                    let latency = Output.milliseconds(backend.behaviour.latency.nanosecondsValue)
                    let failures = backend.behaviour.failureRate > 0 ? ", \(Int(backend.behaviour.failureRate * 100))% 500s" : ""
                    return "\(backend.name) :\(server.port) (\(latency)\(failures))"
                }.joined(separator: ", "))
        print("\(requests) requests per balancer, \(concurrency) in flight, no retries.\n")

        var rows: [[String]] = []
        let runs: [(BalancerName, Bool)] = BalancerName.allCases.map { ($0, false) } + [(.roundRobin, true), (.p2cPeakEWMA, true)]
        do {
            for (balancer, ejection) in runs {
                var options = LoadRun.Options()
                options.balancer = balancer
                options.ejection = ejection
                options.requests = requests
                options.concurrency = concurrency
                options.timeout = .seconds(5)
                // A run lasts about a second: judge failure rates every 100 ms.
                options.ejectionConfiguration = .defaults {
                    $0.interval = .milliseconds(100)
                    $0.failureRate = .init(minimumRequests: 10)
                }
                let publisher = StaticPublisher(instances: servers.map { try! Instance(host: "127.0.0.1", port: $0.port) })
                let report = try await LoadRun.run(publisher: publisher, client: client, options: options)
                let attempts = max(1, report.attempts)
                let shares = Self.backends.map { backend -> String in
                    let id = names.first { $0.value == backend.name }!.key
                    let count = report.perInstance.first { $0.id == id }?.attempts ?? 0
                    return Output.percent(Double(count) / Double(attempts))
                }
                rows.append(
                    [
                        balancer.rawValue + (ejection ? " + ejection" : ""),
                        Output.milliseconds(report.percentile(50)), Output.milliseconds(report.percentile(99)),
                        Output.percent(Double(report.failed) / Double(report.requests)),
                    ] + shares
                )
            }
        } catch {
            try? await client.shutdown()
            throw error
        }
        try await client.shutdown()
        for server in servers { try? await server.stop() }
        print(
            Output.table(
                ["BALANCER", "P50", "P99", "ERRORS"] + Self.backends.map { $0.name.uppercased() },
                rows,
                rightAligned: Set(1..<(4 + Self.backends.count))
            )
        )

        guard simulatedSeconds > 0 else { return }
        print("\nTail-latency simulation (\(simulatedSeconds) s simulated, the real balancers in virtual time):")
        print("10 backends x 4 slots, log-normal service (median 10 ms, p99 40 ms), Poisson arrivals at 60% load;")
        print("backend 0 is 10x slower in the middle third, backend 1 fails 20% of calls after 1 ms.\n")
        let scenario = TailLatencyScenario.reference { $0.duration = .seconds(simulatedSeconds) }
        let results = await TailLatencySimulation.run(scenario, policies: TailLatencySimulation.standardPolicies())
        print(SimulationTable.latencies(results))
        if let chart {
            try SVGChart(
                title: "Tail-latency simulation: \(simulatedSeconds) s simulated",
                subtitle: "10 backends x 4 slots, log-normal service (median 10 ms, p99 40 ms), 60% load; "
                    + "backend 0 10x slower in the middle third, backend 1 failing 20% of calls",
                results: results,
                instances: (0..<scenario.backends).map { "backend \($0)" },
                shareOf: Self.chartedShares
            ).write(to: chart)
            print("\nChart written to \(chart).")
        }
    }
}
