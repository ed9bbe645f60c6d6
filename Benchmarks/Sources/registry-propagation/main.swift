// Propagation latency: from a registry write to a balancer's endpoint set holding the change.
//
//   swift run -c release registry-propagation [changes]
//
// Starts a real etcd on loopback (Debian's etcd-server), runs an EtcdPublisher feeding an
// EndpointCache, and times `changes` writes (alternately a put of a new instance and a delete of
// the previous one), each from just before the write call to the moment the cache publishes a
// set that holds the change (an EndpointSetObserver sees it). Prints p50, p90, p99 and max.
import Foundation
import LoadBalancer
import LoadBalancerEtcd
import LoadBalancerTestServers

/// Every set the cache publishes, with the time it was published.
final class SetWatcher: EndpointSetObserver, Sendable {
    let sets: AsyncStream<(ContinuousClock.Instant, Set<String>)>
    private let continuation: AsyncStream<(ContinuousClock.Instant, Set<String>)>.Continuation

    init() {
        (sets, continuation) = AsyncStream.makeStream()
    }

    func endpointSetWillPublish(_ set: EndpointSetView) {
        continuation.yield((ContinuousClock.now, Set(set.instances.map(\.id))))
    }
}

/// Runs `write` and returns the time until the first set published after its start that satisfies
/// `condition`.
func time(
    _ sets: inout AsyncStream<(ContinuousClock.Instant, Set<String>)>.Iterator,
    until condition: (Set<String>) -> Bool,
    _ write: () async throws -> Void,
    isolation: isolated (any Actor)? = #isolation
) async throws -> Duration {
    let start = ContinuousClock.now
    try await write()
    while let (published, ids) = await sets.next(isolation: isolation) {
        if published >= start, condition(ids) { return published - start }
    }
    throw ClusterError("the cache stopped publishing")
}

func percentile(_ sorted: [Duration], _ p: Double) -> Duration {
    sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
}

func ms(_ d: Duration) -> String {
    let value = Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15
    return String(format: "%.2f ms", value)
}

let changes = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 200

let cluster = try await EtcdCluster.start()
let client = try EtcdClient(configuration: cluster.configuration)
let publisher = EtcdPublisher(prefix: "/bench/", client: client)
let factory = EndpointFactory<Int, Int>.calling { _, request in request }
let cache = EndpointCache(publisher: publisher, factory: factory)
let watcher = SetWatcher()
cache.addObserver(watcher)

let samples = try await withThrowingTaskGroup(of: Void.self) { group -> [Duration] in
    group.addTask { await client.run() }
    group.addTask { await publisher.run() }
    group.addTask { try await cache.run() }
    defer { group.cancelAll() }
    await cache.waitUntilReady()

    var sets = watcher.sets.makeAsyncIterator()
    var samples: [Duration] = []
    var previous: String?
    for i in 0..<changes {
        // Even: add instance i; odd: remove instance i - 1.
        if i % 2 == 0 {
            let id = "127.0.0.1:\(20_000 + i)"
            samples.append(try await time(&sets, until: { $0.contains(id) }) {
                try await client.put("/bench/\(i)", value: id)
            })
            previous = "\(i)"
        } else if let key = previous {
            let id = "127.0.0.1:\(20_000 + i - 1)"
            samples.append(try await time(&sets, until: { !$0.contains(id) }) {
                try await client.delete("/bench/\(key)")
            })
        }
    }
    return samples
}
cluster.destroy()

let sorted = samples.sorted()
print("etcd \(changes) changes (put or delete -> EndpointCache set): p50 \(ms(percentile(sorted, 0.5))), p90 \(ms(percentile(sorted, 0.9))), p99 \(ms(percentile(sorted, 0.99))), max \(ms(sorted.last!))")
