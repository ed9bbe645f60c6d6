/// The unit a balancer hands out: an async function from a request to a response that knows the
/// ``Instance`` it talks to.
///
/// An endpoint is a reference: the ``EndpointCache`` keeps *the same* endpoint object for an instance
/// id across registry updates, so whatever the endpoint holds (a connection pool, a client) lives as
/// long as the instance stays registered.
///
/// ```swift
/// let endpoint = Endpoint<String, String>(instance: instance) { request in
///     try await client.get(host: instance.host, port: instance.port, path: request)
/// }
/// let response = try await endpoint("/health")
/// ```
public final class Endpoint<Request: Sendable, Response: Sendable>: Sendable, Identifiable {
    /// The instance this endpoint calls.
    public let instance: Instance
    /// Whether the endpoint ends its own calls at ``CallDeadline/current`` (as the endpoints of
    /// `LoadBalancerHTTP` do, through AsyncHTTPClient's request deadline).
    ///
    /// ``Retry`` runs the attempts of such an endpoint inline, in the caller's task, with the
    /// attempt's deadline in ``CallDeadline/current``; for other endpoints it runs each attempt in a
    /// task of its own (started on the caller's thread) that it cancels when the time is up: about
    /// 2-3 µs and 3 allocations more per call.
    public let enforcesDeadline: Bool
    @usableFromInline
    let body: @Sendable (Request) async throws -> Response

    /// Creates an endpoint for `instance` that runs `body` for each call.
    ///
    /// - Parameters:
    ///   - instance: The instance the endpoint calls.
    ///   - enforcesDeadline: Whether `body` ends the call by itself at ``CallDeadline/current``
    ///     (throwing an error of its own) when a deadline is set. Default `false`.
    ///   - body: The call.
    public init(
        instance: Instance,
        enforcesDeadline: Bool = false,
        _ body: @escaping @Sendable (Request) async throws -> Response
    ) {
        self.instance = instance
        self.enforcesDeadline = enforcesDeadline
        self.body = body
    }

    /// The instance's ``Instance/id``.
    public var id: String { instance.id }

    /// Calls the endpoint.
    @inlinable
    public func callAsFunction(_ request: Request) async throws -> Response {
        try await body(request)
    }

    /// Wraps the endpoint's function (to add middleware); the result knows the same instance and
    /// enforces deadlines if this endpoint does (the middleware must call through within them).
    public func map(
        _ transform: @escaping @Sendable (Request, Endpoint<Request, Response>) async throws -> Response
    ) -> Endpoint<Request, Response> {
        Endpoint(instance: instance, enforcesDeadline: enforcesDeadline) { request in try await transform(request, self) }
    }
}

/// The deadline of the call being made, for endpoints that enforce deadlines themselves (see
/// ``Endpoint/enforcesDeadline``).
///
/// ``Retry`` sets it around each attempt on such an endpoint: the earlier of the call's overall
/// deadline and the attempt's own (``Retry/attemptTimeout``). An endpoint reads it and passes it
/// on to its transport (AsyncHTTPClient's `deadline:`, a gRPC call's timeout).
public enum CallDeadline {
    /// The current call's deadline, if any.
    @TaskLocal public static var current: ContinuousClock.Instant?
}

extension Endpoint: CustomStringConvertible {
    /// `Endpoint(ID)`.
    public var description: String { "Endpoint(\(instance.id))" }
}
