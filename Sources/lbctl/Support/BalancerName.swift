import ArgumentParser
import LoadBalancer

/// The balancers `--balancer` accepts, by name.
enum BalancerName: String, CaseIterable, ExpressibleByArgument {
    case roundRobin = "round-robin"
    case random
    case weightedRoundRobin = "weighted-round-robin"
    case weightedRandom = "weighted-random"
    case priority
    case p2cLeastOutstanding = "p2c-least-outstanding"
    case p2cPeakEWMA = "p2c-peak-ewma"
    case consistentHash = "consistent-hash"

    static var helpList: String { allCases.map(\.rawValue).joined(separator: ", ") }

    /// The priority balancer's failover settings (`--overprovisioning-factor`,
    /// `--priority-panic-threshold`); `nil` keeps the library's default.
    struct PriorityOptions: Sendable, Equatable {
        var overprovisioningFactor: Double?
        var panicThreshold: Double?
    }

    /// The balancer of this name over `endpoints`, honouring `ejection` (and any health checker
    /// attached to it) and ramping new instances with `slowStart`; `priority` is for `.priority` only.
    func make<Request, Response>(
        _ endpoints: EndpointCache<Request, Response>,
        ejection: OutlierDetector?,
        slowStart: SlowStart? = nil,
        priority: PriorityOptions = PriorityOptions()
    ) -> AnyBalancer<Request, Response> {
        switch self {
        // The CLI keeps the exact rotation: its runs are small and their split should be exact.
        case .roundRobin: AnyBalancer(RoundRobinBalancer(endpoints, rotation: .exact, ejection: ejection, slowStart: slowStart))
        case .random: AnyBalancer(RandomBalancer(endpoints, ejection: ejection, slowStart: slowStart))
        case .weightedRoundRobin: AnyBalancer(WeightedRoundRobinBalancer(endpoints, ejection: ejection, slowStart: slowStart))
        case .weightedRandom: AnyBalancer(WeightedRandomBalancer(endpoints, ejection: ejection, slowStart: slowStart))
        case .priority:
            AnyBalancer(
                PriorityBalancer(
                    endpoints,
                    configuration: .defaults {
                        if let factor = priority.overprovisioningFactor { $0.overprovisioningFactor = factor }
                        if let threshold = priority.panicThreshold { $0.panicThreshold = threshold }
                    },
                    ejection: ejection,
                    slowStart: slowStart
                )
            )
        case .p2cLeastOutstanding: AnyBalancer(P2CBalancer(endpoints, metric: .leastOutstanding, ejection: ejection, slowStart: slowStart))
        case .p2cPeakEWMA: AnyBalancer(P2CBalancer(endpoints, metric: .peakEWMA(), ejection: ejection, slowStart: slowStart))
        case .consistentHash: AnyBalancer(ConsistentHashBalancer(endpoints, ejection: ejection, slowStart: slowStart))
        }
    }
}
