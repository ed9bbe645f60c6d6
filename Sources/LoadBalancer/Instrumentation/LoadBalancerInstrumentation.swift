import CoreMetrics
import Synchronization
import Tracing

/// Metrics (swift-metrics) and tracing (swift-distributed-tracing) for one balanced service.
///
/// Give it to the ``EndpointCache``; every balancer, ``OutlierDetector`` and ``Retry`` over that
/// cache reports through it. `pick()` itself stays uninstrumented (it is a few nanoseconds; a
/// metric would cost more than the pick): picks are counted per *call* made through
/// ``Balancer/withEndpoint(isolation:_:)`` or ``Retry``.
///
/// ## Metrics
///
/// Every metric has the dimension `service` (``service``); per-instance metrics add `instance`
/// (the instance's id), per-balancer ones `balancer` (``Balancer/name``).
///
/// | label | type | dimensions | what |
/// |---|---|---|---|
/// | `loadbalancer_picks_total` | counter | service, balancer | calls for which an endpoint was picked |
/// | `loadbalancer_no_endpoints_total` | counter | service, balancer | calls that found no endpoint |
/// | `loadbalancer_requests_total` | counter | service, instance | calls made to an instance |
/// | `loadbalancer_failures_total` | counter | service, instance | calls to an instance that failed (not cancelled ones) |
/// | `loadbalancer_request_duration` | timer (ns) | service, instance | the duration of each call to an instance |
/// | `loadbalancer_ejections_total` | counter | service, instance | times an instance was ejected |
/// | `loadbalancer_instances` | gauge | service | instances in the current set |
/// | `loadbalancer_instances_ejected` | gauge | service | instances ejected now |
/// | `loadbalancer_instances_failing_health_check` | gauge | service | instances out of picks by their active health check now (``HealthChecker``) |
/// | `loadbalancer_health_checks_total` | counter | service, result (`passed`, `failed`) | active health checks made |
/// | `loadbalancer_retries_total` | counter | service | retry attempts (attempts after the first, hedges excluded) |
/// | `loadbalancer_hedges_total` | counter | service | hedged attempts |
/// | `loadbalancer_retry_budget_exhausted_total` | counter | service | retries or hedges the budget refused |
///
/// Per-instance series are destroyed when the instance leaves the set, so churn does not grow them
/// without bound.
///
/// ## Tracing
///
/// Each call through a balancer is a span `loadbalancer.call` (kind client) with the attributes
/// `loadbalancer.service`, `loadbalancer.balancer`, `loadbalancer.instance` and, under ``Retry``,
/// `loadbalancer.attempt` (1, 2, ...) and `loadbalancer.hedge` (true for a hedged attempt). A call
/// through ``Retry`` is a span `loadbalancer.retry` whose children are the attempts' spans; it has
/// the events `loadbalancer.retry` and `loadbalancer.hedge` when it starts another attempt, the
/// attribute `loadbalancer.attempts`, and an error status when the call fails. Spans are children
/// of the caller's current span (`ServiceContext.current`).
public struct LoadBalancerInstrumentation: Sendable {
    /// The value of the `service` dimension and attribute: the service being called.
    public var service: String
    /// Where metrics go; `nil` turns metrics off.
    public var metrics: (any MetricsFactory)?
    /// Where spans go; `nil` turns tracing off.
    public var tracer: (any Tracer)?

    /// - Parameters:
    ///   - service: The service being called (a dimension of every metric, an attribute of every span).
    ///   - metrics: Default: the bootstrapped `MetricsSystem`'s factory.
    ///   - tracer: Default: the bootstrapped `InstrumentationSystem`'s tracer.
    public init(
        service: String,
        metrics: (any MetricsFactory)? = MetricsSystem.factory,
        tracer: (any Tracer)? = InstrumentationSystem.tracer
    ) {
        self.service = service
        self.metrics = metrics
        self.tracer = tracer
    }
}

/// The live instruments of one cache: metric handles, created once and kept per balancer and per
/// instance, and the tracer.
@usableFromInline
final class Instruments: Sendable {
    let service: String
    let tracer: (any Tracer)?
    private let factory: (any MetricsFactory)?

    private struct InstanceHandles {
        var requests: Counter
        var failures: Counter
        var duration: Timer
        var ejections: Counter
    }

    /// A balancer type's name (worked out once: it formats a type name) and its counters.
    private struct BalancerHandles {
        var name: String
        var picks: Counter?
        var noEndpoints: Counter?
    }

    private struct State {
        var instances: [String: InstanceHandles] = [:]
        var balancers: [ObjectIdentifier: BalancerHandles] = [:]
    }

    private let state = Mutex(State())
    private let instanceCount: Gauge?
    private let ejectedCount: Gauge?
    private let failingChecksCount: Gauge?
    private let checksPassed: Counter?
    private let checksFailed: Counter?
    private let retries: Counter?
    private let hedges: Counter?
    private let budgetExhausted: Counter?

    init(_ configuration: LoadBalancerInstrumentation) {
        service = configuration.service
        tracer = configuration.tracer
        factory = configuration.metrics
        let dimensions = [("service", configuration.service)]
        if let factory {
            instanceCount = Gauge(label: "loadbalancer_instances", dimensions: dimensions, factory: factory)
            ejectedCount = Gauge(label: "loadbalancer_instances_ejected", dimensions: dimensions, factory: factory)
            retries = Counter(label: "loadbalancer_retries_total", dimensions: dimensions, factory: factory)
            hedges = Counter(label: "loadbalancer_hedges_total", dimensions: dimensions, factory: factory)
            budgetExhausted = Counter(label: "loadbalancer_retry_budget_exhausted_total", dimensions: dimensions, factory: factory)
            failingChecksCount = Gauge(label: "loadbalancer_instances_failing_health_check", dimensions: dimensions, factory: factory)
            checksPassed = Counter(
                label: "loadbalancer_health_checks_total", dimensions: dimensions + [("result", "passed")], factory: factory)
            checksFailed = Counter(
                label: "loadbalancer_health_checks_total", dimensions: dimensions + [("result", "failed")], factory: factory)
        } else {
            failingChecksCount = nil
            checksPassed = nil
            checksFailed = nil
            instanceCount = nil
            ejectedCount = nil
            retries = nil
            hedges = nil
            budgetExhausted = nil
        }
    }

    /// The handles of balancer type `type`, made at its first call; `name` is only evaluated then.
    private func balancer(_ type: Any.Type, _ name: () -> String) -> BalancerHandles {
        state.withLock { state in
            let key = ObjectIdentifier(type)
            if let handles = state.balancers[key] { return handles }
            let name = name()
            let dimensions = [("service", service), ("balancer", name)]
            let handles = BalancerHandles(
                name: name,
                picks: factory.map { Counter(label: "loadbalancer_picks_total", dimensions: dimensions, factory: $0) },
                noEndpoints: factory.map { Counter(label: "loadbalancer_no_endpoints_total", dimensions: dimensions, factory: $0) }
            )
            state.balancers[key] = handles
            return handles
        }
    }

    private func instance(_ id: String) -> InstanceHandles? {
        guard let factory else { return nil }
        return state.withLock { state in
            if let handles = state.instances[id] { return handles }
            let dimensions = [("service", service), ("instance", id)]
            let handles = InstanceHandles(
                requests: Counter(label: "loadbalancer_requests_total", dimensions: dimensions, factory: factory),
                failures: Counter(label: "loadbalancer_failures_total", dimensions: dimensions, factory: factory),
                duration: Timer(label: "loadbalancer_request_duration", dimensions: dimensions, factory: factory),
                ejections: Counter(label: "loadbalancer_ejections_total", dimensions: dimensions, factory: factory)
            )
            state.instances[id] = handles
            return handles
        }
    }

    func picked(by type: Any.Type, name: () -> String) { balancer(type, name).picks?.increment() }
    func foundNoEndpoint(_ type: Any.Type, name: () -> String) { balancer(type, name).noEndpoints?.increment() }
    /// The name of balancer type `type` (``Balancer/name``, cached).
    func name(of type: Any.Type, _ name: () -> String) -> String { balancer(type, name).name }

    @usableFromInline
    func called(_ instance: String, outcome: CallRecord.Outcome, latency: Duration) {
        guard let handles = self.instance(instance) else { return }
        handles.requests.increment()
        if outcome == .failure { handles.failures.increment() }
        handles.duration.recordNanoseconds(latency.wholeNanoseconds)
    }

    func ejected(_ instance: String) { self.instance(instance)?.ejections.increment() }
    func ejectedNow(_ count: Int) { ejectedCount?.record(count) }
    func failingHealthChecksNow(_ count: Int) { failingChecksCount?.record(count) }
    func healthChecked(passed: Bool) { (passed ? checksPassed : checksFailed)?.increment() }
    func retried() { retries?.increment() }
    func hedged() { hedges?.increment() }
    func refusedByBudget() { budgetExhausted?.increment() }

    /// The set changed: the instance gauge follows it, and the series of instances that left are
    /// destroyed.
    func setChanged(_ ids: [String]) {
        instanceCount?.record(ids.count)
        guard factory != nil else { return }
        let current = Set(ids)
        let gone = state.withLock { state -> [InstanceHandles] in
            let leaving = state.instances.keys.filter { !current.contains($0) }
            return leaving.compactMap { state.instances.removeValue(forKey: $0) }
        }
        for handles in gone {
            handles.requests.destroy()
            handles.failures.destroy()
            handles.duration.destroy()
            handles.ejections.destroy()
        }
    }
}

/// The attempt a ``Retry`` is making, for the spans of the calls it makes.
enum RetryAttempt {
    @TaskLocal static var current: (number: Int, hedge: Bool)?
}

extension Balancer {
    /// The balancer's name in metrics and spans: its type's name without generic arguments
    /// (`P2CBalancer`).
    public var name: String {
        let full = String(describing: Self.self)
        return full.firstIndex(of: "<").map { String(full[..<$0]) } ?? full
    }
}
