import Tracing

/// Chooses an endpoint for each call, synchronously, from an immutable snapshot of the endpoint set.
///
/// A balancer is a function of a snapshot: for every set its ``EndpointCache`` publishes (or the
/// fixed array it was built from), it derives once what it needs (a schedule, an alias or Maglev
/// table, per-instance load) and keeps it beside the set in one immutable value. A pick reads one
/// snapshot; a call takes its endpoint from that same snapshot.
///
/// ``withEndpoint(isolation:_:)`` is the call path, and how load-aware balancers learn each call's
/// outcome and latency, so no caller can forget to report. ``pick()`` is for callers that want only
/// the choice.
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

    /// The cache the balancer follows, or `nil` for a balancer over a fixed array of endpoints.
    var cache: EndpointCache<Request, Response>? { get }

    /// The endpoints the balancer chooses among now.
    var snapshot: EndpointSet<Request, Response> { get }

    /// Chooses an endpoint of the current set.
    ///
    /// - Throws: ``LoadBalancerError`` with code ``LoadBalancerError/Code/noEndpoints`` when the set is empty.
    func pick() throws(LoadBalancerError) -> EndpointPick

    /// Chooses an endpoint for a call and returns it with what the call reports to. Every lease
    /// must be ended by exactly one ``finish(_:outcome:latency:)``, except a plain one (a lease of
    /// a balancer that learns nothing from calls, over a cache without metrics or tracing), which
    /// ``withEndpoint(isolation:_:)`` and ``call(_:)`` skip. A lease counts as a pick in the cache's
    /// metrics.
    ///
    /// The default picks with ``pick()`` and takes the endpoint from ``snapshot`` (picking again
    /// if the set changed in between); the built-in balancers take it from the snapshot the pick
    /// was made in.
    ///
    /// - Throws: ``LoadBalancerError`` with code ``LoadBalancerError/Code/noEndpoints`` when the set is empty.
    func lease() throws(LoadBalancerError) -> EndpointLease<Request, Response>

    /// A lease of the first endpoint of the current set (in set order) whose id is not in `ids`,
    /// or `nil` when there is none: how ``Retry`` reaches an untried instance when the balancer
    /// keeps choosing tried ones.
    func lease(avoiding ids: Set<String>) throws(LoadBalancerError) -> EndpointLease<Request, Response>?

    /// Ends a call made with `lease`. Default: ``record(_:)`` when ``observesCalls``.
    func finish(_ lease: EndpointLease<Request, Response>, outcome: CallRecord.Outcome, latency: Duration)

    /// Ends a call made with `lease` that ended at `end` (the instant the latency was measured
    /// to), so that a balancer that stamps what it learns need not read the clock again. Default:
    /// ``finish(_:outcome:latency:)``.
    func finish(
        _ lease: EndpointLease<Request, Response>, outcome: CallRecord.Outcome, latency: Duration, endedAt end: ContinuousClock.Instant)

    /// Whether the balancer learns from calls. When `false` (the default), scoped calls skip
    /// measuring latency unless metrics are on.
    var observesCalls: Bool { get }

    /// Learns that a call is about to start on the picked endpoint (load-aware balancers count it
    /// as outstanding), for callers that pick with ``pick()`` and call by themselves (a simulation,
    /// say). Always followed by exactly one ``record(_:)``. Default: nothing.
    func willCall(_ pick: EndpointPick, slot: UInt32)

    /// Learns the outcome of a call. Default: nothing.
    func record(_ call: CallRecord)
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

    /// Picks with ``pick()`` and resolves the pick against ``snapshot``, picking again (a few
    /// times at most) while the set changes in between.
    public func lease() throws(LoadBalancerError) -> EndpointLease<Request, Response> {
        try instrumentedLease { () throws(LoadBalancerError) in try resolvedLease() }
    }

    private func resolvedLease() throws(LoadBalancerError) -> EndpointLease<Request, Response> {
        let isPlain = !observesCalls && cache?.hasInstruments != true
        for _ in 0..<8 {
            let pick = try pick()
            let set = snapshot
            if set.generation == pick.generation, pick.index >= 0, pick.index < set.count {
                if observesCalls { willCall(pick, slot: set.slots[pick.index]) }
                return EndpointLease(endpoint: set[pick.index], pick: pick, slot: set.slots[pick.index], isPlain: isPlain)
            }
        }
        // The set is changing faster than we can pick: take the pick's position in the newest set.
        let pick = try pick()
        let set = snapshot
        guard !set.isEmpty else { throw LoadBalancerError.noEndpoints }
        let index = pick.index % set.count
        let resolved = EndpointPick(index: index, generation: set.generation)
        if observesCalls { willCall(resolved, slot: set.slots[index]) }
        return EndpointLease(endpoint: set[index], pick: resolved, slot: set.slots[index], isPlain: isPlain)
    }

    /// The first endpoint of ``snapshot`` whose id is not in `ids`, announced with ``willCall(_:slot:)``.
    public func lease(avoiding ids: Set<String>) throws(LoadBalancerError) -> EndpointLease<Request, Response>? {
        let set = snapshot
        guard let index = set.endpoints.firstIndex(where: { !ids.contains($0.id) }) else { return nil }
        let pick = EndpointPick(index: index, generation: set.generation)
        if observesCalls { willCall(pick, slot: set.slots[index]) }
        return EndpointLease(
            endpoint: set[index], pick: pick, slot: set.slots[index], isPlain: !observesCalls && cache?.hasInstruments != true)
    }

    /// Reports the call to ``record(_:)`` when the balancer ``observesCalls``.
    @inlinable
    public func finish(_ lease: EndpointLease<Request, Response>, outcome: CallRecord.Outcome, latency: Duration) {
        if observesCalls { record(lease.record(outcome, latency: latency)) }
    }

    /// ``finish(_:outcome:latency:)``, the end instant unused.
    @inlinable
    public func finish(
        _ lease: EndpointLease<Request, Response>, outcome: CallRecord.Outcome, latency: Duration, endedAt end: ContinuousClock.Instant
    ) {
        finish(lease, outcome: outcome, latency: latency)
    }

    /// Picks an endpoint and returns it with the pick, both from one snapshot.
    ///
    /// - Throws: ``LoadBalancerError`` (``LoadBalancerError/Code/noEndpoints``).
    public func pickEndpoint() throws(LoadBalancerError) -> (endpoint: Endpoint<Request, Response>, pick: EndpointPick) {
        let set = snapshot
        let pick = try pick()
        if set.generation == pick.generation, pick.index >= 0, pick.index < set.count {
            return (set[pick.index], pick)
        }
        let newer = snapshot
        guard newer.generation == pick.generation, pick.index < newer.count else {
            return try pickEndpoint()
        }
        return (newer[pick.index], pick)
    }

    /// Picks an endpoint, runs `body` with it, and reports the outcome and latency to the balancer.
    ///
    /// - Throws: ``LoadBalancerError`` when there is no endpoint, or what `body` throws.
    @inlinable
    public func withEndpoint<Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: (Endpoint<Request, Response>) async throws -> Result
    ) async throws -> Result {
        try await run(try lease(), body)
    }

    /// Sends `request` to a picked endpoint: ``withEndpoint(isolation:_:)`` calling the endpoint.
    @inlinable
    public func call(_ request: Request) async throws -> Response {
        try await call(try lease(), request)
    }

    /// Calls `lease`'s endpoint with `request`, reporting the outcome as
    /// ``run(isolation:_:_:)`` does. Without instruments the call is timed here, in this frame:
    /// every further async frame (a closure, `reported`, `measured`) costs each call a task-frame
    /// allocation and an executor check, as much as the balancer's own work.
    @inlinable @inline(__always)
    package func call(_ lease: EndpointLease<Request, Response>, _ request: Request) async throws -> Response {
        if lease.isPlain { return try await lease.endpoint(request) }
        return try await observedCall(lease, request)
    }

    /// ``call(_:_:)`` for a lease whose call is reported (apart, so that the plain path stays small
    /// enough to be inlined where it is called).
    @inlinable
    package func observedCall(_ lease: EndpointLease<Request, Response>, _ request: Request) async throws -> Response {
        guard cache?.hasInstruments == true else {
            let start = ContinuousClock.now
            do {
                let response = try await lease.endpoint(request)
                finish(lease, startedAt: start, error: nil)
                return response
            } catch {
                finish(lease, startedAt: start, error: error)
                throw error
            }
        }
        return try await instrumented(lease) { endpoint in try await endpoint(request) }
    }

    /// Ends a call timed from `start` that threw `error` (`nil`: it returned); returns its outcome
    /// and latency.
    @inlinable
    @discardableResult
    func finish(
        _ lease: EndpointLease<Request, Response>,
        startedAt start: ContinuousClock.Instant,
        error: (any Error)?
    ) -> (outcome: CallRecord.Outcome, latency: Duration) {
        let end = ContinuousClock.now
        let latency = end - start
        let outcome: CallRecord.Outcome = error == nil ? .success : error is CancellationError ? .cancelled : .failure
        finish(lease, outcome: outcome, latency: latency, endedAt: end)
        return (outcome, latency)
    }

    /// A lease from `leaser`, counted in the cache's metrics (a pick, or a call with no endpoint).
    package func instrumentedLease(
        _ leaser: () throws(LoadBalancerError) -> EndpointLease<Request, Response>
    ) throws(LoadBalancerError) -> EndpointLease<Request, Response> {
        guard let cache, cache.hasInstruments else { return try leaser() }
        return try cache.countPick(by: self, leaser)
    }

    /// Runs `body` with a lease's endpoint, reporting the outcome to the balancer when it
    /// observes calls, and to the cache's instruments (metrics, a span) when it has them.
    @inlinable
    package func run<Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ lease: EndpointLease<Request, Response>,
        _ body: (Endpoint<Request, Response>) async throws -> Result
    ) async throws -> Result {
        if lease.isPlain { return try await body(lease.endpoint) }
        return try await reported(lease, body)
    }

    /// ``run(isolation:_:_:)`` for a lease whose call is observed: timed, reported, maybe traced.
    /// Inlinable on the path without instruments (P2C's every call), so that a caller's balancer
    /// type specialises it: unspecialised generic async functions cost each call task-frame
    /// allocations and executor checks.
    @inlinable
    package func reported<Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ lease: EndpointLease<Request, Response>,
        _ body: (Endpoint<Request, Response>) async throws -> Result
    ) async throws -> Result {
        guard cache?.hasInstruments == true else { return try await measured(lease, body, instruments: nil) }
        return try await instrumented(lease, body)
    }

    /// ``reported(isolation:_:_:)`` when the cache has instruments: metrics, and a span when
    /// there is a tracer.
    @usableFromInline
    func instrumented<Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ lease: EndpointLease<Request, Response>,
        _ body: (Endpoint<Request, Response>) async throws -> Result
    ) async throws -> Result {
        // `cache` and its `instruments` are constants: `reported` found both.
        let instruments = cache?.instruments
        guard let instruments, let tracer = instruments.tracer else {
            return try await measured(lease, body, instruments: instruments)
        }
        return try await traced(tracer, lease, instruments, body)
    }

    /// The call inside a `loadbalancer.call` span of `tracer`.
    private func traced<T: Tracer, Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ tracer: T,
        _ lease: EndpointLease<Request, Response>,
        _ instruments: Instruments,
        _ body: (Endpoint<Request, Response>) async throws -> Result
    ) async throws -> Result {
        try await tracer.withSpan("loadbalancer.call", ofKind: .client) { span in
            span.attributes["loadbalancer.service"] = instruments.service
            span.attributes["loadbalancer.balancer"] = instruments.name(of: Self.self) { name }
            span.attributes["loadbalancer.instance"] = lease.endpoint.id
            if let attempt = RetryAttempt.current {
                span.attributes["loadbalancer.attempt"] = attempt.number
                span.attributes["loadbalancer.hedge"] = attempt.hedge
            }
            return try await measured(lease, body, instruments: instruments)
        }
    }

    /// Calls `body`, timing it, and reports the outcome to the balancer, and to `instruments`
    /// when given.
    @inlinable
    func measured<Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ lease: EndpointLease<Request, Response>,
        _ body: (Endpoint<Request, Response>) async throws -> Result,
        instruments: Instruments?
    ) async throws -> Result {
        let start = ContinuousClock.now
        do {
            let result = try await body(lease.endpoint)
            let (outcome, latency) = finish(lease, startedAt: start, error: nil)
            instruments?.called(lease.endpoint.id, outcome: outcome, latency: latency)
            return result
        } catch {
            let (outcome, latency) = finish(lease, startedAt: start, error: error)
            instruments?.called(lease.endpoint.id, outcome: outcome, latency: latency)
            throw error // the span (if any) records it as it ends
        }
    }
}

/// A balancer that chooses by key: the same key reaches the same instance while the set allows,
/// and a key's retries go down its own order of instances (``ConsistentHashBalancer``).
///
/// ``Retry/callAsFunction(_:key:)`` makes keyed calls through it.
public protocol KeyedBalancer<Request, Response>: Balancer {
    /// A lease on `key`'s instance for a call; pass it to ``Balancer/finish(_:outcome:latency:)``.
    ///
    /// - Throws: ``LoadBalancerError`` (``LoadBalancerError/Code/noEndpoints``).
    func lease(forKey key: String) throws(LoadBalancerError) -> EndpointLease<Request, Response>

    /// A lease on the first of `key`'s instances, in its order of preference, whose id is not in
    /// `ids`, or `nil` when every usable instance is in `ids`.
    ///
    /// - Throws: ``LoadBalancerError`` (``LoadBalancerError/Code/noEndpoints``).
    func lease(forKey key: String, avoiding ids: Set<String>) throws(LoadBalancerError) -> EndpointLease<Request, Response>?
}
