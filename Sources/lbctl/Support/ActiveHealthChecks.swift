import ArgumentParser
import AsyncHTTPClient
import LoadBalancer
import LoadBalancerGRPC
import LoadBalancerHTTP

/// `--health-check http|grpc|tcp` and its settings: a ``HealthChecker`` beside the balancer.
struct ActiveHealthChecks: Sendable {
    /// How each instance is checked.
    enum Kind: String, CaseIterable, ExpressibleByArgument, Sendable {
        /// `GET` a path; 2xx is healthy.
        case http
        /// `grpc.health.v1.Health/Check`; `SERVING` is healthy.
        case grpc
        /// A TCP connection opens.
        case tcp
    }

    var kind: Kind
    /// The path an HTTP check requests.
    var path = "/health"
    /// The service a gRPC check asks about (`""`: the whole server).
    var service = ""
    /// Interval, timeout and thresholds.
    var configuration = HealthChecker<ContinuousClock>.Configuration()

    /// The rules of the detector a health checker needs when `--ejection` is not given: passive
    /// ejection off (no consecutive-failures rule, no failure-rate rule), so that only the checks
    /// take instances out. The detector's panic rule stays: when fewer than half of the instances
    /// pass, every instance takes traffic.
    static let checksOnlyDetector = OutlierDetector.Configuration.defaults {
        $0.consecutiveFailures = 0
        $0.failureRate = nil
    }

    /// A short description for the report, such as `http GET /health every 5 s`.
    var summary: String {
        let what =
            switch kind {
            case .http: "http GET \(path)"
            case .grpc: "grpc Health/Check '\(service)'"
            case .tcp: "tcp connect"
            }
        return "\(what) every \(Self.seconds(configuration.interval)) s"
    }

    /// Creates the check and a checker on `detector`, runs `body` with the checker (which the
    /// caller runs, and stops by cancelling its task), then releases what the check used.
    func withChecker<T>(
        _ detector: OutlierDetector,
        _ body: (HealthChecker<ContinuousClock>) async throws -> T
    ) async throws -> T {
        var client: HTTPClient?
        let check: any HealthCheck
        switch kind {
        case .http:
            let httpClient = HTTPClient(eventLoopGroupProvider: .singleton)
            client = httpClient
            check = HTTPHealthCheck(client: httpClient, path: path)
        case .grpc:
            check = GRPCHealthCheck(service: service)
        case .tcp:
            check = TCPHealthCheck()
        }
        let result: Result<T, any Error>
        do {
            let checker = try HealthChecker(detector, check: check, configuration: configuration)
            result = .success(try await body(checker))
        } catch let error as HealthCheckerError {
            result = .failure(LbctlError.usage("\(error)", cause: error))
        } catch {
            result = .failure(error)
        }
        try? await client?.shutdown()
        return try result.get()
    }

    /// Waits until every instance of `ids` has had its first check (new instances take no traffic
    /// before it), or until the first checks are overdue: the load starts on a judged set. Returns
    /// the instances not passing when the load starts, and whether so few pass that the detector's
    /// panic rule has every instance take calls.
    static func waitForFirstChecks(
        _ checker: HealthChecker<ContinuousClock>, ids: some Sequence<String>, detector: OutlierDetector
    ) async -> Start {
        let ids = Set(ids)
        let configuration = checker.configuration
        // The first check of each instance comes within the initial jitter, and may take its
        // timeout; a loaded machine can add seconds to the first connections (gRPC's most), so the
        // wait allows a few more rounds before the load starts on what is known.
        let rounds = Double(max(configuration.healthyThreshold, configuration.unhealthyThreshold) + 2)
        let deadline =
            ContinuousClock.now + min(configuration.initialJitter, configuration.interval)
            + (configuration.interval + configuration.timeout) * rounds + .seconds(5)
        while ContinuousClock.now < deadline, !Task.isCancelled {
            let statuses = checker.statuses
            if ids.allSatisfy({ statuses[$0].map { $0.health != .unchecked } ?? false }) { break }
            try? await Task.sleep(for: .milliseconds(10))
        }
        let statuses = checker.statuses
        let notPassing = ids.filter { statuses[$0]?.health != .healthy }.sorted()
        return Start(notPassing: notPassing, panic: !ids.isEmpty && detector.panics(healthy: ids.count - notPassing.count, of: ids.count))
    }

    /// The checks' verdict when the load starts (see ``waitForFirstChecks(_:ids:detector:)``).
    struct Start: Sendable {
        /// Instances whose check was not passing (failing, or not checked yet).
        var notPassing: [String]
        /// Whether fewer than the detector's panic threshold passed: then every instance took
        /// calls until enough passed.
        var panic: Bool
    }

    /// What the checks did during a run, for the report.
    struct Outcome: Sendable {
        var summary: String
        /// The checks' verdict when the load started.
        var start: Start
        /// Instances whose check was failing at the end of the run.
        var failingAtEnd: [String]
        /// Times an instance was taken out by failing checks, and brought back by passing ones.
        var failingEvents: Int
        var passingEvents: Int
    }

    /// The outcome so far (call before stopping the checker: it forgets every state when it stops).
    func outcome(_ checker: HealthChecker<ContinuousClock>, _ detector: OutlierDetector, start: Start) -> Outcome {
        let events = detector.events
        return Outcome(
            summary: summary,
            start: start,
            failingAtEnd: checker.statuses.filter { $0.value.health != .healthy }.map(\.key).sorted(),
            failingEvents: events.filter { $0.kind == .failingHealthCheck }.count,
            passingEvents: events.filter { $0.kind == .passingHealthCheck }.count
        )
    }

    static func seconds(_ duration: Duration) -> String {
        let seconds = duration.secondsValue
        return seconds == seconds.rounded() ? "\(Int(seconds))" : "\(seconds)"
    }
}
