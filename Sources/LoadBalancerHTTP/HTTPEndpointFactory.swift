import AsyncHTTPClient
import LoadBalancer
import NIOCore
import NIOHTTP1

/// A request for a balanced HTTP service: what to send, not where (the balancer picks the instance).
public struct HTTPCall: Sendable {
    /// The method. Default GET.
    public var method: HTTPMethod
    /// The path and query, starting with `/`.
    public var path: String
    /// Request headers.
    public var headers: HTTPHeaders
    /// The body, if any.
    public var body: [UInt8]?

    /// Creates a call. A `path` that does not start with `/` gets one.
    public init(method: HTTPMethod = .GET, path: String, headers: HTTPHeaders = [:], body: [UInt8]? = nil) {
        self.method = method
        self.path = path.hasPrefix("/") ? path : "/" + path
        self.headers = headers
        self.body = body
    }
}

/// The answer of one instance.
public struct HTTPReply: Sendable {
    /// The status.
    public var status: HTTPResponseStatus
    /// Response headers.
    public var headers: HTTPHeaders
    /// The body.
    public var body: ByteBuffer
}

/// An instance answered with a status the factory is configured to treat as a failure (5xx by default).
///
/// Thrown so that the balancer, `Retry` and outlier ejection see the call as failed.
public struct HTTPStatusError: Error, Sendable, CustomStringConvertible {
    /// The status received.
    public var status: HTTPResponseStatus
    /// The instance that answered.
    public var instance: Instance

    /// `HTTP STATUS from INSTANCE`.
    public var description: String { "HTTP \(status.code) from \(instance.id)" }
}

/// Makes endpoints that send ``HTTPCall``s to an instance's host and port over one shared
/// AsyncHTTPClient `HTTPClient`.
///
/// Connection errors and timeouts are thrown as AsyncHTTPClient reports them; responses with a
/// status in ``Configuration/failureStatuses`` (5xx by default) are thrown as ``HTTPStatusError``,
/// so every kind of failure reaches the balancer through its scoped call. The client is not owned:
/// shut it down after the cache that uses the factory has stopped.
///
/// ```swift
/// let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPEndpointFactory.clientConfiguration())
/// let cache = EndpointCache(publisher: publisher, factory: HTTPEndpointFactory.make(client: client))
/// let reply = try await RoundRobinBalancer(cache).call(HTTPCall(path: "/users/42"))
/// ```
public enum HTTPEndpointFactory {
    /// How calls are made.
    public struct Configuration: Sendable {
        /// `http` or `https`. Default `http`.
        public var scheme: String = "http"
        /// The time one call may take, connection included. Default 10 s.
        public var timeout: Duration = .seconds(10)
        /// Statuses reported as failures. Default: 500–599.
        public var failureStatuses: ClosedRange<Int>? = 500...599
        /// The largest response body read, in bytes. Default 4 MiB.
        public var maxBodySize: Int = 4 * 1024 * 1024

        /// The defaults.
        public init() {}
    }

    /// An `HTTPClient` configuration suited to balanced calls: a connection that cannot be
    /// established fails its request at once (instead of AsyncHTTPClient's default of retrying the
    /// connection until the request's deadline), so the balancer and `Retry` can move
    /// the call to another instance, and the connect timeout is `connectTimeout`.
    public static func clientConfiguration(connectTimeout: Duration = .seconds(1)) -> HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        let (seconds, attoseconds) = connectTimeout.components
        configuration.timeout.connect = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        return configuration
    }

    /// A factory of endpoints over `client`.
    public static func make(
        client: HTTPClient,
        configuration: Configuration = Configuration()
    ) -> EndpointFactory<HTTPCall, HTTPReply> {
        EndpointFactory.calling { instance, call in
            try await send(call, to: instance, client: client, configuration: configuration)
        }
    }

    /// Sends `call` to `instance`.
    public static func send(
        _ call: HTTPCall,
        to instance: Instance,
        client: HTTPClient,
        configuration: Configuration = Configuration()
    ) async throws -> HTTPReply {
        var request = HTTPClientRequest(url: "\(configuration.scheme)://\(instance.hostPort)\(call.path)")
        request.method = call.method
        request.headers = call.headers
        if let body = call.body { request.body = .bytes(body) }
        let (seconds, attoseconds) = configuration.timeout.components
        let timeout = TimeAmount.nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        let response = try await client.execute(request, timeout: timeout)
        let body = try await response.body.collect(upTo: configuration.maxBodySize)
        if let failures = configuration.failureStatuses, failures.contains(Int(response.status.code)) {
            throw HTTPStatusError(status: response.status, instance: instance)
        }
        return HTTPReply(status: response.status, headers: response.headers, body: body)
    }
}
