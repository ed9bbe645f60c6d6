import AsyncHTTPClient
import LoadBalancer
import NIOCore
import NIOHTTP1
import NIOPosix

/// An HTTP health check: `GET` a path of the instance; a status in ``healthyStatuses`` (2xx by
/// default) is healthy, any other status, a connection error or no answer within the timeout is not.
///
/// It goes through an AsyncHTTPClient `HTTPClient` you own (the one the endpoints use, or one of
/// its own): connections are kept and reused between checks. Shut the client down after the
/// `HealthChecker` has stopped.
///
/// ```swift
/// let check = HTTPHealthCheck(client: client, path: "/health")
/// let checker = try HealthChecker(detector, check: check)
/// ```
public struct HTTPHealthCheck: HealthCheck {
    /// The path (and query) to `GET`, starting with `/`.
    public var path: String
    /// `http` or `https`.
    public var scheme: String
    /// Headers sent with every check (a `Host`, an authorization).
    public var headers: HTTPHeaders
    /// The statuses that mean healthy. Default 200...299.
    public var healthyStatuses: ClosedRange<Int>
    /// The largest body read from a check's answer, in bytes; a larger one fails the check.
    /// Default 64 KiB.
    public var maxBodySize: Int
    private let client: HTTPClient

    /// Creates an HTTP check.
    ///
    /// - Parameters:
    ///   - client: The client that sends the checks (not owned).
    ///   - path: The path to `GET`; one that does not start with `/` gets one. Default `/health`.
    ///   - scheme: `http` or `https`. Default `http`.
    ///   - headers: Headers sent with every check. Default none.
    ///   - healthyStatuses: The statuses that mean healthy. Default 200...299.
    ///   - maxBodySize: The largest body read, in bytes. Default 64 KiB.
    public init(
        client: HTTPClient,
        path: String = "/health",
        scheme: String = "http",
        headers: HTTPHeaders = [:],
        healthyStatuses: ClosedRange<Int> = 200...299,
        maxBodySize: Int = 64 * 1024
    ) {
        self.client = client
        self.path = path.hasPrefix("/") ? path : "/" + path
        self.scheme = scheme
        self.headers = headers
        self.healthyStatuses = healthyStatuses
        self.maxBodySize = maxBodySize
    }

    /// `GET`s ``path`` of `instance`; throws `HealthCheckFailure` for a status that is not healthy.
    public func check(_ instance: Instance, timeout: Duration) async throws {
        var request = HTTPClientRequest(url: "\(scheme)://\(instance.hostPort)\(path)")
        request.headers = headers
        let response = try await client.execute(request, timeout: TimeAmount(timeout))
        // Read the body so that the connection can serve the next check.
        _ = try await response.body.collect(upTo: maxBodySize)
        guard healthyStatuses.contains(Int(response.status.code)) else {
            throw HealthCheckFailure("HTTP \(response.status.code) from GET \(path)")
        }
    }
}

/// A TCP health check: an instance is healthy when a TCP connection to its host and port opens
/// within the timeout; the connection is closed at once.
///
/// For services with no health endpoint. It sees a dead process or host, not a live process that
/// cannot serve: prefer ``HTTPHealthCheck`` or gRPC's health service where there is one.
public struct TCPHealthCheck: HealthCheck {
    private let group: any EventLoopGroup

    /// Creates a TCP check whose connections run on `eventLoopGroup`.
    ///
    /// - Parameter eventLoopGroup: Default: SwiftNIO's shared singleton group.
    public init(eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.group = eventLoopGroup
    }

    /// Opens a connection to `instance` and closes it; throws when it cannot open within `timeout`.
    public func check(_ instance: Instance, timeout: Duration) async throws {
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(TimeAmount(timeout))
            .connect(host: instance.host, port: instance.port)
            .get()
        try? await channel.close()
    }
}
