import InMemoryLogging
import LoadBalancer
import LoadBalancerSimulation
import Logging
import Synchronization
import Testing

@Suite("EndpointCache")
struct EndpointCacheTests {
    @Test("ids that stay keep the same endpoint; new ids get one; the snapshot is ordered by id")
    func keepsEndpoints() async throws {
        let ledger = EndpointLedger()
        let cache = EndpointCache(factory: ledger.factory())
        await cache.update(with: instances([3, 1, 2]))
        let first = cache.snapshot
        #expect(first.instances.map(\.port) == [1, 2, 3])
        #expect(first.endpoints.map(\.instance.port) == [1, 2, 3])
        #expect(cache.version == 1, "one set published, read with one atomic load")

        await cache.update(with: instances([2, 4, 3]))
        let second = cache.snapshot
        #expect(second.instances.map(\.port) == [2, 3, 4])
        #expect(second.generation == first.generation &+ 1)
        #expect(second[0] === first[1], "port 2 keeps its endpoint object")
        #expect(second[1] === first[2], "port 3 keeps its endpoint object")
        let records = ledger.snapshot
        #expect(records.values.map(\.made).reduce(0, +) == 4, "only the new id 4 was made")
        #expect(records["127.0.0.1:1"]?.closed == 1)
        #expect(records["127.0.0.1:2"]?.closed == 0)
    }

    @Test("an update that changes an instance's fields but not its id keeps the endpoint and publishes the new fields")
    func changedFields() async throws {
        let ledger = EndpointLedger()
        let cache = EndpointCache(factory: ledger.factory())
        await cache.update(with: [try Instance(host: "h", port: 1, weight: 1)])
        let before = cache.snapshot
        await cache.update(with: [try Instance(host: "h", port: 1, weight: 5)])
        let after = cache.snapshot
        #expect(after[0] === before[0])
        #expect(after.instances[0].weight == 5)
        #expect(after.generation != before.generation)
        #expect(ledger.snapshot["h:1"]?.made == 1)

        // An identical update publishes nothing new.
        await cache.update(with: [try Instance(host: "h", port: 1, weight: 5)])
        #expect(cache.snapshot.generation == after.generation)
    }

    @Test("removed endpoints are closed exactly once, and only after they left the snapshot")
    func closesAfterLeaving() async throws {
        let ledger = EndpointLedger()
        let holder = Mutex<EndpointCache<Int, String>?>(nil)
        let cache = EndpointCache(
            factory: ledger.factory(isInSnapshot: { endpoint in
                let cache = holder.withLock { $0 }!
                return cache.snapshot.endpoints.contains { $0 === endpoint }
            })
        )
        holder.withLock { $0 = cache }
        await cache.update(with: instances(1...5))
        await cache.update(with: instances(3...5))
        await cache.update(with: instances(3...5))
        await cache.update(with: instances([5, 6]))
        await cache.shutdown()
        await cache.shutdown()

        let records = ledger.snapshot
        #expect(records.count == 6)
        for (id, record) in records {
            #expect(record.made == 1, "\(id) made once")
            #expect(record.closed == 1, "\(id) closed once")
            #expect(record.closedWhileInSnapshot == 0, "\(id) closed only after leaving the snapshot")
        }
        #expect(cache.snapshot.isEmpty)
        await cache.update(with: instances([7]))
        #expect(cache.snapshot.isEmpty, "a shut-down cache ignores updates")
        holder.withLock { $0 = nil } // the cache and its factory's closure hold each other through it
    }

    @Test("a registry change is logged once, at info; an unchanged update logs nothing")
    func changeLoggedOnce() async throws {
        let log = InMemoryLogHandler()
        var logger = Logger(label: "test", factory: { _ in log })
        logger.logLevel = .trace
        let cache = EndpointCache(factory: EndpointLedger().factory(), logger: logger)
        await cache.update(with: instances([1, 2]))
        await cache.update(with: instances([2, 3]))
        await cache.update(with: instances([2, 3]))
        let infos = log.entries.filter { $0.level == .info }
        #expect(infos.count == 2, "one line per change: \(infos.map(\.message))")
        #expect(infos.allSatisfy { "\($0.message)" == "instances changed" })
        let last = try #require(infos.last)
        #expect(last.metadata["loadbalancer.added"] == "1" && last.metadata["loadbalancer.removed"] == "1")
        #expect(last.metadata["loadbalancer.endpoints"] == "2")
        #expect(log.entries.filter { $0.level > .info }.isEmpty)
    }

    @Test("a throwing factory is logged, its instance left out, and tried again at the next update")
    func failingFactory() async throws {
        let log = InMemoryLogHandler()
        var logger = Logger(label: "test", factory: { _ in log })
        logger.logLevel = .debug
        let ledger = EndpointLedger()
        ledger.breakFactory(for: "127.0.0.1:2")
        let cache = EndpointCache(factory: ledger.factory(), logger: logger)

        await cache.update(with: instances([1, 2, 3]))
        #expect(cache.snapshot.instances.map(\.port) == [1, 3])
        #expect(cache.factoryFailures.keys.sorted() == ["127.0.0.1:2"])
        let warning = try #require(log.entries.first { $0.level == .warning })
        #expect("\(warning.message)".contains("factory failed"))
        #expect(warning.metadata["loadbalancer.instance"] == "127.0.0.1:2")
        #expect("\(warning.metadata["loadbalancer.error"] ?? "")".contains("factory refused"))

        // Still broken: tried again, still left out.
        await cache.update(with: instances([1, 2, 3]))
        #expect(cache.snapshot.instances.map(\.port) == [1, 3])
        #expect(log.entries.filter { $0.level == .warning }.count == 2)

        ledger.heal("127.0.0.1:2")
        await cache.update(with: instances([1, 2, 3]))
        #expect(cache.snapshot.instances.map(\.port) == [1, 2, 3])
        #expect(cache.factoryFailures.isEmpty)
        #expect(ledger.snapshot["127.0.0.1:2"]?.made == 1)
    }

    @Test("reading and picking stay consistent while many tasks pick and the set churns; every endpoint closed once")
    func churn() async throws {
        let ledger = EndpointLedger()
        let cache = EndpointCache(factory: ledger.factory())
        await cache.update(with: instances(1...20))
        let roundRobin = RoundRobinBalancer(cache)
        let random = RandomBalancer(cache)
        let stop = Counter()
        let mismatches = Counter()

        try await withThrowingTaskGroup(of: Int.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    var calls = 0
                    while stop.value == 0 {
                        let balancer: any Balancer<Int, String> = worker.isMultiple(of: 2) ? roundRobin : random
                        // Sets are never empty in this test, so a pick always succeeds.
                        let (endpoint, pick) = try balancer.pickEndpoint()
                        let answer = try await endpoint(0)
                        if answer != endpoint.id { mismatches.increment() }
                        if pick.index < 0 { mismatches.increment() }
                        calls += 1
                        if calls % 64 == 0 { await Task.yield() }
                    }
                    return calls
                }
            }
            group.addTask {
                var generator = SplitMix64(seed: 7)
                for _ in 0..<300 {
                    let size = Int(generator.next() % 30) + 1
                    let ports = (0..<size).map { _ in Int(generator.next() % 60) + 1 }
                    await cache.update(with: instances(ports))
                    await Task.yield()
                }
                stop.increment()
                return 0
            }
            var total = 0
            for try await calls in group { total += calls }
            #expect(total > 0)
        }
        await cache.shutdown()
        #expect(mismatches.value == 0)
        let records = ledger.snapshot
        #expect(!records.isEmpty)
        for (id, record) in records {
            #expect(record.made == record.closed, "\(id): made \(record.made), closed \(record.closed)")
        }
    }

    @Test("a fixed cache holds the given endpoints")
    func fixedCache() async throws {
        let endpoints = instances([2, 1]).map { instance in Endpoint<Int, Int>(instance: instance) { $0 + instance.port } }
        let cache = await EndpointCache(endpoints: endpoints)
        #expect(cache.snapshot.endpoints.map(\.instance.port) == [1, 2])
        #expect(cache.snapshot[0] === endpoints[1])
        #expect(try await cache.snapshot[1](40) == 42)
    }
}
