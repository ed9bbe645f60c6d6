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
    @usableFromInline
    let body: @Sendable (Request) async throws -> Response

    /// Creates an endpoint for `instance` that runs `body` for each call.
    public init(instance: Instance, _ body: @escaping @Sendable (Request) async throws -> Response) {
        self.instance = instance
        self.body = body
    }

    /// The instance's ``Instance/id``.
    public var id: String { instance.id }

    /// Calls the endpoint.
    @inlinable
    public func callAsFunction(_ request: Request) async throws -> Response {
        try await body(request)
    }

    /// Wraps the endpoint's function (to add middleware); the result knows the same instance.
    public func map(
        _ transform: @escaping @Sendable (Request, Endpoint<Request, Response>) async throws -> Response
    ) -> Endpoint<Request, Response> {
        Endpoint(instance: instance) { request in try await transform(request, self) }
    }
}

extension Endpoint: CustomStringConvertible {
    /// `Endpoint(ID)`.
    public var description: String { "Endpoint(\(instance.id))" }
}
