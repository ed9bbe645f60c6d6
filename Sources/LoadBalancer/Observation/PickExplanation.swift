/// Why a balancer chose the instance it chose: one sampled pick, recorded while a
/// ``BalancerObserver`` explains picks (``ObservableBalancer/observe(explainingEvery:)``).
///
/// What is filled in depends on the balancer:
/// - ``P2CBalancer``: ``candidates``, the two instances sampled with their costs; the winner is the
///   cheaper.
/// - ``PriorityBalancer``: ``level``, the priority level drawn and its share of the traffic.
/// - zone-aware routing (any balancer): ``zone``, the zone drawn and its share.
/// - ``ConsistentHashBalancer``: ``ring``, the key's hash and its entry in the lookup table.
/// - other balancers: the instance alone (a rotation or a draw has no other reason).
///
/// With slow start, ``slowStartMovedOn`` says that a ramping instance's share turned the first choice away.
public struct PickExplanation: Sendable, Hashable, CustomStringConvertible {
    /// The balancer's name (``Balancer/name``).
    public var balancer: String
    /// The instance chosen.
    public var instanceID: String
    /// With ``P2CBalancer``: the two instances sampled, in draw order.
    public var candidates: [Candidate]
    /// With ``PriorityBalancer``: the level drawn.
    public var level: PriorityLevelState?
    /// With zone-aware routing in force: the zone drawn.
    public var zone: ZoneChoice?
    /// With a keyed pick (``ConsistentHashBalancer``): where the key's hash falls.
    public var ring: RingPosition?
    /// With slow start: whether the first choice was a ramping instance whose share turned it away,
    /// so that a later draw was taken (``candidates``, ``level`` and ``zone`` describe the first).
    public var slowStartMovedOn: Bool

    /// The zone a pick under zone-aware routing drew.
    public struct ZoneChoice: Sendable, Hashable {
        /// The zone's name (`""` for instances without one).
        public var name: String
        /// Its share of the picks, in `0...1`.
        public var share: Double
    }

    /// One of the two instances a P2C pick compares.
    public struct Candidate: Sendable, Hashable {
        /// The instance's id.
        public var instanceID: String
        /// Its cost, lower is better: the load (calls in flight + 1, or the latency estimate in
        /// nanoseconds × (calls in flight + 1)) divided by the square of the success rate and by
        /// the instance's relative weight.
        public var cost: Double
        /// Its calls in flight.
        public var inFlight: Int
        /// Its success rate as the balancer sees it, in `0...1`.
        public var successRate: Double
        /// Its latency estimate (peak EWMA), if the metric keeps one and a call has ended.
        public var latencyEstimate: Duration?
    }

    /// Where a key's hash falls on a consistent-hash balancer's table.
    public struct RingPosition: Sendable, Hashable {
        /// The key's 64-bit hash (``ConsistentHashBalancer/stableHash(_:)`` of the key, or a random
        /// draw for an unkeyed pick).
        public var hash: UInt64
        /// The table entry it reaches, in `0..<tableSize`.
        public var entry: Int
        /// The table's size.
        public var tableSize: Int
        /// The instance that owns the entry (the key's own instance).
        public var ownerID: String
        /// Whether the pick went past the owner to another instance (a load bound, or slow start).
        public var movedOn: Bool
    }

    /// Creates an explanation of a pick of `instanceID` by `balancer`.
    public init(balancer: String, instanceID: String) {
        self.balancer = balancer
        self.instanceID = instanceID
        self.candidates = []
        self.level = nil
        self.zone = nil
        self.ring = nil
        self.slowStartMovedOn = false
    }

    /// One line: the instance chosen and why.
    public var description: String {
        var parts: [String] = []
        if let zone { parts.append("zone \(zone.name.isEmpty ? "(none)" : zone.name) (share \(Self.percent(zone.share)))") }
        if let level {
            parts.append(
                "priority \(level.priority) (share \(level.share)%, \(level.healthy)/\(level.total) healthy\(level.panic ? ", panic" : ""))"
            )
        }
        if candidates.count == 2 {
            let text = candidates.map { candidate in
                var text = "\(candidate.instanceID) cost \(Self.short(candidate.cost)) (\(candidate.inFlight) in flight"
                if let latency = candidate.latencyEstimate { text += ", ewma \(Self.milliseconds(latency))" }
                if candidate.successRate < 1 { text += ", success \(Self.percent(candidate.successRate))" }
                return text + ")"
            }
            parts.append("p2c " + text.joined(separator: " vs "))
        }
        if let ring {
            let around = Double(ring.entry) / Double(max(1, ring.tableSize))
            parts.append(
                "hash \(String(ring.hash, radix: 16)) at entry \(ring.entry)/\(ring.tableSize) (\(Self.percent(around)) round the ring) owned by \(ring.ownerID)"
                    + (ring.movedOn ? ", moved on" : ""))
        }
        if slowStartMovedOn { parts.append("slow start moved on from the first choice") }
        return "\(instanceID) <- " + (parts.isEmpty ? "\(balancer) choice" : parts.joined(separator: "; "))
    }

    static func percent(_ value: Double) -> String { "\((value * 1000).rounded() / 10)%" }

    static func short(_ value: Double) -> String {
        if value >= 1e6 { return "\((value / 1e5).rounded() / 10)M" }
        if value >= 1e3 { return "\((value / 1e2).rounded() / 10)k" }
        return "\((value * 100).rounded() / 100)"
    }

    static func milliseconds(_ duration: Duration) -> String {
        let ms = duration.nanosecondsValue / 1e6
        return "\((ms * 100).rounded() / 100) ms"
    }
}
