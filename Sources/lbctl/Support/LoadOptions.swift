import ArgumentParser
import AsyncHTTPClient
import LoadBalancerHTTP

/// What differs between the commands that take ``LoadOptions``.
protocol LoadOptionDefaults {
    /// `--concurrency`'s default.
    static var concurrency: Int { get }
    /// `--timeout`'s help.
    static var timeoutHelp: String { get }
}

/// `lbctl bench`'s load defaults: 8 requests in flight; the time limit covers the retries.
enum BenchLoadDefaults: LoadOptionDefaults {
    static let concurrency = 8
    static let timeoutHelp = "The time limit of one request, retries included, in seconds."
}

/// `lbctl top`'s load defaults: 4 requests in flight; no retries.
enum TopLoadDefaults: LoadOptionDefaults {
    static let concurrency = 4
    static let timeoutHelp = "The time limit of one request, in seconds."
}

/// The load options of `lbctl bench` and `lbctl top`: the balancer, and how many requests go at
/// once, how fast and for how long each; checked and turned into ``LoadRun/Options`` in one place.
struct LoadOptions<Defaults: LoadOptionDefaults>: ParsableArguments {
    @Option(help: "The balancer: \(BalancerName.helpList).")
    var balancer: BalancerName = .roundRobin

    @Flag(help: "Add passive outlier ejection to the balancer.")
    var ejection = false

    @Option(help: "How many requests in flight at once.")
    var concurrency = Defaults.concurrency

    @Option(help: "Requests per second (open loop). Default: as fast as the concurrency allows.")
    var rate: Double?

    @Option(help: ArgumentHelp(Defaults.timeoutHelp))
    var timeout = 5.0

    func validate() throws {
        guard concurrency > 0 else { throw ValidationError("--concurrency must be at least 1") }
        try OptionChecks.seconds(timeout, "--timeout")
        if let rate { guard rate > 0, rate.isFinite else { throw ValidationError("--rate must be positive") } }
    }

    /// The run's options: these, the HTTP `path` (default `/`) and the health checks, the rest at
    /// their defaults.
    func runOptions(path: String?, healthChecks: ActiveHealthChecks?) -> LoadRun.Options {
        var options = LoadRun.Options()
        options.balancer = balancer
        options.ejection = ejection
        options.concurrency = concurrency
        options.rate = rate
        options.timeout = .nanoseconds(Int64(timeout * 1e9))
        options.path = path ?? "/"
        options.healthChecks = healthChecks
        return options
    }

    /// The balancer's name, with ` + ejection` if asked for: the start of a run's label.
    var label: String { balancer.rawValue + (ejection ? " + ejection" : "") }

    /// The HTTP client of a run, with as many connections per instance as requests in flight
    /// (AsyncHTTPClient's default of 8 would queue the rest).
    func httpClient() -> HTTPClient {
        HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPEndpointFactory.clientConfiguration(concurrency: concurrency))
    }
}
