import ArgumentParser
import AsyncHTTPClient
import Foundation
import LoadBalancer
import LoadBalancerHTTP
import ServiceLifecycle

/// `lbctl top SOURCE [PATH] --balancer NAME [--no-load] [--json] [--explain] ...`: a live view of a
/// balancer's state, one row per instance, while it carries load (or without load).
struct TopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "top",
        abstract: "Show a balancer's live state, one row per instance, while it carries HTTP load (or none).",
        discussion: SourceSpec.help + "\n\nBalancers: \(BalancerName.helpList).\n\n" + help
    )

    static let help = """
        On a terminal the table refreshes every --interval seconds; press q (or Ctrl-C) to quit. Rows \
        are sorted by --sort and coloured: red for an ejected instance, yellow for an unhealthy one \
        (failing its health check, on probation after an ejection, or below 95% success), magenta \
        for a slow one (its mean latency in the interval, or its latency estimate, at least twice \
        the median). The header has the totals: picks and requests per second, calls in flight, \
        success, ejected and failing instances, panic and priority levels.

        Columns: SHARE of the picks in the interval, PICK/S, REQ/S (attempts the load made), ERR \
        (failed share of them), MEAN (their mean latency), EWMA (P2C peak-EWMA's latency estimate), \
        INFL (calls in flight, for balancers that count them), SUCC (the balancer's success rate: \
        P2C's average, else the ejection detector's interval), PRIO, ZONE, RAMP (slow start's \
        share), STATE.

        --no-load watches without sending requests: the set, ejections and health checks. --json \
        prints one JSON object per interval instead of the table (one line each); when standard \
        output is not a terminal, each interval is printed as plain lines. --explain samples one \
        pick in --explain-every and shows why it went where it went (P2C's two candidates and \
        their costs, the priority level or zone drawn, a hash's ring position). --frames N stops \
        after N intervals.
        """

    /// How rows are sorted.
    enum Sort: String, CaseIterable, ExpressibleByArgument {
        case share
        case id
        case latency
        case inflight
    }

    @Argument(help: "Where the instances come from (see below).")
    var source: String

    @Argument(help: "The HTTP path to request, for example /health (default /).")
    var path: String?

    @Option(help: "The balancer: \(BalancerName.helpList).")
    var balancer: BalancerName = .roundRobin

    @Flag(help: "Add passive outlier ejection to the balancer.")
    var ejection = false

    @Flag(help: "Send no requests: watch the set, ejections and health checks only.")
    var noLoad = false

    @Option(help: "How many requests in flight at once.")
    var concurrency = 4

    @Option(help: "Requests per second (open loop). Default: as fast as the concurrency allows.")
    var rate: Double?

    @Option(help: "The time limit of one request, in seconds.")
    var timeout = 5.0

    @Option(help: "Seconds between two refreshes.")
    var interval = 1.0

    @Option(help: "Stop after this many refreshes. Default: run until q or Ctrl-C (or, with --json or no terminal, forever).")
    var frames: Int?

    @Option(help: "How rows are sorted: share, id, latency or inflight.")
    var sort: Sort = .share

    @Flag(help: "Print one JSON object per interval instead of the table.")
    var json = false

    @Flag(help: "Explain sampled picks: why each went where it went.")
    var explain = false

    @Option(help: "With --explain: explain one pick in this many.")
    var explainEvery = 100

    @Option(help: "Active health checks: http (GET --health-check-path) or tcp (connect).")
    var healthCheck: ActiveHealthChecks.Kind?

    @Option(help: "With --health-check http: the path to GET. Default /health.")
    var healthCheckPath: String?

    @Option(help: "With --health-check: seconds between two checks of an instance. Default 5.")
    var healthCheckInterval: Double?

    func validate() throws {
        guard concurrency > 0 else { throw ValidationError("--concurrency must be at least 1") }
        guard timeout > 0, timeout <= 86_400 else { throw ValidationError("--timeout must be a positive number of seconds") }
        guard interval >= 0.05, interval <= 3600 else { throw ValidationError("--interval must be between 0.05 and 3600 seconds") }
        if let rate { guard rate > 0, rate.isFinite else { throw ValidationError("--rate must be positive") } }
        if let frames { guard frames > 0 else { throw ValidationError("--frames must be at least 1") } }
        guard explainEvery > 0 else { throw ValidationError("--explain-every must be at least 1") }
        if let path { guard path.hasPrefix("/") else { throw ValidationError("PATH must start with '/'") } }
        if noLoad {
            if path != nil { throw ValidationError("PATH is for the load; --no-load sends none") }
            if rate != nil { throw ValidationError("--rate is for the load; --no-load sends none") }
        }
        if healthCheck == .grpc { throw ValidationError("lbctl top checks with http or tcp; grpc is for lbctl bench --protocol grpc") }
        if healthCheck == nil {
            if healthCheckPath != nil { throw ValidationError("--health-check-path needs --health-check http") }
            if healthCheckInterval != nil { throw ValidationError("--health-check-interval needs --health-check") }
        }
        if let healthCheckInterval {
            guard healthCheckInterval > 0, healthCheckInterval <= 86_400 else {
                throw ValidationError("--health-check-interval must be a positive number of seconds, at most 86400")
            }
        }
    }

    func run() async throws {
        let spec = try SourceSpec(parsing: source)
        let publisher = try spec.makePublisher()
        var options = LoadRun.Options()
        options.balancer = balancer
        options.ejection = ejection
        options.concurrency = concurrency
        options.rate = rate
        options.timeout = .nanoseconds(Int64(timeout * 1e9))
        options.path = path ?? "/"
        options.requests = .max
        options.healthChecks = healthCheck.map { kind in
            var checks = ActiveHealthChecks(kind: kind)
            if let healthCheckPath { checks.path = healthCheckPath }
            if let healthCheckInterval { checks.configuration.interval = .nanoseconds(Int64(healthCheckInterval * 1e9)) }
            return checks
        }
        let mode: TopView.Mode = json ? .json : Output.isTerminal ? .table : .plain
        let label =
            balancer.rawValue + (ejection ? " + ejection" : "") + (healthCheck.map { " + \($0.rawValue) health checks" } ?? "")
            + (noLoad ? " (no load)" : "")
        var view = TopView(mode: mode, source: source, label: label, sort: sort, explain: explain)

        let client = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: HTTPEndpointFactory.clientConfiguration(concurrency: concurrency)
        )
        let stats = LoadRun.Stats()
        let cache = EndpointCache(publisher: publisher, factory: LoadRun.factory(client: client, options: options, stats: stats))
        let detector = options.detectorConfiguration.map { OutlierDetector(cache, configuration: $0) }
        let balanced = options.balancer.make(cache, ejection: detector, slowStart: nil, priority: options.priority)
        guard let observer = balanced.observe(explainingEvery: explain ? explainEvery : nil) else {
            throw LbctlError.run("the balancer \(balancer.rawValue) cannot be observed")
        }
        defer { observer.stop() }
        let send = LoadRun.sender(balanced, options: options)
        let runOptions = options
        let terminal = mode == .table ? Terminal() : nil
        defer { terminal?.restore() }
        if mode == .table { Output.write(TopView.enter) }
        defer { if mode == .table { Output.write(TopView.leave) } }

        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                if let service = publisher as? any Service { group.addTask { try await service.run() } }
                group.addTask { try await cache.run() }
                defer { group.cancelAll() }
                try await cache.waitUntilReady(timeout: .seconds(30))
                if cache.snapshot.isEmpty { throw LbctlError.run("the source has no instances") }
                if let checks = runOptions.healthChecks, let detector {
                    group.addTask {
                        try await checks.withChecker(detector) { checker in try await checker.run() }
                    }
                }
                if !noLoad {
                    group.addTask {
                        await LoadRun.drive(
                            stats: stats, options: runOptions, start: .now, interval: .seconds(3600), progress: { _, _ in }, request: send)
                    }
                }
                _ = observer.state() // The first interval starts now.
                var previous = stats.perInstance
                var shown = 0
                while frames.map({ shown < $0 }) ?? true {
                    // Sleep the interval in short steps, so that q is seen at once.
                    let due = ContinuousClock.now + .nanoseconds(Int64(interval * 1e9))
                    while ContinuousClock.now < due {
                        if terminal?.quitRequested == true { return }
                        try await Task.sleep(for: min(.milliseconds(50), due - .now))
                    }
                    let now = stats.perInstance
                    let state = observer.state()
                    let explanations = explain ? observer.explanations() : []
                    Output.write(view.frame(state, load: TopView.loadDelta(now, previous), explanations: explanations))
                    previous = now
                    shown += 1
                }
            }
        } catch let error as DiscoveryError {
            try? await client.shutdown()
            throw LbctlError.run("the source did not answer: \(error.message)")
        } catch {
            try? await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }
}
