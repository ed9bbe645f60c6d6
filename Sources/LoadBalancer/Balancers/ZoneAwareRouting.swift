/// Zone-aware routing: keep calls in the client's own zone (``Instance/zone``) while that zone has
/// the capacity for its clients, and spill the rest to the other zones, as Envoy's zone-aware
/// routing does.
///
/// The rule compares two distributions over zones: where the *clients* are (``clientShares``, or by
/// default the instances' own spread, counting every instance of the set) and where the *healthy
/// instances* are (not ejected, not failing a health check):
/// - **All local** while the local zone's share of healthy instances is at least its share of
///   clients.
/// - **Spill** otherwise: the local zone takes `healthy share / client share` of the calls, and the
///   rest goes to the other zones in proportion to their spare capacity (healthy share above client
///   share); to all other zones by their healthy share when none has spare capacity.
/// - **Off** (calls spread over every usable instance, as without zones) when the set has fewer
///   than ``minimumClusterSize`` instances, or no healthy instance in the local zone.
///
/// Instances without a zone are in the zone `""`. Give the rule to any balancer
/// (`P2CBalancer(cache, zones: ZoneAwareRouting(localZone: "eu-west-1a"))`): it first chooses a zone
/// by these shares, then picks inside it as it always does. Keyed picks of ``ConsistentHashBalancer``
/// (`pick(forKey:)`, keyed ``Retry`` calls) keep their affinity and ignore zones.
public struct ZoneAwareRouting: Sendable, Hashable {
    /// The client's own zone.
    public var localZone: String
    /// The share of the clients in each zone (any positive scale; normalised), or `nil`: the
    /// clients are spread like the instances.
    public var clientShares: [String: Double]?
    /// The fewest instances for which zones count. Default 6 (Envoy's default).
    public var minimumClusterSize: Int

    /// Creates a rule.
    ///
    /// - Parameters:
    ///   - localZone: The client's zone.
    ///   - clientShares: Where the clients are, by zone; `nil` (the default): like the instances.
    ///   - minimumClusterSize: The fewest instances for which zones count. Default 6.
    public init(localZone: String, clientShares: [String: Double]? = nil, minimumClusterSize: Int = 6) {
        self.localZone = localZone
        self.clientShares = clientShares
        self.minimumClusterSize = minimumClusterSize
    }

    /// The share of calls each zone gets, or `nil` when zones do not count (see the type's rule).
    ///
    /// - Parameters:
    ///   - healthy: The healthy instances in each zone.
    ///   - total: All the instances in each zone.
    public func shares(healthy: [String: Int], total: [String: Int]) -> [String: Double]? {
        let totalCount = total.values.reduce(0, +)
        let healthyCount = healthy.values.reduce(0, +)
        guard totalCount >= max(1, minimumClusterSize), healthyCount > 0, healthy[localZone, default: 0] > 0 else { return nil }
        let upstream = healthy.mapValues { Double($0) / Double(healthyCount) }
        let clients: [String: Double]
        if let clientShares {
            let sum = clientShares.values.filter { $0 > 0 }.reduce(0, +)
            clients = sum > 0 ? clientShares.mapValues { max(0, $0) / sum } : [:]
        } else {
            clients = total.mapValues { Double($0) / Double(totalCount) }
        }
        let localUpstream = upstream[localZone, default: 0]
        let localClients = clients[localZone, default: 0]
        if localUpstream >= localClients { return [localZone: 1] }
        let localShare = localUpstream / localClients
        let others = upstream.filter { $0.key != localZone && $0.value > 0 }
        var spare = others.mapValues { _ in 0.0 }
        for (zone, share) in others { spare[zone] = max(0, share - clients[zone, default: 0]) }
        var spareSum = spare.values.reduce(0, +)
        if spareSum <= 0 {
            spare = others
            spareSum = others.values.reduce(0, +)
        }
        var result = [localZone: localShare]
        guard spareSum > 0 else { return [localZone: 1] }
        for (zone, capacity) in spare where capacity > 0 { result[zone] = (1 - localShare) * capacity / spareSum }
        return result
    }
}

/// A snapshot's zone routing: one strategy table per zone that takes calls, and the choice of a
/// zone by its share.
@usableFromInline
package struct ZoneTables<Table: Sendable>: Sendable {
    /// The tables of the zones that take calls.
    @usableFromInline package let tables: [Table]
    /// Chooses an index of `tables` by the zones' shares.
    @usableFromInline package let choice: AliasTable
    /// The zones of `tables`, in order (`""` for instances without one), and their shares in `0...1`
    /// (read by observers only).
    package let names: [String]
    package let shares: [Double]
}
