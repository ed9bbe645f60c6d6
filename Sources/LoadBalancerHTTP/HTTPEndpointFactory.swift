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
    /// What kind of failure it is. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable { case failureStatus }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// The status is one of ``HTTPEndpointFactory/Configuration/failureStatuses``.
        public static let failureStatus = Code(.failureStatus)

        /// The code's name, such as `failureStatus`.
        public var description: String { String(describing: wrapped) }
    }

    /// What kind of failure it is.
    public var code: Code
    /// The status received.
    public var status: HTTPResponseStatus
    /// The instance that answered.
    public var instance: Instance
    /// The underlying error, if any.
    public var cause: (any Error)?

    /// Creates an error.
    public init(code: Code = .failureStatus, status: HTTPResponseStatus, instance: Instance, cause: (any Error)? = nil) {
        self.code = code
        self.status = status
        self.instance = instance
        self.cause = cause
    }

    /// `HTTP STATUS from INSTANCE`.
    public var message: String { "HTTP \(status.code) from \(instance.id)" }

    /// The message.
    public var description: String { message }
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
    ///
    /// - Parameters:
    ///   - connectTimeout: The time a connection may take to establish. Default 1 s.
    ///   - concurrency: The most calls you expect in flight at once: each instance may get that
    ///     many HTTP/1.1 connections (AsyncHTTPClient's default is 8, which queues calls beyond
    ///     it). Default 8.
    public static func clientConfiguration(connectTimeout: Duration = .seconds(1), concurrency: Int = 8) -> HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = max(1, concurrency)
        configuration.timeout.connect = TimeAmount(connectTimeout)
        return configuration
    }

    /// A factory of endpoints over `client`.
    ///
    /// The endpoints enforce deadlines themselves (`Endpoint.enforcesDeadline`): a
    /// call ends at `CallDeadline.current` when one is set (as `Retry` sets it) or
    /// after ``Configuration/timeout``, whichever comes first, through AsyncHTTPClient's own
    /// request deadline.
    public static func make(
        client: HTTPClient,
        configuration: Configuration = Configuration()
    ) -> EndpointFactory<HTTPCall, HTTPReply> {
        EndpointFactory { instance in
            ManagedEndpoint(
                Endpoint(instance: instance, enforcesDeadline: true) { call in
                    try await send(call, to: instance, client: client, configuration: configuration)
                }
            )
        }
    }

    /// Sends `call` to `instance`, ending it at `CallDeadline.current` (if set) or
    /// after ``Configuration/timeout``, whichever comes first.
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
        var limit = configuration.timeout
        if let deadline = CallDeadline.current {
            limit = min(limit, ContinuousClock.now.duration(to: deadline))
        }
        let response = try await client.execute(request, timeout: TimeAmount(max(limit, .zero)))
        let body = try await response.body.collect(upTo: configuration.maxBodySize)
        if let failures = configuration.failureStatuses, failures.contains(Int(response.status.code)) {
            throw HTTPStatusError(status: response.status, instance: instance)
        }
        return HTTPReply(status: response.status, headers: response.headers, body: body)
    }
}
