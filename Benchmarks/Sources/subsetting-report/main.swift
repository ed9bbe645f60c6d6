// Subsetting figures (issue 22, point 2): 1,000 clients over 100 instances, d = 10.
//
//   swift run -c release subsetting-report [clients] [instances] [d]
//
// For each scheme: connections per instance (max/mean, min/mean), the share of clients whose
// subset changes when one instance leaves (each of 10 instances in turn: mean and worst) or one
// joins, the connections moved, and the request load per instance (max/mean) when every client
// sends 1,000 requests through a balancer over its subset (an exact round robin, and a seeded
// RandomBalancer).
import LoadBalancer

let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let clientCount = arguments.count > 0 ? arguments[0] : 1_000
let instanceCount = arguments.count > 1 ? arguments[1] : 100
let d = arguments.count > 2 ? arguments[2] : 10
let requestsPerClient = 1_000

func fleet(_ count: Int) -> [Instance] {
    (0..<count).map { try! Instance(host: "10.0.\($0 / 250).\($0 % 250)", port: 8080) }.sorted()
}

/// SplitMix64, for the random baselines.
struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

func fnv(_ string: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in string.utf8 {
        hash ^= UInt64(byte)
        hash = hash &* 0x0000_0100_0000_01b3
    }
    return hash
}

struct Scheme {
    var name: String
    /// Every client's subset of a set.
    var subsets: ([Instance]) -> [[Instance]]
}

let size = try SubsetSize.fixed(d)
let schemes: [Scheme] = [
    Scheme(name: "indexed (ring, bounded load 1.1)") { instances in
        (0..<clientCount).map { try! Subsetting.indexed(client: $0, of: clientCount, size: size).subset(of: instances) }
    },
    Scheme(name: "indexed, no bound (load bound 1e9)") { instances in
        (0..<clientCount).map { try! Subsetting.indexed(client: $0, of: clientCount, size: size, loadBound: 1e9).subset(of: instances) }
    },
    Scheme(name: "hashed client id (ring)") { instances in
        (0..<clientCount).map { try! Subsetting.hashed(clientID: "client-\($0).example", size: size).subset(of: instances) }
    },
    Scheme(name: "random, seeded top-d by hash(seed, id)") { instances in
        (0..<clientCount).map { client in
            var random = SplitMix(state: UInt64(client))
            let seed = random.next()
            var ranked = instances.map { instance -> (UInt64, Instance) in
                var mixer = SplitMix(state: seed ^ fnv(instance.id))
                return (mixer.next(), instance)
            }
            ranked.sort { $0.0 < $1.0 }
            return ranked.prefix(d).map(\.1).sorted()
        }
    },
    Scheme(name: "random, redrawn shuffle") { instances in
        (0..<clientCount).map { client in
            var random = SplitMix(state: UInt64(client))
            var all = instances
            for index in 0..<min(d, all.count) {
                all.swapAt(index, index + Int(random.next() % UInt64(all.count - index)))
            }
            return all.prefix(d).sorted()
        }
    },
]

func ratio(_ value: Double) -> String {
    let scaled = (value * 1000).rounded() / 1000
    return "\(scaled)"
}

func percent(_ value: Double) -> String {
    let scaled = (value * 1000).rounded() / 10
    return "\(scaled)%"
}

print("\(clientCount) clients x \(instanceCount) instances, d = \(d); request load: \(requestsPerClient) requests per client")
print(
    "| scheme | connections max/mean | min/mean | one removed: clients changed (mean, worst of 10) | connections moved | one added: clients changed | requests max/mean, round robin | random |"
)
print("|---|---|---|---|---|---|---|---|")
let instances = fleet(instanceCount)
for scheme in schemes {
    let subsets = scheme.subsets(instances)
    var connections: [String: Int] = [:]
    for subset in subsets { for instance in subset { connections[instance.id, default: 0] += 1 } }
    let mean = Double(subsets.map(\.count).reduce(0, +)) / Double(instanceCount)
    let counts = instances.map { Double(connections[$0.id] ?? 0) }

    var changedShares: [Double] = []
    var moved: [Int] = []
    for removed in stride(from: 0, to: instanceCount, by: max(1, instanceCount / 10)) {
        var smaller = instances
        smaller.remove(at: removed)
        let after = scheme.subsets(smaller)
        var changed = 0
        var swaps = 0
        for client in 0..<clientCount where after[client] != subsets[client] {
            changed += 1
            swaps += Set(subsets[client].map(\.id)).subtracting(after[client].map(\.id)).count
        }
        changedShares.append(Double(changed) / Double(clientCount))
        moved.append(swaps)
    }
    let larger = (instances + [try Instance(host: "10.9.9.9", port: 8080)]).sorted()
    let grown = scheme.subsets(larger)
    let added = (0..<clientCount).filter { grown[$0] != subsets[$0] }.count

    var requests: [String: Int] = [:]
    var rotated: [String: Int] = [:]
    for (client, subset) in subsets.enumerated() {
        let endpoints = subset.map { Endpoint<Int, Int>(instance: $0) { $0 } }
        let random = RandomBalancer(endpoints: endpoints, seed: UInt64(client))
        let roundRobin = RoundRobinBalancer(endpoints: endpoints, start: 0, rotation: .exact)
        for _ in 0..<requestsPerClient {
            requests[try random.pickEndpoint().endpoint.id, default: 0] += 1
            rotated[try roundRobin.pickEndpoint().endpoint.id, default: 0] += 1
        }
    }
    let requestMean = Double(clientCount * requestsPerClient) / Double(instanceCount)
    let requestMax = Double(requests.values.max() ?? 0)
    let rotatedMax = Double(rotated.values.max() ?? 0)

    let meanChanged = changedShares.reduce(0, +) / Double(changedShares.count)
    let meanMoved = Double(moved.reduce(0, +)) / Double(moved.count)
    print(
        "| \(scheme.name) | \(ratio(counts.max()! / mean)) | \(ratio(counts.min()! / mean)) | \(percent(meanChanged)), \(percent(changedShares.max()!)) | \(Int(meanMoved.rounded())) | \(percent(Double(added) / Double(clientCount))) | \(ratio(rotatedMax / requestMean)) | \(ratio(requestMax / requestMean)) |"
    )
}
