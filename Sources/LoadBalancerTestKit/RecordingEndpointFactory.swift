import LoadBalancer
import Synchronization

/// An endpoint factory for tests: its endpoints answer from a closure and record every request
/// they get; the factory records every endpoint it makes and closes, and refuses the instances
/// the test tells it to.
///
/// Hand ``factory`` to an `EndpointCache` (or `withLoadBalancer`) in place of the
/// factory your code uses in production, then check which instances were called with what, and
/// that every endpoint was closed once when its instance left.
///
/// ```swift
/// let backends = RecordingEndpointFactory<String, String> { instance, request in
///     "\(instance.port): \(request)"
/// }
/// let cache = EndpointCache(factory: backends.factory)
/// await cache.update(with: [try Instance(parsing: "10.0.0.1:80")])
/// _ = try await RoundRobinBalancer(cache).call("GET /")
/// #expect(backends.requests(to: "10.0.0.1:80") == ["GET /"])
/// ```
public final class RecordingEndpointFactory<Request: Sendable, Response: Sendable>: Sendable {
    /// One request an endpoint received.
    public struct ReceivedRequest: Sendable {
        /// The id of the instance whose endpoint received it.
        public var instanceID: String
        /// The request.
        public var request: Request
    }

    /// What happened to the endpoints of one instance id.
    public struct Lifecycle: Sendable, Hashable {
        /// How many endpoints the factory made for the id.
        public var made = 0
        /// How many of them were closed.
        public var closed = 0
        /// How many times the factory refused the id.
        public var refused = 0
        /// Whether an endpoint of the id is open (made and not closed).
        public var isOpen: Bool { made > closed }
    }

    private struct State {
        var requests: [ReceivedRequest] = []
        var lifecycles: [String: Lifecycle] = [:]
        var made: [String] = []
        var closed: [String] = []
        var refusing: Set<String> = []
    }

    private let state = Mutex(State())
    private let respond: @Sendable (Instance, Request) async throws -> Response
    private let onClose: @Sendable (Endpoint<Request, Response>) -> Void

    /// Creates a factory whose endpoints answer with `respond`.
    ///
    /// - Parameters:
    ///   - onClose: Called with each endpoint as it is closed, before the close is recorded (to
    ///     check, say, that nothing still uses it). Default: nothing.
    ///   - respond: The answer of the instance's endpoint to a request; what it throws, the call
    ///     throws. The request is recorded before `respond` runs.
    public init(
        onClose: @escaping @Sendable (Endpoint<Request, Response>) -> Void = { _ in },
        respond: @escaping @Sendable (Instance, Request) async throws -> Response
    ) {
        self.respond = respond
        self.onClose = onClose
    }

    /// The factory to hand to the code under test.
    public var factory: EndpointFactory<Request, Response> {
        EndpointFactory { instance in try self.make(instance) }
    }

    private func make(_ instance: Instance) throws -> ManagedEndpoint<Request, Response> {
        let refused = state.withLock { state -> Bool in
            if state.refusing.contains(instance.id) {
                state.lifecycles[instance.id, default: Lifecycle()].refused += 1
                return true
            }
            state.lifecycles[instance.id, default: Lifecycle()].made += 1
            state.made.append(instance.id)
            return false
        }
        if refused {
            throw TestKitError(code: .refused, message: "factory refused \(instance.id), as the test asked")
        }
        let respond = self.respond
        let endpoint = Endpoint<Request, Response>(instance: instance) { [weak self] request in
            self?.state.withLock { $0.requests.append(ReceivedRequest(instanceID: instance.id, request: request)) }
            return try await respond(instance, request)
        }
        return ManagedEndpoint(endpoint) { [weak self] in
            guard let self else { return }
            self.onClose(endpoint)
            self.state.withLock { state in
                state.lifecycles[instance.id, default: Lifecycle()].closed += 1
                state.closed.append(instance.id)
            }
        }
    }

    /// Makes the factory throw a ``TestKitError`` (code ``TestKitError/Code/refused``) for
    /// `instanceID` until ``accept(_:)``, as a factory whose connection cannot be set up.
    public func refuse(_ instanceID: String) {
        _ = state.withLock { $0.refusing.insert(instanceID) }
    }

    /// Lets the factory make endpoints for `instanceID` again.
    public func accept(_ instanceID: String) {
        _ = state.withLock { $0.refusing.remove(instanceID) }
    }

    /// Every request the endpoints received, in the order they arrived.
    public var requests: [ReceivedRequest] { state.withLock { $0.requests } }

    /// The requests the endpoints of `instanceID` received, in order.
    public func requests(to instanceID: String) -> [Request] {
        state.withLock { $0.requests.filter { $0.instanceID == instanceID }.map(\.request) }
    }

    /// How many requests each instance's endpoints received, by instance id.
    public var requestCounts: [String: Int] {
        state.withLock { state in state.requests.reduce(into: [:]) { $0[$1.instanceID, default: 0] += 1 } }
    }

    /// The instance ids the factory made endpoints for, in the order it made them.
    public var made: [String] { state.withLock { $0.made } }

    /// The instance ids whose endpoints were closed, in the order they were closed.
    public var closed: [String] { state.withLock { $0.closed } }

    /// The ids of the instances that have an endpoint open (made and not yet closed), sorted.
    public var openInstanceIDs: [String] {
        state.withLock { $0.lifecycles.filter { $0.value.isOpen }.keys.sorted() }
    }

    /// What happened to each instance id's endpoints: made, closed, refused.
    public var lifecycles: [String: Lifecycle] { state.withLock { $0.lifecycles } }

    /// Forgets the recorded requests (the endpoints' lifecycles are kept).
    public func removeAllRequests() {
        state.withLock { $0.requests.removeAll() }
    }
}
