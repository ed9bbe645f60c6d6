import LoadBalancer
import LoadBalancerGRPC

extension BalancerName {
    /// The ``BalancingClientTransport`` balancer of this name, for `bench --protocol grpc`; `nil`
    /// for a balancer the transport does not offer.
    var grpcChoice: BalancingClientTransport.BalancerChoice? {
        switch self {
        case .roundRobin: .roundRobin
        case .random: .random
        case .weightedRoundRobin: .weightedRoundRobin
        case .weightedRandom: .weightedRandom
        case .priority: nil
        case .p2cLeastOutstanding: .p2c(.leastOutstanding)
        case .p2cPeakEWMA: .p2c(.peakEWMA())
        case .consistentHash: .consistentHash()
        }
    }

    /// The balancers `--protocol grpc` accepts.
    static var grpcHelpList: String { allCases.filter { $0.grpcChoice != nil }.map(\.rawValue).joined(separator: ", ") }

    /// The message for a balancer `--protocol grpc` does not accept.
    static func noGRPCEquivalent(_ name: BalancerName) -> String {
        "--balancer \(name.rawValue) has no gRPC equivalent in the balancing transport; with --protocol grpc use one of: \(grpcHelpList)"
    }
}
