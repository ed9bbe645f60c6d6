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

        Active health checks (--health-check http|tcp) take the options lbctl bench takes: \
        --health-check-path (http, default /health), --health-check-interval (default 5 seconds), \
        --health-check-timeout (default 1), --unhealthy-threshold and --healthy-threshold (default \
        2 each). grpc checks are lbctl bench's. Without \
        --ejection only the checks take instances out.
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

    @OptionGroup var load: LoadOptions<TopLoadDefaults>

    @Flag(help: "Send no requests: watch the set, ejections and health checks only.")
    var noLoad = false

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

    @OptionGroup var health: HealthCheckOptions<TopHealthChecks>

    func validate() throws {
        guard interval >= 0.05, interval <= 3600 else { throw ValidationError("--interval must be between 0.05 and 3600 seconds") }
        if let frames { guard frames > 0 else { throw ValidationError("--frames must be at least 1") } }
        guard explainEvery > 0 else { throw ValidationError("--explain-every must be at least 1") }
        if let path { guard path.hasPrefix("/") else { throw ValidationError("PATH must start with '/'") } }
        if noLoad {
            if path != nil { throw ValidationError("PATH is for the load; --no-load sends none") }
            if load.rate != nil { throw ValidationError("--rate is for the load; --no-load sends none") }
        }
    }

    func run() async throws {
        let spec = try SourceSpec(parsing: source)
        let publisher = try spec.makePublisher()
        var options = load.runOptions(path: path, healthChecks: health.healthChecks)
        options.requests = .max
        let mode: TopView.Mode = json ? .json : Output.isTerminal ? .table : .plain
        let label = load.label + health.label + (noLoad ? " (no load)" : "")
        var view = TopView(mode: mode, source: source, label: label, sort: sort, explain: explain)

        let client = load.httpClient()
        let stats = LoadRun.Stats()
        let cache = EndpointCache(publisher: publisher, factory: LoadRun.factory(client: client, options: options, stats: stats))
        let detector = options.detectorConfiguration.map { OutlierDetector(cache, configuration: $0) }
        let balanced = options.balancer.make(cache, ejection: detector, slowStart: nil, priority: options.priority)
        guard let observer = balanced.observe(explainingEvery: explain ? explainEvery : nil) else {
            throw LbctlError.run("the balancer \(load.balancer.rawValue) cannot be observed")
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
