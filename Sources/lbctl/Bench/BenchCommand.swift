import ArgumentParser
import AsyncHTTPClient
import LoadBalancer
import LoadBalancerHTTP

/// `lbctl bench SOURCE [--protocol http|grpc] --balancer NAME --requests N --concurrency C [--rate R] [--retries K] [--timeout T] [PATH | --service NAME]`
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Drive HTTP or gRPC load through a balancer and report the distribution, latency and errors.",
        discussion: SourceSpec.help + "\n\nBalancers: \(BalancerName.helpList).\n\n" + grpcHelp
    )

    static let grpcHelp = """
        gRPC: with --protocol grpc each request is a grpc.health.v1.Health/Check RPC (the standard \
        health-checking service) asking about --service (default "": the server as a whole), sent \
        through LoadBalancerGRPC's BalancingClientTransport with the chosen balancer (all but \
        priority: \(BalancerName.grpcHelpList)); --ejection is its outlier detection, --retries K a \
        grpc-swift retry policy of K + 1 attempts (at most 4 retries; retryable: unavailable), \
        --timeout the RPC's timeout. An answer other than SERVING is a failed request. PATH is for \
        HTTP only. Attempts are counted per instance by the address their stream reached; one that \
        opened no stream is counted as (no stream).
        """

    /// The protocol the load speaks.
    enum LoadProtocol: String, CaseIterable, ExpressibleByArgument {
        case http
        case grpc
    }

    @Argument(help: "Where the instances come from (see below).")
    var source: String

    @Argument(help: "The HTTP path to request, for example /health (default /). Not with --protocol grpc.")
    var path: String?

    @Option(name: .customLong("protocol"), help: "The protocol: http (GET PATH) or grpc (grpc.health.v1.Health/Check).")
    var loadProtocol: LoadProtocol = .http

    @Option(help: "With --protocol grpc: the service name each health check asks about. Default: \"\" (the whole server).")
    var service: String?

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
        switch loadProtocol {
        case .http:
            if let path { guard path.hasPrefix("/") else { throw ValidationError("PATH must start with '/'") } }
            if service != nil { throw ValidationError("--service is for --protocol grpc; HTTP requests PATH") }
        case .grpc:
            if let path {
                throw ValidationError(
                    "PATH ('\(path)') is for HTTP; --protocol grpc calls grpc.health.v1.Health/Check (name the service with --service)")
            }
            if balancer.grpcChoice == nil { throw ValidationError(BalancerName.noGRPCEquivalent(balancer)) }
            guard retries <= 4 else {
                throw ValidationError("--retries is at most 4 with --protocol grpc (a gRPC retry policy makes at most 5 attempts)")
            }
        }
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
        options.path = path ?? "/"
        let label = balancer.rawValue + (ejection ? " + ejection" : "")
        let terminal = Output.isTerminal
        let total = requests
        let progress: @Sendable (Int, Duration) -> Void = { done, elapsed in
            let seconds = elapsed.secondsValue
            let line =
                "\(done)/\(total) requests, \(Int((Double(done) / max(seconds, 0.001)).rounded())) req/s, \((seconds * 10).rounded() / 10) s"
            if terminal { Output.write("\r\u{1B}[K" + line) } else { print(line) }
        }
        let interval: Duration = terminal ? .milliseconds(100) : .seconds(1)

        if loadProtocol == .grpc {
            let report = try await GRPCLoadRun.run(
                publisher: publisher,
                options: options,
                service: service ?? "",
                interval: interval,
                progress: progress
            )
            if terminal { Output.write("\r\u{1B}[K") }
            print(Self.render(report, balancer: label))
            return
        }

        // As many connections per instance as requests in flight: AsyncHTTPClient's default of 8
        // would queue the rest.
        let client = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: HTTPEndpointFactory.clientConfiguration(concurrency: concurrency)
        )
        let report: LoadRun.Report
        do {
            report = try await LoadRun.run(
                publisher: publisher,
                client: client,
                options: options,
                interval: interval,
                progress: progress
            )
        } catch {
            try? await client.shutdown()
            throw error
        }
        if terminal { Output.write("\r\u{1B}[K") }
        try await client.shutdown()
        print(Self.render(report, balancer: label))
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
