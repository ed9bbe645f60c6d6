// What registry-propagation and registry-scale share: the real registries they start on loopback
// (with a client and a publisher each), the observer that timestamps the sets an EndpointCache
// publishes, and the timing helpers.
import Foundation
import LoadBalancer
import LoadBalancerEtcd
import LoadBalancerTestServers
import LoadBalancerZooKeeper

/// Every set the cache publishes, summarized by `summarize` (called on the publishing path, so keep
/// it cheap), with the time it was about to be published (taken before the summary).
public final class SetWatcher<Summary: Sendable>: EndpointSetObserver, Sendable {
    public let sets: AsyncStream<(ContinuousClock.Instant, Summary)>
    private let continuation: AsyncStream<(ContinuousClock.Instant, Summary)>.Continuation
    private let summarize: @Sendable (EndpointSetView) -> Summary

    public init(summarize: @escaping @Sendable (EndpointSetView) -> Summary) {
        (sets, continuation) = AsyncStream.makeStream()
        self.summarize = summarize
    }

    public func endpointSetWillPublish(_ set: EndpointSetView) {
        let now = ContinuousClock.now
        continuation.yield((now, summarize(set)))
    }
}

/// Runs `write` and returns the time until the first set published after its start that satisfies
/// `condition`.
public func time<Summary>(
    _ sets: inout AsyncStream<(ContinuousClock.Instant, Summary)>.Iterator,
    until condition: (Summary) -> Bool,
    _ write: () async throws -> Void,
    isolation: isolated (any Actor)? = #isolation
) async throws -> Duration {
    let start = ContinuousClock.now
    try await write()
    while let (published, summary) = await sets.next(isolation: isolation) {
        if published >= start, condition(summary) { return published - start }
    }
    throw ClusterError("the cache stopped publishing")
}

/// The `p` quantile (0...1) of `sorted` (nearest rank).
public func percentile(_ sorted: [Duration], _ p: Double) -> Duration {
    sorted[min(sorted.count - 1, max(0, Int((Double(sorted.count) * p).rounded(.up)) - 1))]
}

/// The CPU time this process has used so far (every thread, user and system).
public func processCPUTime() -> Duration {
    var time = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time)
    return .seconds(Int64(time.tv_sec)) + .nanoseconds(Int64(time.tv_nsec))
}

/// `d` in milliseconds.
public func milliseconds(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15
}

/// `d` as `12.34 ms`.
public func ms(_ d: Duration) -> String {
    String(format: "%.2f ms", milliseconds(d))
}

/// A registry under test: its client and publisher (services to run), and how to add and remove
/// instance `i`.
public struct Registry: Sendable {
    /// The client's `run()`.
    public var clientService: @Sendable () async -> Void
    /// The publisher's `run()`.
    public var publisherService: @Sendable () async -> Void
    public var publisher: any InstancePublisher
    /// Returns once the client can take requests.
    public var ready: @Sendable () async throws -> Void
    /// Registers instance `i` with the value (`host:port`).
    public var add: @Sendable (Int, String) async throws -> Void
    /// Removes instance `i`.
    public var remove: @Sendable (Int) async throws -> Void
    /// Registers instance `i` somewhere no publisher watches (the same write as ``add``, for the
    /// writer's own CPU cost).
    public var addOutside: @Sendable (Int, String) async throws -> Void
    /// Removes what ``addOutside`` registered as `i`.
    public var removeOutside: @Sendable (Int) async throws -> Void
    /// One read of everything registered, as a single request (etcd: one Range of the whole
    /// prefix; ZooKeeper: the list of children). Returns how many there are.
    public var readAll: @Sendable () async throws -> Int
    /// ZooKeeper only: the children's list, then every child's data, with `inFlight` reads at a
    /// time. Returns the bytes of data read.
    public var readEveryChild: (@Sendable (_ inFlight: Int) async throws -> Int)?
    /// Stops the server and removes its data directory.
    public var stop: @Sendable () -> Void
}

/// Starts `name` (`etcd`: one etcd member; `zookeeper`: a standalone ZooKeeper) on loopback with
/// ports and a data directory of its own, and makes a client and a publisher of `/bench`.
public func makeRegistry(_ name: String, etcdPageSize: Int = 1_000) async throws -> Registry {
    switch name {
    case "etcd":
        let cluster = try await EtcdCluster.start()
        let client = try EtcdClient(configuration: cluster.configuration)
        let publisher = EtcdPublisher(prefix: "/bench/", client: client, pageSize: etcdPageSize)
        return Registry(
            clientService: { try? await client.run() },
            publisherService: { try? await publisher.run() },
            publisher: publisher,
            ready: {},
            add: { i, value in try await client.put("/bench/\(i)", value: value) },
            remove: { i in try await client.delete("/bench/\(i)") },
            addOutside: { i, value in try await client.put("/outside/\(i)", value: value) },
            removeOutside: { i in try await client.delete("/outside/\(i)") },
            readAll: { try await client.range(prefix: "/bench/").keyValues.count },
            readEveryChild: nil,
            stop: { cluster.destroy() }
        )
    case "zookeeper":
        let ensemble = try await ZooKeeperEnsemble.start()
        let client = ZooKeeperClient(configuration: ensemble.configuration())
        let publisher = ZooKeeperPublisher(path: "/bench", client: client)
        return Registry(
            clientService: { try? await client.run() },
            publisherService: { try? await publisher.run() },
            publisher: publisher,
            ready: {
                try await eventually("connected") { client.isConnected }
                if try await client.exists("/bench") == nil { _ = try await client.create("/bench", createParents: true) }
                if try await client.exists("/outside") == nil { _ = try await client.create("/outside", createParents: true) }
            },
            add: { i, value in _ = try await client.create("/bench/\(i)", data: Array(value.utf8)) },
            remove: { i in try await client.delete("/bench/\(i)") },
            addOutside: { i, value in _ = try await client.create("/outside/\(i)", data: Array(value.utf8)) },
            removeOutside: { i in try await client.delete("/outside/\(i)") },
            readAll: { try await client.getChildren("/bench").children.count },
            readEveryChild: { inFlight in
                let children = try await client.getChildren("/bench").children
                return try await withThrowingTaskGroup(of: Int.self) { group in
                    var bytes = 0
                    for (i, child) in children.enumerated() {
                        if i >= inFlight { bytes += try await group.next() ?? 0 }
                        group.addTask { try await client.getData("/bench/\(child)").data.count }
                    }
                    while let count = try await group.next() { bytes += count }
                    return bytes
                }
            },
            stop: { ensemble.destroy() }
        )
    default:
        throw ClusterError("unknown registry '\(name)' (expected etcd or zookeeper)")
    }
}
