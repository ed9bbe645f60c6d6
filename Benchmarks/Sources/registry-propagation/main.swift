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
import RegistryBenchSupport

let arguments = Array(CommandLine.arguments.dropFirst())
let registry = arguments.first ?? "etcd"
let changes = arguments.dropFirst().first.flatMap(Int.init) ?? 200
let baseline = 100

let under = try await makeRegistry(registry)
let factory = EndpointFactory<Int, Int>.calling { _, request in request }
let cache = EndpointCache(publisher: under.publisher, factory: factory)
let watcher = SetWatcher { set in Set(set.instances.map(\.id)) }
cache.addObserver(watcher)

let samples = try await withThrowingTaskGroup(of: Void.self) { group -> [Duration] in
    group.addTask { await under.clientService() }
    group.addTask { await under.publisherService() }
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
