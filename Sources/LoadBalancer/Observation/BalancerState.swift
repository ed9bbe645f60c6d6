/// What a balancer does now: every instance's state and the balancer's own, read by a
/// ``BalancerObserver``.
///
/// A value, taken at one moment: the instances of the balancer's current set in set order (by id),
/// with the picks each took since the observer's previous ``BalancerObserver/state()``, and what the
/// balancer, its ``OutlierDetector`` and the detector's ``HealthChecker`` know of each.
///
/// ```swift
/// let observer = balancer.observe()
/// // ... calls go through the balancer ...
/// for instance in observer.state().instances {
///     print(instance.id, instance.share, instance.inFlight ?? 0, instance.ejection?.reason as Any)
/// }
/// ```
public struct BalancerState: Sendable {
    /// The balancer's name (``Balancer/name``).
    public var balancer: String
    /// The generation of the set the state describes (``EndpointSet/generation``).
    public var generation: UInt32
    /// The time since the observer's previous state (or since it started observing): the interval
    /// ``InstanceState/picks`` were counted over.
    public var interval: Duration
    /// Every instance's state, in set order (by id).
    public var instances: [InstanceState]
    /// Whether the balancer ignores ejections now because too few instances are healthy (the
    /// detector's ``OutlierDetector/Configuration/panicThreshold``): every instance takes calls.
    /// Always `false` without a detector. ``PriorityBalancer`` applies its panic rule per level
    /// (``levels``) instead.
    public var panic: Bool
    /// With a ``PriorityBalancer``: the priority levels of the set, lowest value first, with their
    /// share of the traffic; empty for other balancers.
    public var levels: [PriorityLevelState]
    /// With zone-aware routing in force: each zone's share of the picks, in `0...1`, by zone name
    /// (`""` for instances without a zone); empty otherwise.
    public var zoneShares: [String: Double]
    /// Whether a ``HealthChecker`` is attached to the balancer's detector.
    public var healthChecked: Bool

    /// All picks in ``interval``.
    public var picks: UInt64 { instances.reduce(0) { $0 + $1.picks } }
    /// The instances that take no calls now (ejected or failing their health check), outside panic.
    public var unusable: Int { instances.count { !$0.usable } }
    /// The instances ejected now.
    public var ejected: Int { instances.count { $0.ejection != nil } }
    /// Calls in flight over all instances, when the balancer counts them.
    public var inFlight: Int? {
        var sum = 0
        for instance in instances {
            guard let count = instance.inFlight else { return nil }
            sum += count
        }
        return sum
    }
}

/// One instance's state in a ``BalancerState``.
public struct InstanceState: Sendable {
    /// The instance (its id, address, weight, ``Instance/priority`` and ``Instance/zone``).
    public var instance: Instance
    /// Picks of this instance in the state's ``BalancerState/interval`` (counted only while an
    /// observer is attached).
    public var picks: UInt64
    /// This instance's share of all picks in the interval, in `0...1` (0 when there were none).
    public var share: Double
    /// Whether the instance takes calls in the balancer's current snapshot: not ejected and not
    /// failing a health check, or every instance in panic mode.
    public var usable: Bool
    /// Calls in flight on the instance, for balancers that count them (``P2CBalancer``, and
    /// ``ConsistentHashBalancer`` with a load bound); `nil` for the others.
    public var inFlight: Int?
    /// The latency estimate a ``P2CBalancer`` with ``P2CLoadMetric/peakEWMA(decayTime:)`` keeps
    /// (decayed to now); `nil` for other balancers and before the first call.
    public var latencyEstimate: Duration?
    /// The share of successful calls, in `0...1`: a ``P2CBalancer``'s decaying success average, or
    /// else the ``OutlierDetector``'s count over its current interval; `nil` when neither knows
    /// (no call yet, or no detector).
    public var successRate: Double?
    /// The ejection in force, if any.
    public var ejection: Ejection?
    /// Back from an ejection and not yet through its probation (one failure ejects it again).
    public var probation: Bool
    /// What the active health check says.
    public var health: Health
    /// The share of its full weight the instance takes during slow start, in `0...1` (1 when it is
    /// not ramping).
    public var slowStartFactor: Double

    /// An ejection in force.
    public struct Ejection: Sendable, Hashable {
        /// Why it was ejected.
        public var reason: OutlierDetector.Reason
        /// When it comes back, on the detector's clock.
        public var until: Duration
        /// How long until it comes back.
        public var remaining: Duration
        /// How many times in a row it has been ejected (the ejection multiplier).
        public var count: Int
    }

    /// What an active health check says of an instance.
    public enum Health: Sendable, Hashable {
        /// No ``HealthChecker`` is attached.
        case notChecked
        /// The check passes.
        case passing
        /// The check fails, or the instance waits for its first check: it takes no calls.
        case failing
    }

    /// The instance's id.
    public var id: String { instance.id }
    /// The instance's priority level (``Instance/priority``).
    public var priority: Int { instance.priority }
    /// The instance's zone (``Instance/zone``).
    public var zone: String? { instance.zone }
}

/// A priority level in a ``BalancerState`` of a ``PriorityBalancer``.
public struct PriorityLevelState: Sendable, Hashable {
    /// The level's priority value (``Instance/priority``).
    public var priority: Int
    /// Its share of the traffic, in percent.
    public var share: Int
    /// Whether it is in panic: its traffic goes to all its instances, healthy or not.
    public var panic: Bool
    /// Its healthy instances.
    public var healthy: Int
    /// Its instances.
    public var total: Int

    /// Creates a level's state.
    public init(priority: Int, share: Int, panic: Bool, healthy: Int, total: Int) {
        self.priority = priority
        self.share = share
        self.panic = panic
        self.healthy = healthy
        self.total = total
    }
}
