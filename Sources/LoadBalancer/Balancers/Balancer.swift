import Tracing

/// Chooses an endpoint for each call, synchronously, from an ``EndpointCache``'s current set.
///
/// ``pick()`` is the hot path. It never suspends, takes no lock in the common case, allocates
/// nothing, and touches no reference-counted object: it reads the set's ``EndpointSetShape`` (one
/// atomic word) and returns an ``EndpointPick`` (two integers). The endpoint itself is fetched once
/// per call by ``withEndpoint(isolation:_:)``, which is also how load-aware balancers learn each
/// call's outcome and latency, so no caller can forget to report.
///
/// ```swift
/// let balancer = RoundRobinBalancer(cache)
/// let response = try await balancer.withEndpoint { endpoint in
///     try await endpoint(request)
/// }
/// ```
public protocol Balancer<Request, Response>: Sendable {
    /// What a call sends to an endpoint.
    associatedtype Request: Sendable
    /// What an endpoint answers.
    associatedtype Response: Sendable

    /// The endpoints the balancer chooses among.
    var endpoints: EndpointCache<Request, Response> { get }

    /// Chooses an endpoint of the current set.
    ///
    /// - Throws: ``LoadBalancerError`` with code ``LoadBalancerError/Code/noEndpoints`` when the set is empty.
    func pick() throws(LoadBalancerError) -> EndpointPick

    /// Whether ``record(_:)`` wants to hear about calls. When `false` (the default), scoped calls
    /// skip measuring latency.
    var observesCalls: Bool { get }

    /// Learns that a call is about to start on the picked endpoint (load-aware balancers count it
    /// as outstanding). Called only when ``observesCalls`` is `true`; always followed by exactly one
    /// ``record(_:)``. Default: nothing.
    func willCall(_ pick: EndpointPick, slot: UInt32)

    /// Learns the outcome of a call made through ``withEndpoint(isolation:_:)``. Default: nothing.
    func record(_ call: CallRecord)
}

/// A pick with its endpoint and slot, resolved against the snapshot it was made for.
struct ResolvedPick<Request: Sendable, Response: Sendable> {
    var endpoint: Endpoint<Request, Response>
    var pick: EndpointPick
    var slot: UInt32

    func record(_ outcome: CallRecord.Outcome, latency: Duration) -> CallRecord {
        CallRecord(pick: pick, instanceID: endpoint.id, slot: slot, outcome: outcome, latency: latency)
    }
}

/// What a balancer learns about one completed call.
public struct CallRecord: Sendable {
    /// How a call ended.
    public enum Outcome: Sendable, Hashable {
        /// The call returned.
        case success
        /// The call threw an error other than cancellation.
        case failure
        /// The call was cancelled.
        case cancelled
    }

    /// The pick the call was made with.
    public var pick: EndpointPick
    /// The id of the instance called.
    public var instanceID: String
    /// The instance's stable slot (see ``EndpointSet/slots``).
    public var slot: UInt32
    /// How it ended.
    public var outcome: Outcome
    /// How long it took.
    public var latency: Duration

    /// Creates a record of one call.
    public init(pick: EndpointPick, instanceID: String, slot: UInt32, outcome: Outcome, latency: Duration) {
        self.pick = pick
        self.instanceID = instanceID
        self.slot = slot
        self.outcome = outcome
        self.latency = latency
    }
}

extension Balancer {
    /// `false`: by default a balancer learns nothing from calls.
    public var observesCalls: Bool { false }
    /// Does nothing by default.
    public func willCall(_ pick: EndpointPick, slot: UInt32) {}
    /// Does nothing by default.
    public func record(_ call: CallRecord) {}

    /// Picks an endpoint and returns it with the pick.
    ///
    /// When the set changes between the pick and the fetch, it picks again (a few times at most),
    /// so the endpoint always belongs to the set the pick was made against.
    ///
    /// - Throws: ``LoadBalancerError`` (``LoadBalancerError/Code/noEndpoints``).
    public func pickEndpoint() throws(LoadBalancerError) -> (endpoint: Endpoint<Request, Response>, pick: EndpointPick) {
        let resolved = try resolvePick { () throws(LoadBalancerError) in try pick() }
        return (resolved.endpoint, resolved.pick)
    }

    /// Picks with `picker` (default: ``pick()``) and resolves, returning the endpoint's slot too.
    func resolvePick(
        _ picker: () throws(LoadBalancerError) -> EndpointPick
    ) throws(LoadBalancerError) -> ResolvedPick<Request, Response> {
        for _ in 0..<8 {
            let pick = try picker()
            let set = endpoints.snapshot
            if set.generation == pick.generation, pick.index >= 0, pick.index < set.count {
                return ResolvedPick(endpoint: set[pick.index], pick: pick, slot: set.slots[pick.index])
            }
        }
        // The set is changing faster than we can pick: take the pick's position in the newest set.
        let pick = try picker()
        let set = endpoints.snapshot
        guard !set.isEmpty else { throw LoadBalancerError.noEndpoints }
        let index = pick.index % set.count
        return ResolvedPick(
            endpoint: set[index],
            pick: EndpointPick(index: index, generation: set.generation),
            slot: set.slots[index]
        )
    }

    /// Picks an endpoint, runs `body` with it, and reports the outcome and latency to the balancer.
    ///
    /// - Throws: ``LoadBalancerError`` when there is no endpoint, or what `body` throws.
    public func withEndpoint<Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: (Endpoint<Request, Response>) async throws -> Result
    ) async throws -> Result {
        let resolved = try instrumentedPick { () throws(LoadBalancerError) in try pick() }
        return try await run(resolved, body)
    }

    /// ``resolvePick(_:)``, counted in the cache's metrics (a pick, or a call with no endpoint).
    func instrumentedPick(
        _ picker: () throws(LoadBalancerError) -> EndpointPick
    ) throws(LoadBalancerError) -> ResolvedPick<Request, Response> {
        guard let instruments = endpoints.instruments else { return try resolvePick(picker) }
        do {
            let resolved = try resolvePick(picker)
            instruments.picked(by: Self.self) { name }
            return resolved
        } catch {
            instruments.foundNoEndpoint(Self.self) { name }
            throw error
        }
    }

    /// Runs `body` with a resolved pick, reporting the outcome to the balancer when it observes
    /// calls, and to the cache's instruments (metrics, a span) when it has them.
    func run<Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ resolved: ResolvedPick<Request, Response>,
        _ body: (Endpoint<Request, Response>) async throws -> Result
    ) async throws -> Result {
        guard let instruments = endpoints.instruments else {
            guard observesCalls else { return try await body(resolved.endpoint) }
            return try await measured(resolved, instruments: nil, body)
        }
        guard let tracer = instruments.tracer else {
            return try await measured(resolved, instruments: instruments, body)
        }
        return try await traced(tracer, resolved, instruments, body)
    }

    /// ``run(isolation:_:_:)`` inside a `loadbalancer.call` span of `tracer`.
    private func traced<T: Tracer, Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ tracer: T,
        _ resolved: ResolvedPick<Request, Response>,
        _ instruments: Instruments,
        _ body: (Endpoint<Request, Response>) async throws -> Result
    ) async throws -> Result {
        try await tracer.withSpan("loadbalancer.call", ofKind: .client) { span in
            span.attributes["loadbalancer.service"] = instruments.service
            span.attributes["loadbalancer.balancer"] = instruments.name(of: Self.self) { name }
            span.attributes["loadbalancer.instance"] = resolved.endpoint.id
            if let attempt = RetryAttempt.current {
                span.attributes["loadbalancer.attempt"] = attempt.number
                span.attributes["loadbalancer.hedge"] = attempt.hedge
            }
            return try await measured(resolved, instruments: instruments, body)
        }
    }

    /// Calls `body`, timing it, and reports the outcome to the balancer and the instruments.
    private func measured<Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ resolved: ResolvedPick<Request, Response>,
        instruments: Instruments?,
        _ body: (Endpoint<Request, Response>) async throws -> Result
    ) async throws -> Result {
        let observes = observesCalls
        if observes { willCall(resolved.pick, slot: resolved.slot) }
        let start = ContinuousClock.now
        do {
            let result = try await body(resolved.endpoint)
            let latency = ContinuousClock.now - start
            if observes { record(resolved.record(.success, latency: latency)) }
            instruments?.called(resolved.endpoint.id, outcome: .success, latency: latency)
            return result
        } catch {
            let latency = ContinuousClock.now - start
            let outcome: CallRecord.Outcome = error is CancellationError ? .cancelled : .failure
            if observes { record(resolved.record(outcome, latency: latency)) }
            instruments?.called(resolved.endpoint.id, outcome: outcome, latency: latency)
            throw error  // the span (if any) records it as it ends
        }
    }

    /// Sends `request` to a picked endpoint: ``withEndpoint(isolation:_:)`` calling the endpoint.
    public func call(_ request: Request) async throws -> Response {
        try await withEndpoint { endpoint in try await endpoint(request) }
    }
}
