import ArgumentParser
import LoadBalancer

/// What differs between the commands that take ``HealthCheckOptions``: whether they check with gRPC.
protocol HealthCheckKinds {
    /// `--health-check`'s help.
    static var help: String { get }
    /// Why `--health-check grpc` (and `--health-check-service`) is refused; `nil` where it is taken.
    static var grpcRefusal: String? { get }
}

extension HealthCheckKinds {
    /// Whether `--health-check grpc` (and `--health-check-service`) is taken.
    static var grpc: Bool { grpcRefusal == nil }
}

/// `lbctl bench`'s checks: http, grpc or tcp.
enum BenchHealthChecks: HealthCheckKinds {
    static let help = "Active health checks: http (GET --health-check-path), grpc (Health/Check) or tcp (connect)."
    static let grpcRefusal: String? = nil
}

/// `lbctl top`'s checks: http or tcp.
enum TopHealthChecks: HealthCheckKinds {
    static let help = "Active health checks: http (GET --health-check-path) or tcp (connect)."
    static let grpcRefusal: String? = "lbctl top checks with http or tcp; grpc health checks are lbctl bench's"
}

/// The active health check options of `lbctl bench` and `lbctl top` (`--health-check` and its
/// settings), checked and turned into ``ActiveHealthChecks`` in one place.
struct HealthCheckOptions<Kinds: HealthCheckKinds>: ParsableArguments {
    @Option(help: ArgumentHelp(Kinds.help))
    var healthCheck: ActiveHealthChecks.Kind?

    @Option(help: "With --health-check http: the path to GET. Default /health.")
    var healthCheckPath: String?

    @Option(
        help: ArgumentHelp(
            "With --health-check grpc: the service asked about. Default \"\" (the whole server).",
            visibility: Kinds.grpc ? .default : .private))
    var healthCheckService: String?

    @Option(help: "With --health-check: seconds between two checks of an instance. Default 5.")
    var healthCheckInterval: Double?

    @Option(help: "With --health-check: seconds a check may take. Default 1.")
    var healthCheckTimeout: Double?

    @Option(help: "With --health-check: passes in a row that bring an instance back. Default 2.")
    var healthyThreshold: Int?

    @Option(help: "With --health-check: failures in a row that take an instance out. Default 2.")
    var unhealthyThreshold: Int?

    /// The health checks of the options, if `--health-check` is given.
    var healthChecks: ActiveHealthChecks? {
        healthCheck.map { kind in
            var checks = ActiveHealthChecks(kind: kind)
            if let healthCheckPath { checks.path = healthCheckPath }
            if let healthCheckService { checks.service = healthCheckService }
            if let healthCheckInterval { checks.configuration.interval = .nanoseconds(Int64(healthCheckInterval * 1e9)) }
            if let healthCheckTimeout { checks.configuration.timeout = .nanoseconds(Int64(healthCheckTimeout * 1e9)) }
            if let healthyThreshold { checks.configuration.healthyThreshold = healthyThreshold }
            if let unhealthyThreshold { checks.configuration.unhealthyThreshold = unhealthyThreshold }
            return checks
        }
    }

    /// What the checks add to a run's label, such as ` + http health checks`.
    var label: String { healthCheck.map { " + \($0.rawValue) health checks" } ?? "" }

    func validate() throws {
        if let refusal = Kinds.grpcRefusal, healthCheck == .grpc || healthCheckService != nil { throw ValidationError(refusal) }
        if healthCheck == nil {
            try OptionChecks.needs(healthCheckPath, "--health-check-path", "--health-check http")
            try OptionChecks.needs(healthCheckService, "--health-check-service", "--health-check grpc")
            try OptionChecks.needs(healthCheckInterval, "--health-check-interval", "--health-check")
            try OptionChecks.needs(healthCheckTimeout, "--health-check-timeout", "--health-check")
            try OptionChecks.needs(healthyThreshold, "--healthy-threshold", "--health-check")
            try OptionChecks.needs(unhealthyThreshold, "--unhealthy-threshold", "--health-check")
        }
        if let healthCheckPath {
            guard healthCheck == .http else { throw ValidationError("--health-check-path is for --health-check http") }
            guard healthCheckPath.hasPrefix("/") else { throw ValidationError("--health-check-path must start with '/'") }
        }
        if healthCheckService != nil, healthCheck != .grpc {
            throw ValidationError("--health-check-service is for --health-check grpc")
        }
        try OptionChecks.seconds(healthCheckInterval, "--health-check-interval")
        try OptionChecks.seconds(healthCheckTimeout, "--health-check-timeout")
        if let healthyThreshold { guard healthyThreshold >= 1 else { throw ValidationError("--healthy-threshold must be at least 1") } }
        if let unhealthyThreshold {
            guard unhealthyThreshold >= 1 else { throw ValidationError("--unhealthy-threshold must be at least 1") }
        }
        if let checks = healthChecks {
            do {
                try checks.configuration.validate()
            } catch {
                throw ValidationError("\(error)")
            }
        }
    }
}
