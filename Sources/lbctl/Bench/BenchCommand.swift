import ArgumentParser
import AsyncHTTPClient
import LoadBalancer
import LoadBalancerHTTP

/// `lbctl bench SOURCE --balancer NAME --requests N --concurrency C [--rate R] [--retries K] [--timeout T] PATH`
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Drive HTTP load through a balancer and report the distribution, latency and errors.",
        discussion: SourceSpec.help + "\n\nBalancers: \(BalancerName.helpList)."
    )

    @Argument(help: "Where the instances come from (see below).")
    var source: String

    @Argument(help: "The HTTP path to request, for example /health.")
    var path: String = "/"

    @Option(help: "The balancer: \(BalancerName.helpList).")
    var balancer: BalancerName = .roundRobin

    @Flag(help: "Add passive outlier ejection to the balancer.")
    var ejection = false

    @Option(help: "How many requests to send.")
    var requests = 1000

    @Option(help: "How many requests in flight at once.")
    var concurrency = 8

    @Option(help: "Requests per second (open loop). Default: as fast as the concurrency allows.")
    var rate: Double?

    @Option(help: "Retries per request (each on a fresh pick).")
    var retries = 0

    @Option(help: "The time limit of one request, retries included, in seconds.")
    var timeout = 5.0

    func validate() throws {
        guard requests > 0 else { throw ValidationError("--requests must be at least 1") }
        guard concurrency > 0 else { throw ValidationError("--concurrency must be at least 1") }
        guard retries >= 0 else { throw ValidationError("--retries must not be negative") }
        guard timeout > 0, timeout.isFinite else { throw ValidationError("--timeout must be a positive number of seconds") }
        if let rate { guard rate > 0, rate.isFinite else { throw ValidationError("--rate must be positive") } }
        guard path.hasPrefix("/") else { throw ValidationError("PATH must start with '/'") }
    }

    func run() async throws {
        let spec = try SourceSpec(parsing: source)
        let publisher = try spec.makePublisher()
        var options = LoadRun.Options()
        options.balancer = balancer
        options.ejection = ejection
        options.requests = requests
        options.concurrency = concurrency
        options.rate = rate
        options.retries = retries
        options.timeout = .nanoseconds(Int64(timeout * 1e9))
        options.path = path

        // As many connections per instance as requests in flight: AsyncHTTPClient's default of 8
        // would queue the rest.
        let client = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: HTTPEndpointFactory.clientConfiguration(concurrency: concurrency)
        )
        let terminal = Output.isTerminal
        let total = requests
        let report: LoadRun.Report
        do {
            report = try await LoadRun.run(
                publisher: publisher,
                client: client,
                options: options,
                interval: terminal ? .milliseconds(100) : .seconds(1)
            ) { done, elapsed in
                let seconds = elapsed.secondsValue
                let line =
                    "\(done)/\(total) requests, \(Int((Double(done) / max(seconds, 0.001)).rounded())) req/s, \((seconds * 10).rounded() / 10) s"
                if terminal { Output.write("\r\u{1B}[K" + line) } else { print(line) }
            }
        } catch {
            try? await client.shutdown()
            throw error
        }
        if terminal { Output.write("\r\u{1B}[K") }
        try await client.shutdown()
        print(Self.render(report, balancer: balancer.rawValue + (ejection ? " + ejection" : "")))
    }

    static func render(_ report: LoadRun.Report, balancer: String) -> String {
        let seconds = report.wall.secondsValue
        var lines: [String] = []
        lines.append(
            "\(balancer): \(report.requests) requests in \((seconds * 100).rounded() / 100) s "
                + "(\(Int((Double(report.requests) / max(seconds, 0.001)).rounded())) req/s): "
                + "\(report.succeeded) succeeded, \(report.failed) failed, \(report.retries) retries"
        )
        lines.append("")
        lines.append("latency of successful requests:")
        lines.append(
            Output.table(
                ["p50", "p90", "p99", "p99.9", "max"],
                [[0.5, 0.9, 0.99, 0.999].map { Output.milliseconds(report.percentile($0 * 100)) } + [Output.milliseconds(report.max)]],
                rightAligned: [0, 1, 2, 3, 4]
            )
        )
        lines.append("")
        lines.append("requests per instance (attempts, retries included):")
        let attempts = max(1, report.attempts)
        lines.append(
            Output.table(
                ["INSTANCE", "ATTEMPTS", "SHARE", "FAILED"],
                report.perInstance.map {
                    [$0.id, "\($0.attempts)", Output.percent(Double($0.attempts) / Double(attempts)), "\($0.failures)"]
                },
                rightAligned: [1, 2, 3]
            )
        )
        lines.append("")
        if report.errors.isEmpty {
            lines.append("errors by kind: none")
        } else {
            lines.append("errors by kind:")
            lines.append(Output.table(["KIND", "REQUESTS"], report.errors.map { [$0.kind, "\($0.count)"] }, rightAligned: [1]))
        }
        return lines.joined(separator: "\n")
    }
}
