import ArgumentParser
import AsyncHTTPClient
import Histogram
import LoadBalancer
import LoadBalancerHTTP
import LoadBalancerSimulation

/// `lbctl bench SOURCE [--protocol http|grpc] --balancer NAME --requests N --concurrency C [--rate R] [--retries K] [--timeout T] [PATH | --service NAME]`
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Drive HTTP or gRPC load through a balancer and report the distribution, latency and errors.",
        discussion: SourceSpec.help + "\n\nBalancers: \(BalancerName.helpList).\n\n" + featuresHelp + "\n\n" + grpcHelp
    )

    static let featuresHelp = """
        Slow start (--slow-start SECONDS): an instance that joins the set during the run (a new \
        registration, or one back from ejection or a failing health check) takes a share of its \
        full weight that ramps from --slow-start-min-share (default 0.1) to 1 over the window, \
        max(min share, (t / window)^(1 / aggression)) (default aggression 1: linear); the \
        instances of the first set take their full share at once. It turns on the per-second \
        report (--per-second): each instance's share of the attempts in every second of the run, \
        where a ramp shows.

        Priority failover (--balancer priority): level 0 (the lowest priority value) keeps all \
        traffic while its healthy share x --overprovisioning-factor (default 1.4) is at least 1, \
        then spills to the next levels in proportion; a level with fewer than \
        --priority-panic-threshold (default 0.5) healthy sends its traffic to all its instances \
        while the levels lack healthy capacity. A very large factor (1e9) is strict failover.

        Active health checks (--health-check http|grpc|tcp): every instance is checked every \
        --health-check-interval seconds (default 5, +-10% jitter), a check failing after \
        --health-check-timeout (default 1); --unhealthy-threshold failures in a row (default 2) \
        take an instance out of picks, --healthy-threshold passes (default 2) bring it back. http \
        GETs --health-check-path (default /health; 2xx is healthy), grpc calls \
        grpc.health.v1.Health/Check for --health-check-service (default "": the whole server), \
        tcp opens a connection. The load starts once every instance has had its first check (an \
        instance takes no traffic before it). Without --ejection the checks alone take instances \
        out (passive ejection is off); with --ejection both judge, and a passing check does not \
        end a passive ejection. Either way, when fewer than half of the instances are healthy \
        every instance takes traffic (the detector's panic rule).
        """

    static let noGRPCSlowStart =
        "--slow-start is for HTTP: the gRPC balancing transport (--protocol grpc) has no slow start"

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

    @OptionGroup var load: LoadOptions<BenchLoadDefaults>

    @Option(help: "How many requests to send.")
    var requests = 1000

    @Option(help: "Retries per request (each on a fresh pick).")
    var retries = 0

    @Option(
        name: .customLong("slow-start"),
        help: ArgumentHelp("Slow start: ramp instances that join during the run over this many seconds (HTTP only).", valueName: "seconds"))
    var slowStartWindow: Double?

    @Option(help: "With --slow-start: the share of its full weight a joining instance starts at, 0...1. Default 0.1.")
    var slowStartMinShare: Double?

    @Option(help: "With --slow-start: the ramp's shape, above 0 (1 linear, above 1 faster at first). Default 1.")
    var slowStartAggression: Double?

    @Option(help: "With --balancer priority: a level keeps all traffic while its healthy share times this is at least 1. Default 1.4.")
    var overprovisioningFactor: Double?

    @Option(help: "With --balancer priority: the healthy share, 0...1, below which a level uses all its instances. Default 0.5.")
    var priorityPanicThreshold: Double?

    @OptionGroup var health: HealthCheckOptions<BenchHealthChecks>

    @Flag(
        inversion: .prefixedNo,
        help: "Report each instance's share of the attempts in every second of the run. Default: on with --slow-start."
    )
    var perSecond: Bool?

    @Option(
        help: ArgumentHelp(
            "Write the set changes and every call (instance, start, latency, outcome) to this file, as JSON lines, for lbctl replay.",
            valueName: "file"))
    var record: String?

    @Option(
        help: ArgumentHelp(
            "Write an SVG chart to this file: the latency CDF (log scale) and each instance's share of the attempts over time.",
            valueName: "file.svg"))
    var chart: String?

    func validate() throws {
        if let record { guard !record.isEmpty else { throw ValidationError("--record needs a file name") } }
        if let chart { guard !chart.isEmpty else { throw ValidationError("--chart needs a file name") } }
        guard requests > 0 else { throw ValidationError("--requests must be at least 1") }
        guard retries >= 0 else { throw ValidationError("--retries must not be negative") }
        try validateFeatures()
        switch loadProtocol {
        case .http:
            if let path { guard path.hasPrefix("/") else { throw ValidationError("PATH must start with '/'") } }
            if service != nil { throw ValidationError("--service is for --protocol grpc; HTTP requests PATH") }
        case .grpc:
            if let path {
                throw ValidationError(
                    "PATH ('\(path)') is for HTTP; --protocol grpc calls grpc.health.v1.Health/Check (name the service with --service)")
            }
            if load.balancer.grpcChoice == nil { throw ValidationError(BalancerName.noGRPCEquivalent(load.balancer)) }
            if slowStartWindow != nil { throw ValidationError(Self.noGRPCSlowStart) }
            guard retries <= 4 else {
                throw ValidationError("--retries is at most 4 with --protocol grpc (a gRPC retry policy makes at most 5 attempts)")
            }
        }
    }

    func run() async throws {
        let spec = try SourceSpec(parsing: source)
        let publisher = try spec.makePublisher()
        var options = load.runOptions(path: path, healthChecks: health.healthChecks)
        options.requests = requests
        options.retries = retries
        options.slowStart = slowStart
        options.priority = BalancerName.PriorityOptions(
            overprovisioningFactor: overprovisioningFactor,
            panicThreshold: priorityPanicThreshold
        )
        let label =
            load.label + (slowStartWindow.map { " + slow start \(ActiveHealthChecks.seconds(.seconds($0))) s" } ?? "") + health.label
        let perSecond = self.perSecond ?? (slowStartWindow != nil)
        if let record {
            options.recorder = try Recorder(
                path: record,
                balancer: load.balancer.rawValue,
                options: Recording.Options(
                    source: source, protocol: loadProtocol.rawValue, path: loadProtocol == .http ? options.path : nil,
                    service: loadProtocol == .grpc ? service ?? "" : nil, ejection: load.ejection, requests: requests,
                    concurrency: load.concurrency, rate: load.rate, retries: retries, timeout: load.timeout, slowStart: slowStartWindow,
                    healthCheck: health.healthCheck?.rawValue
                )
            )
        }
        let terminal = Output.isTerminal
        let total = requests
        let progress: @Sendable (Int, Duration) -> Void = { done, elapsed in
            let seconds = elapsed.secondsValue
            let line =
                "\(done)/\(total) requests, \(Int((Double(done) / max(seconds, 0.001)).rounded())) req/s, \((seconds * 10).rounded() / 10) s"
            // Flushed also into a pipe or file: a script watching the run sees each line as it comes.
            if terminal { Output.write("\r\u{1B}[K" + line) } else { Output.write(line + "\n") }
        }
        let interval: Duration = terminal ? .milliseconds(100) : .seconds(1)

        if loadProtocol == .grpc {
            let report: LoadRun.Report
            do {
                report = try await GRPCLoadRun.run(
                    publisher: publisher,
                    options: options,
                    service: service ?? "",
                    interval: interval,
                    progress: progress
                )
            } catch {
                // Keep what was recorded.
                try? options.recorder?.finish()
                throw error
            }
            if terminal { Output.write("\r\u{1B}[K") }
            try finish(report, label: label, recorder: options.recorder)
            print(Self.render(report, balancer: label, perSecond: perSecond))
            return
        }

        let client = load.httpClient()
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
            try? options.recorder?.finish()
            throw error
        }
        if terminal { Output.write("\r\u{1B}[K") }
        try await client.shutdown()
        try finish(report, label: label, recorder: options.recorder)
        print(Self.render(report, balancer: label, perSecond: perSecond))
    }

    /// Closes the recording and writes the chart, if asked for.
    private func finish(_ report: LoadRun.Report, label: String, recorder: Recorder?) throws {
        try recorder?.finish()
        if let chart { try Self.chart(report, balancer: label, source: source).write(to: chart) }
    }

    /// The chart of a run: its latency CDF and each instance's share of the attempts over time (at
    /// most 50 spans of whole tenths of a second).
    static func chart(_ report: LoadRun.Report, balancer: String, source: String) -> SVGChart {
        let tenths = report.perTenth
        let group = max(1, (tenths.count + 49) / 50)
        let buckets = stride(from: 0, to: tenths.count, by: group).map { first in
            tenths[first..<min(tenths.count, first + group)].reduce(into: [String: Int]()) { merged, counts in
                merged.merge(counts, uniquingKeysWith: +)
            }
        }
        let instances = report.perInstance.map(\.id)
        let wall = report.wall.secondsValue
        return SVGChart(
            title: "lbctl bench: \(balancer)",
            subtitle:
                "\(source): \(report.requests) requests, \(report.succeeded) succeeded, \(report.failed) failed, in \(SVGChart.trimmed(wall)) s",
            cdf: [
                SVGChart.CDFSeries(
                    name: balancer,
                    latencies: report.histogram.totalCount == 0
                        ? [] : LatencyQuantile.probabilities.map { report.percentile($0 * 100) / 1e9 }
                )
            ],
            panels: [
                SVGChart.SharePanel(
                    name: balancer,
                    instances: instances,
                    starts: buckets.indices.map { Double($0 * group) / 10 },
                    end: max(wall, Double((buckets.count - 1) * group) / 10 + 0.001),
                    requests: buckets.map { counts in instances.map { counts[$0] ?? 0 } }
                )
            ]
        )
    }

    static func render(_ report: LoadRun.Report, balancer: String, perSecond: Bool = false) -> String {
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
        if let checks = report.healthChecks {
            lines.append(
                "health checks (\(checks.summary)): taken out of picks \(checks.failingEvents) times, brought back \(checks.passingEvents) times; "
                    + "not passing at the start: \(checks.start.notPassing.isEmpty ? "none" : checks.start.notPassing.joined(separator: ", "))"
                    + (checks.start.panic ? " (too few passing: every instance took calls until enough passed)" : "")
                    + "; not passing at the end: \(checks.failingAtEnd.isEmpty ? "none" : checks.failingAtEnd.joined(separator: ", "))"
            )
            lines.append("")
        }
        if perSecond {
            lines.append("share of attempts per second (SECOND: from-to seconds into the run; -: no attempt yet):")
            lines.append(Self.perSecondTable(report.perSecond, wall: report.wall))
            lines.append("")
        }
        if report.errors.isEmpty {
            lines.append("errors by kind: none")
        } else {
            lines.append("errors by kind:")
            lines.append(Output.table(["KIND", "REQUESTS"], report.errors.map { [$0.kind, "\($0.count)"] }, rightAligned: [1]))
        }
        return lines.joined(separator: "\n")
    }
}

extension BenchCommand {
    /// The slow-start rule of the options, if `--slow-start` is given.
    var slowStart: SlowStart? {
        slowStartWindow.map { window in
            SlowStart(
                window: .nanoseconds(Int64(window * 1e9)),
                minimumShare: slowStartMinShare ?? 0.1,
                aggression: slowStartAggression ?? 1
            )
        }
    }

    /// Checks the slow-start and priority options (the health-check options check themselves).
    func validateFeatures() throws {
        try OptionChecks.seconds(slowStartWindow, "--slow-start")
        if slowStartWindow == nil {
            try OptionChecks.needs(slowStartMinShare, "--slow-start-min-share", "--slow-start")
            try OptionChecks.needs(slowStartAggression, "--slow-start-aggression", "--slow-start")
        }
        if let slowStartMinShare {
            guard (0...1).contains(slowStartMinShare) else { throw ValidationError("--slow-start-min-share must be between 0 and 1") }
        }
        if let slowStartAggression {
            guard slowStartAggression > 0, slowStartAggression.isFinite else {
                throw ValidationError("--slow-start-aggression must be a positive number")
            }
        }

        if load.balancer != .priority {
            try OptionChecks.needs(overprovisioningFactor, "--overprovisioning-factor", "--balancer priority")
            try OptionChecks.needs(priorityPanicThreshold, "--priority-panic-threshold", "--balancer priority")
        }
        if let overprovisioningFactor {
            // Infinity is allowed: strict failover.
            guard overprovisioningFactor > 0 else { throw ValidationError("--overprovisioning-factor must be above 0") }
        }
        if let priorityPanicThreshold {
            guard (0...1).contains(priorityPanicThreshold) else {
                throw ValidationError("--priority-panic-threshold must be between 0 and 1")
            }
        }
    }

    /// The per-second table: a row per second of the run, a column per instance (in the order
    /// they took their first attempt), each cell the instance's share of that second's attempts.
    static func perSecondTable(_ seconds: [[String: Int]], wall: Duration) -> String {
        var firstSecond: [String: Int] = [:]
        for (second, counts) in seconds.enumerated() {
            for id in counts.keys where firstSecond[id] == nil { firstSecond[id] = second }
        }
        let ids = firstSecond.keys.sorted { (firstSecond[$0]!, $0) < (firstSecond[$1]!, $1) }
        // The last second ends with the run (in hundredths, rounded up).
        let end = (wall.secondsValue * 100).rounded(.up) / 100
        let rows = seconds.enumerated().map { second, counts -> [String] in
            let total = counts.values.reduce(0, +)
            let to = second == seconds.count - 1 && end < Double(second + 1) ? "\(max(Double(second) + 0.01, end))" : "\(second + 1)"
            return ["\(second)-\(to)", "\(total)"]
                + ids.map { id in
                    guard second >= firstSecond[id]! else { return "-" }
                    return Output.percent(Double(counts[id] ?? 0) / Double(max(1, total)))
                }
        }
        return Output.table(["SECOND", "ATTEMPTS"] + ids, rows, rightAligned: Set(1..<(2 + ids.count)))
    }
}
