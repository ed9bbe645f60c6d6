/// One way of asking an instance whether it is healthy: an HTTP `GET`, a gRPC
/// `grpc.health.v1.Health/Check`, a TCP connect, or one of your own.
///
/// A ``HealthChecker`` calls ``check(_:timeout:)`` for every instance at its interval. The check
/// returns when the instance is healthy and throws (any error, best a ``HealthCheckFailure`` that
/// says why) when it is not. It should give up by itself after `timeout`; the checker also stops
/// waiting then and counts the check as failed.
///
/// The library's checks: `HTTPHealthCheck` and `TCPHealthCheck` (LoadBalancerHTTP),
/// `GRPCHealthCheck` (LoadBalancerGRPC).
public protocol HealthCheck: Sendable {
    /// Checks `instance` once: returns if it is healthy, throws if not.
    ///
    /// - Parameters:
    ///   - instance: The instance to check.
    ///   - timeout: How long the check may take.
    func check(_ instance: Instance, timeout: Duration) async throws

    /// `instance` left the set, or the checker stopped: release what the check holds for it (a
    /// connection, a client). Default: nothing.
    func forget(_ instance: Instance) async
}

extension HealthCheck {
    /// Does nothing.
    public func forget(_ instance: Instance) async {}
}

/// Why an instance failed a health check.
public struct HealthCheckFailure: Error, Sendable, Hashable, CustomStringConvertible {
    /// What the check saw, for logs and ``HealthChecker/Status/lastFailure``.
    public var reason: String

    /// Creates a failure.
    public init(_ reason: String) {
        self.reason = reason
    }

    public var description: String { reason }
}

/// A ``HealthChecker`` that cannot start.
public enum HealthCheckerError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A configuration value is out of range; the string says which and why.
    case invalidConfiguration(String)
    /// Another health checker already runs on the same ``OutlierDetector``.
    case detectorHasChecker

    public var description: String {
        switch self {
        case .invalidConfiguration(let reason): "invalid health-check configuration: \(reason)"
        case .detectorHasChecker: "another health checker already runs on this outlier detector"
        }
    }
}
