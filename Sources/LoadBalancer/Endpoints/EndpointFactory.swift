/// What a factory makes for one instance: the endpoint, and optionally how to close it.
public struct ManagedEndpoint<Request: Sendable, Response: Sendable>: Sendable {
    /// The endpoint.
    public var endpoint: Endpoint<Request, Response>
    /// Called exactly once, after the instance has left the published set (or when the cache shuts down).
    public var close: (@Sendable () async throws -> Void)?

    /// Pairs `endpoint` with its `close`, if it needs one.
    public init(_ endpoint: Endpoint<Request, Response>, close: (@Sendable () async throws -> Void)? = nil) {
        self.endpoint = endpoint
        self.close = close
    }
}

/// Turns an ``Instance`` into a ``ManagedEndpoint``: the endpoint plus an optional async close.
///
/// The factory may throw (a connection could not be set up, the instance is unusable); the
/// ``EndpointCache`` logs the error, leaves the instance out of the endpoint set, and tries again
/// at the next registry update.
///
/// ```swift
/// let factory = EndpointFactory<HTTPRequest, HTTPResponse> { instance in
///     let pool = try await ConnectionPool(host: instance.host, port: instance.port)
///     return ManagedEndpoint(Endpoint(instance: instance) { try await pool.send($0) }, close: { await pool.close() })
/// }
/// ```
public struct EndpointFactory<Request: Sendable, Response: Sendable>: Sendable {
    @usableFromInline
    let make: @Sendable (Instance) async throws -> ManagedEndpoint<Request, Response>

    /// A factory from an async, throwing function.
    public init(_ make: @escaping @Sendable (Instance) async throws -> ManagedEndpoint<Request, Response>) {
        self.make = make
    }

    /// A factory whose endpoints need no closing: each call to an instance runs `call`.
    public static func calling(
        _ call: @escaping @Sendable (Instance, Request) async throws -> Response
    ) -> EndpointFactory {
        EndpointFactory { instance in
            ManagedEndpoint(Endpoint(instance: instance) { request in try await call(instance, request) })
        }
    }

    /// Makes the endpoint for `instance`.
    public func callAsFunction(_ instance: Instance) async throws -> ManagedEndpoint<Request, Response> {
        try await make(instance)
    }
}
