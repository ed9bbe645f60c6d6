import LoadBalancer
import Synchronization

/// A balancer that wraps any other, picks as it does, and records every pick it makes and every
/// call outcome it learns.
///
/// Wrap the balancer your code is given and check afterwards which instances it was sent to and
/// how each call ended: that a retry went to another instance, that a failed call was reported as
/// a failure and a cancelled one as cancelled, that nothing picked from an empty set.
///
/// ```swift
/// let balancer = RecordingBalancer(RoundRobinBalancer(cache))
/// try await myClient(using: balancer).fetchProfile()
/// #expect(balancer.picks == ["10.0.0.1:80", "10.0.0.2:80"])
/// #expect(balancer.calls.map(\.outcome) == [.failure, .success])
/// ```
///
/// The wrapped balancer still chooses, and still learns every call's outcome (a P2C balancer
/// keeps counting its in-flight calls). The recorder observes every call, so calls through it are
/// always timed and reported, even over a balancer that would not need it.
public final class RecordingBalancer<Base: Balancer>: Balancer {
    /// What a call sends to an endpoint.
    public typealias Request = Base.Request
    /// What an endpoint answers.
    public typealias Response = Base.Response

    /// One pick the balancer made.
    public struct Pick: Sendable, Hashable {
        /// The pick, in the snapshot it was made against.
        public var pick: EndpointPick
        /// The id of the instance picked.
        public var instanceID: String
    }

    private struct State {
        var picks: [Pick] = []
        var calls: [CallRecord] = []
        var emptyPicks = 0
    }

    /// The balancer that chooses.
    public let base: Base
    private let state = Mutex(State())

    /// Wraps `base`.
    public init(_ base: Base) {
        self.base = base
    }

    /// The wrapped balancer's cache.
    public var cache: EndpointCache<Request, Response>? { base.cache }

    /// The wrapped balancer's current set.
    public var snapshot: EndpointSet<Request, Response> { base.snapshot }

    /// Picks with the wrapped balancer and records the pick.
    ///
    /// - Throws: `LoadBalancerError` (`LoadBalancerError.Code.noEndpoints`)
    ///   when the set is empty; that is recorded in ``emptyPickCount``.
    public func pick() throws(LoadBalancerError) -> EndpointPick {
        do {
            let (endpoint, pick) = try base.pickEndpoint()
            state.withLock { $0.picks.append(Pick(pick: pick, instanceID: endpoint.id)) }
            return pick
        } catch {
            state.withLock { $0.emptyPicks += 1 }
            throw error
        }
    }

    /// A lease from the wrapped balancer (so it counts the call as its own), recorded as a pick.
    ///
    /// - Throws: `LoadBalancerError` when the set is empty; that is recorded in
    ///   ``emptyPickCount``.
    public func lease() throws(LoadBalancerError) -> EndpointLease<Request, Response> {
        do {
            return observed(try base.lease())
        } catch {
            state.withLock { $0.emptyPicks += 1 }
            throw error
        }
    }

    /// A lease from the wrapped balancer of an instance not in `ids`, recorded as a pick.
    ///
    /// - Throws: `LoadBalancerError` when the wrapped balancer throws.
    public func lease(avoiding ids: Set<String>) throws(LoadBalancerError) -> EndpointLease<Request, Response>? {
        try base.lease(avoiding: ids).map(observed)
    }

    /// Records `lease` as a pick and makes sure its call is reported (a plain lease of the wrapped
    /// balancer would be called without a word to the balancer).
    private func observed(_ lease: EndpointLease<Request, Response>) -> EndpointLease<Request, Response> {
        state.withLock { $0.picks.append(Pick(pick: lease.pick, instanceID: lease.endpoint.id)) }
        guard lease.isPlain else { return lease }
        return EndpointLease(endpoint: lease.endpoint, pick: lease.pick, slot: lease.slot, isPlain: false)
    }

    /// Ends the call with the wrapped balancer and records its outcome.
    public func finish(_ lease: EndpointLease<Request, Response>, outcome: CallRecord.Outcome, latency: Duration) {
        base.finish(lease, outcome: outcome, latency: latency)
        state.withLock { $0.calls.append(lease.record(outcome, latency: latency)) }
    }

    /// `true`: the recorder learns every call.
    public var observesCalls: Bool { true }

    /// Tells the wrapped balancer a call starts (for callers that pick and call by themselves).
    public func willCall(_ pick: EndpointPick, slot: UInt32) {
        base.willCall(pick, slot: slot)
    }

    /// Tells the wrapped balancer how a call ended and records it (for callers that pick and call
    /// by themselves).
    public func record(_ call: CallRecord) {
        base.record(call)
        state.withLock { $0.calls.append(call) }
    }

    /// Every pick, in order: from ``pick()``, and from each call made through
    /// `Balancer.withEndpoint(isolation:_:)`, `Balancer.call(_:)` or
    /// `Retry`.
    public var pickRecords: [Pick] { state.withLock { $0.picks } }

    /// The ids of the instances picked, in order.
    public var picks: [String] { state.withLock { $0.picks.map(\.instanceID) } }

    /// Every call outcome the balancer learned, in the order the calls ended.
    public var calls: [CallRecord] { state.withLock { $0.calls } }

    /// How many picks found no endpoint.
    public var emptyPickCount: Int { state.withLock { $0.emptyPicks } }

    /// How many calls of each instance ended with `outcome`, by instance id.
    public func callCounts(_ outcome: CallRecord.Outcome) -> [String: Int] {
        state.withLock { state in
            state.calls.filter { $0.outcome == outcome }.reduce(into: [:]) { $0[$1.instanceID, default: 0] += 1 }
        }
    }

    /// Forgets every pick and call recorded so far.
    public func removeAll() {
        state.withLock { $0 = State() }
    }
}
