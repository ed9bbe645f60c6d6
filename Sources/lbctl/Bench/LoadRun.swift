import AsyncHTTPClient
import Histogram
import LoadBalancer
import LoadBalancerHTTP
import NIOHTTP1
import ServiceLifecycle
import Synchronization

/// Drives HTTP load through a balancer: the engine of `lbctl bench` and `lbctl demo`.
struct LoadRun {
    struct Options {
        var balancer: BalancerName = .roundRobin
        var ejection = false
        /// The ejection rules when `ejection` is on.
        var ejectionConfiguration = OutlierDetector.Configuration()
        var requests = 1000
        var concurrency = 8
        /// Requests per second (open loop), or as fast as the workers go.
        var rate: Double?
        var retries = 0
        var timeout: Duration = .seconds(5)
        var path = "/"
        /// Slow start of instances new to the set (or back from ejection or a failing check).
        var slowStart: SlowStart?
        /// The priority balancer's failover settings.
        var priority = BalancerName.PriorityOptions()
        /// Active health checks, if any.
        var healthChecks: ActiveHealthChecks?
        /// Where the set changes and every call are written (`--record`), if anywhere.
        var recorder: Recorder?

        /// The rules of the outlier detector the balancer honours: `ejectionConfiguration` with
        /// `ejection`; with health checks alone, passive ejection off; else none.
        var detectorConfiguration: OutlierDetector.Configuration? {
            if ejection { return ejectionConfiguration }
            if healthChecks != nil { return ActiveHealthChecks.checksOnlyDetector }
            return nil
        }
    }

    /// Counters shared by the workers.
    final class Stats: Sendable {
        struct PerInstance {
            var attempts = 0
            var failures = 0
            /// The attempts' latencies added up (for `lbctl top`'s mean per interval).
            var latency: Duration = .zero
        }
        struct State {
            var perInstance: [String: PerInstance] = [:]
            var histogram = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
            var errors: [String: Int] = [:]
            var succeeded = 0
            var failed = 0
            /// The start of the run.
            var start: ContinuousClock.Instant
            /// Per second of the run (index: whole seconds since `start`), attempts per instance.
            var seconds: [[String: Int]] = []
            /// The same per tenth of a second (for `--chart`).
            var tenths: [[String: Int]] = []
        }
        let state: Mutex<State>
        /// Requests handed to workers so far.
        let claimed = Atomic<Int>(0)
        init(start: ContinuousClock.Instant = .now) {
            state = Mutex(State(start: start))
        }

        /// The start of the run.
        var start: ContinuousClock.Instant { state.withLock { $0.start } }

        /// The run starts now (after a wait before the load): its time and seconds count from here.
        func restart() {
            state.withLock {
                $0.start = .now
                $0.seconds = []
                $0.tenths = []
            }
        }

        func attempt(_ id: String, failed: Bool, latency: Duration = .zero) {
            let now = ContinuousClock.now
            state.withLock {
                $0.perInstance[id, default: PerInstance()].attempts += 1
                $0.perInstance[id, default: PerInstance()].latency += latency
                if failed { $0.perInstance[id, default: PerInstance()].failures += 1 }
                let second = Swift.max(0, Int((now - $0.start).secondsValue))
                while $0.seconds.count <= second { $0.seconds.append([:]) }
                $0.seconds[second][id, default: 0] += 1
                let tenth = Swift.max(0, Int((now - $0.start).secondsValue * 10))
                while $0.tenths.count <= tenth { $0.tenths.append([:]) }
                $0.tenths[tenth][id, default: 0] += 1
            }
        }

        func finished(latency: Duration?, error: String?) {
            state.withLock {
                if let latency {
                    $0.succeeded += 1
                    _ = $0.histogram.record(UInt64(max(1, latency.wholeNanoseconds / 1_000)))
                } else {
                    $0.failed += 1
                    $0.errors[error ?? "error", default: 0] += 1
                }
            }
        }

        var done: Int { state.withLock { $0.succeeded + $0.failed } }

        /// Attempts, failures and latency per instance so far.
        var perInstance: [String: PerInstance] { state.withLock { $0.perInstance } }
    }

    struct Report {
        var requests: Int
        var succeeded: Int
        var failed: Int
        var attempts: Int
        var wall: Duration
        /// Attempts and failed attempts per instance id.
        var perInstance: [(id: String, attempts: Int, failures: Int)]
        var errors: [(kind: String, count: Int)]
        var histogram: Histogram<UInt64>
        /// Attempts per instance in each second of the run (the last may be partial).
        var perSecond: [[String: Int]] = []
        /// Attempts per instance in each tenth of a second of the run.
        var perTenth: [[String: Int]] = []
        /// What the active health checks did, when there were any.
        var healthChecks: ActiveHealthChecks.Outcome?

        var retries: Int { attempts - requests }

        /// A latency percentile in nanoseconds (the histogram holds microseconds).
        func percentile(_ p: Double) -> Double {
            histogram.totalCount == 0 ? 0 : Double(histogram.valueAtPercentile(p)) * 1000
        }

        var max: Double { histogram.totalCount == 0 ? 0 : Double(histogram.max) * 1000 }
    }

    /// Runs the load and returns the report. `progress` is called about every `interval` with the
    /// number of finished requests.
    static func run(
        publisher: any InstancePublisher,
        client: HTTPClient,
        options: Options,
        interval: Duration = .milliseconds(200),
        progress: @escaping @Sendable (_ done: Int, _ elapsed: Duration) -> Void = { _, _ in }
    ) async throws -> Report {
        let stats = Stats()
        let cache = EndpointCache(publisher: publisher, factory: factory(client: client, options: options, stats: stats))
        let detector = options.detectorConfiguration.map { OutlierDetector(cache, configuration: $0) }
        let balancer = options.balancer.make(cache, ejection: detector, slowStart: options.slowStart, priority: options.priority)
        let send = sender(balancer, options: options)
        let total = options.requests
        let outcome = try await withThrowingTaskGroup(of: Void.self, returning: ActiveHealthChecks.Outcome?.self) { group in
            if let service = publisher as? any Service { group.addTask { try await service.run() } }
            if let recorder = options.recorder {
                // The sets the source publishes, as the cache sees them.
                group.addTask {
                    for await update in publisher.updates() { recorder.set(update.instances) }
                }
            }
            group.addTask { try await cache.run() }
            await cache.waitUntilReady()
            if cache.snapshot.isEmpty {
                group.cancelAll()
                throw LbctlError.run("the source has no instances")
            }
            defer { group.cancelAll() }
            guard let checks = options.healthChecks, let detector else {
                stats.restart()
                options.recorder?.begin(at: stats.start, set: cache.snapshot.instances)
                await drive(stats: stats, options: options, start: stats.start, interval: interval, progress: progress, request: send)
                return nil
            }
            return try await checks.withChecker(detector) { checker in
                try await withThrowingTaskGroup(of: Void.self, returning: ActiveHealthChecks.Outcome.self) { checking in
                    checking.addTask { try await checker.run() }
                    let start = await ActiveHealthChecks.waitForFirstChecks(
                        checker, ids: cache.snapshot.instances.map(\.id), detector: detector)
                    stats.restart()
                    options.recorder?.begin(at: stats.start, set: cache.snapshot.instances)
                    await drive(stats: stats, options: options, start: stats.start, interval: interval, progress: progress, request: send)
                    let outcome = checks.outcome(checker, detector, start: start)
                    checking.cancelAll()
                    try await checking.waitForAll()
                    return outcome
                }
            }
        }
        var report = stats.report(requests: total, wall: ContinuousClock.now - stats.start)
        report.healthChecks = outcome
        return report
    }

    /// The endpoint factory of a run: HTTP endpoints whose every attempt is counted in `stats`
    /// (and recorded by `options.recorder`, if any).
    static func factory(client: HTTPClient, options: Options, stats: Stats) -> EndpointFactory<HTTPCall, HTTPReply> {
        let configuration = {
            var configuration = HTTPEndpointFactory.Configuration()
            configuration.timeout = options.timeout
            return configuration
        }()
        return EndpointFactory<HTTPCall, HTTPReply> { instance in
            ManagedEndpoint(
                Endpoint(instance: instance, enforcesDeadline: true) { call in
                    let began = ContinuousClock.now
                    do {
                        let reply = try await HTTPEndpointFactory.send(call, to: instance, client: client, configuration: configuration)
                        stats.attempt(instance.id, failed: false, latency: .now - began)
                        options.recorder?.call(instance.id, began: began, ended: .now, outcome: .success)
                        return reply
                    } catch {
                        let cancelled = error is CancellationError
                        stats.attempt(instance.id, failed: !cancelled, latency: .now - began)
                        options.recorder?.call(
                            instance.id, began: began, ended: .now, outcome: cancelled ? .cancelled : .failure,
                            error: cancelled ? nil : Self.kind(of: error))
                        throw error
                    }
                }
            )
        }
    }

    /// One request of a run through `balancer` (with `options.retries` retries): `nil` when it
    /// succeeded, else the kind of its failure.
    static func sender(_ balancer: AnyBalancer<HTTPCall, HTTPReply>, options: Options) -> @Sendable () async -> String? {
        // Without retries a request is one balanced call, ended by the factory's own timeout.
        let retry = options.retries > 0 ? Retry(balancer, maxAttempts: options.retries + 1, timeout: options.timeout) : nil
        let call = HTTPCall(path: options.path)
        return {
            do {
                if let retry {
                    _ = try await retry(call)
                } else {
                    _ = try await balancer.call(call)
                }
                return nil
            } catch {
                return Self.kind(of: error)
            }
        }
    }

    /// Sends `options.requests` requests with `options.concurrency` workers (paced by
    /// `options.rate` from `start`), recording each in `stats`, and calls `progress` about every
    /// `interval`. `request` makes one request and returns `nil` when it succeeded, else the kind
    /// of its failure.
    static func drive(
        stats: Stats,
        options: Options,
        start: ContinuousClock.Instant,
        interval: Duration,
        progress: @escaping @Sendable (_ done: Int, _ elapsed: Duration) -> Void,
        request: @escaping @Sendable () async -> String?
    ) async {
        let total = options.requests
        await withTaskGroup(of: Void.self) { reporting in
            // The progress reporter runs until the workers are done, then is cancelled.
            reporting.addTask {
                while !Task.isCancelled {
                    do { try await Task.sleep(for: interval) } catch { return }
                    progress(stats.done, .now - start)
                }
            }
            await withTaskGroup(of: Void.self) { workers in
                for _ in 0..<max(1, options.concurrency) {
                    workers.addTask {
                        // A run stopped from outside (lbctl top) ends at its cancellation.
                        while !Task.isCancelled {
                            let index = stats.claimed.add(1, ordering: .relaxed).oldValue
                            if index >= total { return }
                            if let rate = options.rate, rate > 0 {
                                let due = start + .nanoseconds(Int64(Double(index) / rate * 1e9))
                                try? await Task.sleep(until: due, clock: .continuous)
                            }
                            let began = ContinuousClock.now
                            if let failure = await request() {
                                stats.finished(latency: nil, error: failure)
                            } else {
                                stats.finished(latency: .now - began, error: nil)
                            }
                        }
                    }
                }
            }
            reporting.cancelAll()
        }
        progress(stats.done, .now - start)
    }
}

extension LoadRun.Stats {
    /// The report of a run of `requests` requests that took `wall`.
    func report(requests: Int, wall: Duration) -> LoadRun.Report {
        state.withLock { state in
            LoadRun.Report(
                requests: requests,
                succeeded: state.succeeded,
                failed: state.failed,
                attempts: state.perInstance.values.map(\.attempts).reduce(0, +),
                wall: wall,
                perInstance: state.perInstance.map { ($0.key, $0.value.attempts, $0.value.failures) }.sorted { $0.id < $1.id },
                errors: state.errors.map { ($0.key, $0.value) }.sorted { $0.count > $1.count },
                histogram: state.histogram,
                perSecond: state.seconds,
                perTenth: state.tenths
            )
        }
    }
}

extension LoadRun {
    /// A short name for the kind of an error, for the "errors by kind" table.
    static func kind(of error: any Error) -> String {
        switch error {
        case let error as RetryError:
            if error.reason == .timedOut { return "timeout" }
            return error.lastError.map(kind(of:)) ?? "error"
        case let error as HTTPStatusError:
            return "HTTP \(error.status.code)"
        case let error as LoadBalancerError:
            return error.code == .noEndpoints ? "no endpoints" : "\(error.code)"
        case let error as HTTPClientError:
            return error.shortDescription
        case is CancellationError:
            return "cancelled"
        default:
            // The error's own words, shortened (for example "IOError: connection reset by peer").
            let text = String(describing: error).split(separator: "\n").first.map(String.init) ?? "\(type(of: error))"
            return text.count > 60 ? String(text.prefix(57)) + "..." : text
        }
    }
}
