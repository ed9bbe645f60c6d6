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

    func make<Request, Response>(
        _ endpoints: EndpointCache<Request, Response>,
        ejection: OutlierDetector?
    ) -> AnyBalancer<Request, Response> {
        switch self {
        // The CLI keeps the exact rotation: its runs are small and their split should be exact.
        case .roundRobin: AnyBalancer(RoundRobinBalancer(endpoints, rotation: .exact, ejection: ejection))
        case .random: AnyBalancer(RandomBalancer(endpoints, ejection: ejection))
        case .weightedRoundRobin: AnyBalancer(WeightedRoundRobinBalancer(endpoints, ejection: ejection))
        case .weightedRandom: AnyBalancer(WeightedRandomBalancer(endpoints, ejection: ejection))
        case .priority: AnyBalancer(PriorityBalancer(endpoints, ejection: ejection))
        case .p2cLeastOutstanding: AnyBalancer(P2CBalancer(endpoints, metric: .leastOutstanding, ejection: ejection))
        case .p2cPeakEWMA: AnyBalancer(P2CBalancer(endpoints, metric: .peakEWMA(), ejection: ejection))
        case .consistentHash: AnyBalancer(ConsistentHashBalancer(endpoints, ejection: ejection))
        }
    }
}
