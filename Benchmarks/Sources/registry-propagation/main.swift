// Propagation latency: from a registry write to a balancer's endpoint set holding the change.
//
//   swift run -c release registry-propagation [etcd|zookeeper] [changes]
//
// Starts a real registry on loopback (Debian's etcd-server, or ZooKeeper 3.8 with java), runs the
// registry's publisher feeding an EndpointCache, and times `changes` writes (alternately the
// registration of a new instance and the removal of the previous one), each from just before the
// write call to the moment the cache publishes a set that holds the change (an
// EndpointSetObserver sees it), with 100 other instances registered throughout. Prints p50, p90,
// p99 and max.
import Foundation
import LoadBalancer
import LoadBalancerEtcd
import LoadBalancerTestServers
import LoadBalancerZooKeeper

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

let arguments = Array(CommandLine.arguments.dropFirst())
let registry = arguments.first ?? "etcd"
let changes = arguments.dropFirst().first.flatMap(Int.init) ?? 200
let baseline = 100

/// A registry under test: its services, its publisher, and how to add and remove instance `i`.
struct Registry {
    var services: [@Sendable () async -> Void]
    var publisher: any InstancePublisher
    var ready: @Sendable () async throws -> Void
    var add: @Sendable (Int, String) async throws -> Void
    var remove: @Sendable (Int) async throws -> Void
    var stop: @Sendable () -> Void
}

func makeRegistry(_ name: String) async throws -> Registry {
    switch name {
    case "etcd":
        let cluster = try await EtcdCluster.start()
        let client = try EtcdClient(configuration: cluster.configuration)
        let publisher = EtcdPublisher(prefix: "/bench/", client: client)
        return Registry(
            services: [{ try? await client.run() }, { try? await publisher.run() }],
            publisher: publisher,
            ready: {},
            add: { i, value in try await client.put("/bench/\(i)", value: value) },
            remove: { i in try await client.delete("/bench/\(i)") },
            stop: { cluster.destroy() }
        )
    case "zookeeper":
        let ensemble = try await ZooKeeperEnsemble.start()
        let client = ZooKeeperClient(configuration: ensemble.configuration())
        let publisher = ZooKeeperPublisher(path: "/bench", client: client)
        return Registry(
            services: [{ try? await client.run() }, { try? await publisher.run() }],
            publisher: publisher,
            ready: { try await eventually("connected") { client.isConnected } },
            add: { i, value in try await client.create("/bench/\(i)", data: Array(value.utf8), createParents: true) },
            remove: { i in try await client.delete("/bench/\(i)") },
            stop: { ensemble.destroy() }
        )
    default:
        print("unknown registry '\(name)' (expected etcd or zookeeper)")
        exit(2)
    }
}

let under = try await makeRegistry(registry)
let factory = EndpointFactory<Int, Int>.calling { _, request in request }
let cache = EndpointCache(publisher: under.publisher, factory: factory)
let watcher = SetWatcher()
cache.addObserver(watcher)

let samples = try await withThrowingTaskGroup(of: Void.self) { group -> [Duration] in
    for service in under.services { group.addTask { await service() } }
    group.addTask { try await cache.run() }
    defer { group.cancelAll() }
    try await under.ready()
    await cache.waitUntilReady()

    var sets = watcher.sets.makeAsyncIterator()
    // A realistic set to change: 100 instances registered before the measured changes.
    for i in 0..<baseline { try await under.add(100_000 + i, "127.0.0.2:\(10_000 + i)") }
    while let (_, ids) = await sets.next(), ids.count < baseline {}
    var samples: [Duration] = []
    for i in 0..<changes {
        // Even: add instance i; odd: remove instance i - 1.
        if i % 2 == 0 {
            let id = "127.0.0.1:\(20_000 + i)"
            samples.append(try await time(&sets, until: { $0.contains(id) }) { try await under.add(i, id) })
        } else {
            let id = "127.0.0.1:\(20_000 + i - 1)"
            samples.append(try await time(&sets, until: { !$0.contains(id) }) { try await under.remove(i - 1) })
        }
    }
    return samples
}
under.stop()

let sorted = samples.sorted()
print(
    "\(registry) \(changes) changes (add or remove -> EndpointCache set): p50 \(ms(percentile(sorted, 0.5))), p90 \(ms(percentile(sorted, 0.9))), p99 \(ms(percentile(sorted, 0.99))), max \(ms(sorted.last!))"
)
