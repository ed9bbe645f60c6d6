import LoadBalancer
import LoadBalancerTestKit
import Logging
import ServiceLifecycle
import Synchronization
import Testing

@Suite("Lifecycle", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct LifecycleTests {
    @Test("withLoadBalancer runs discovery for the closure, then closes every endpoint")
    func scoped() async throws {
        let ledger = EndpointLedger()
        let publisher = FixedPublisher(instances([1, 2, 3]))
        let answers = try await withLoadBalancer(
            publisher: publisher,
            factory: ledger.factory(),
            balancer: { RoundRobinBalancer($0, start: 0) }
        ) { balancer in
            var answers = [try await balancer.call(0), try await balancer.call(0), try await balancer.call(0)]
            // Changes flow while the closure runs.
            publisher.replace(with: instances([4]))
            try await waitUntil { balancer.snapshot.instances.map(\.port) == [4] }
            answers.append(try await balancer.call(0))
            return answers
        }
        #expect(answers == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"])
        let records = ledger.snapshot
        #expect(records.count == 4)
        #expect(records.values.allSatisfy { $0.made == 1 && $0.closed == 1 })
    }

    @Test("withLoadBalancer closes endpoints when the closure throws")
    func scopedThrows() async throws {
        let ledger = EndpointLedger()
        await #expect(throws: TestFailure.self) {
            try await withLoadBalancer(
                publisher: StaticPublisher(["127.0.0.1:1", "127.0.0.1:2"]),
                factory: ledger.factory(),
                balancer: { RandomBalancer($0) }
            ) { balancer in
                _ = try await balancer.call(0)
                throw TestFailure(message: "body failed")
            }
        }
        #expect(ledger.snapshot.values.allSatisfy { $0.made == 1 && $0.closed == 1 })
        #expect(ledger.snapshot.count == 2)
    }

    @Test("the cache is a Service: it follows its publisher in a ServiceGroup and closes everything on graceful shutdown")
    func serviceGroup() async throws {
        let ledger = EndpointLedger()
        let publisher = FixedPublisher(instances([1, 2]))
        let cache = EndpointCache(publisher: publisher, factory: ledger.factory())
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: cache)], logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        )
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            await cache.waitUntilReady()
            #expect(cache.snapshot.instances.map(\.port) == [1, 2])
            publisher.replace(with: instances([2, 3]))
            try await waitUntil { cache.snapshot.instances.map(\.port) == [2, 3] }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(cache.snapshot.isEmpty)
        let records = ledger.snapshot
        #expect(records.count == 3)
        #expect(records.values.allSatisfy { $0.made == 1 && $0.closed == 1 })
    }

    @Test("a cache keeps its set through registry errors while running")
    func errorsKeepSet() async throws {
        let ledger = EndpointLedger()
        let publisher = FixedPublisher(instances([1, 2]))
        let cache = EndpointCache(publisher: publisher, factory: ledger.factory())
        let run = Task { try await cache.run() }
        await cache.waitUntilReady()
        let generation = cache.snapshot.generation
        publisher.fail(DiscoveryError(code: .registryUnavailable, message: "down"))
        publisher.replace(with: instances([1, 2, 9]))
        try await waitUntil { cache.snapshot.count == 3 }
        #expect(cache.snapshot.generation == generation &+ 1, "the failure published no change")
        run.cancel()
        try await run.value
        #expect(ledger.snapshot.values.allSatisfy { $0.closed == 1 })
    }
}
