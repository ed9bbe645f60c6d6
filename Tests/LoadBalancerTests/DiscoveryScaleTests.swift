import Synchronization
import Testing

@testable import LoadBalancer

/// Issue 23: a publisher that changes faster than the cache applies its sets, and the balancers'
/// snapshots built off the pick path.
@Suite("Discovery at scale")
struct DiscoveryScaleTests {
    /// A publisher over a broadcaster the test publishes to.
    struct BroadcastPublisher: InstancePublisher {
        let broadcaster: InstanceBroadcaster
        func updates() -> InstanceUpdates { broadcaster.updates() }
    }

    /// A one-shot gate a factory waits at.
    final class Gate: Sendable {
        private let state = Mutex<(open: Bool, entered: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, false, []))
        var entered: Bool { state.withLock { $0.entered } }
        func wait() async {
            await withCheckedContinuation { continuation in
                let resume = state.withLock { state -> Bool in
                    state.entered = true
                    if state.open { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if resume { continuation.resume() }
            }
        }
        func open() {
            let waiters = state.withLock { state in
                state.open = true
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    @Test("100,000 sets published while the cache applies one are coalesced: it applies the newest next, nothing queues")
    func floodIsCoalesced() async throws {
        let broadcaster = InstanceBroadcaster()
        let gate = Gate()
        // The first set's endpoint is made only when the gate opens: the cache is held inside its
        // first update while the publisher floods.
        let cache = EndpointCache<Int, Int>(
            publisher: BroadcastPublisher(broadcaster: broadcaster),
            factory: EndpointFactory { instance in
                if instance.port == 1 { await gate.wait() }
                return ManagedEndpoint(Endpoint(instance: instance) { $0 })
            })
        let run = Task { try await cache.run() }
        defer { run.cancel() }

        broadcaster.publish(instances([1]))
        try await waitUntil { gate.entered }

        let published = 100_000
        for i in 0..<published {
            // Every set differs from the one before: two instances, the second moving.
            broadcaster.publish(instances([2, 3 + i % 50_000]))
            // Let other tests' tasks run now and then (the cache itself waits at the gate).
            if i % 1_000 == 0 { await Task.yield() }
        }
        let last = instances([2, 3 + (published - 1) % 50_000])
        // The subscriber holds one update it has not taken (the newest); every other was dropped.
        #expect(broadcaster.coalescedUpdates == published - 1)

        gate.open()
        try await waitUntil { cache.snapshot.instances == last }
        // The first set, then the newest: nothing in between was applied.
        #expect(cache.discoveryStatus.updates == 2)
        #expect(broadcaster.coalescedUpdates == published - 1)
    }

    @Test("a balancer builds the snapshot of a new set before it is published: the first pick after takes it as built")
    func snapshotBuiltBeforePublish() async throws {
        let cache = EndpointCache<Int, Int>(
            factory: EndpointFactory { instance in ManagedEndpoint(Endpoint(instance: instance) { $0 }) })
        await cache.update(with: instances(1...3))
        let balancer = RoundRobinBalancer(cache)
        _ = try balancer.pick()
        let before = balancer.core.currentSnapshot()

        await cache.update(with: instances(1...4))
        // Built during the update: the balancer's newest snapshot is already the new set's.
        let built = balancer.core.builtSnapshot
        #expect(built != nil)
        #expect(built !== before)
        #expect(built?.set.instances.map(\.port) == [1, 2, 3, 4])
        #expect(built?.setVersion == cache.version)
        // The pick path takes that very snapshot.
        #expect(balancer.core.currentSnapshot() === built)
        #expect(try balancer.pick().generation == cache.snapshot.generation)
    }
}
