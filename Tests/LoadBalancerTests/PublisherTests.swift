import LoadBalancer
import LoadBalancerTestKit
import Synchronization
import Testing

@Suite("Publishers")
struct PublisherTests {
    @Test("a new subscriber gets the current set first, then every change")
    func currentFirst() async throws {
        let publisher = FixedPublisher(instances([2, 1]))
        var iterator = publisher.updates().makeAsyncIterator()
        let first = try #require(await iterator.next())
        #expect(first.instances.map(\.port) == [1, 2])
        #expect(first.error == nil)

        publisher.replace(with: instances([3]))
        let second = try #require(await iterator.next())
        #expect(second.instances.map(\.port) == [3])

        // A later subscriber starts at the current set.
        var late = publisher.updates().makeAsyncIterator()
        #expect(await late.next()?.instances.map(\.port) == [3])
    }

    @Test("whole sets are ordered and unique by id")
    func orderedUnique() async throws {
        let a = try Instance(host: "b", port: 1)
        let b = try Instance(host: "a", port: 1)
        let duplicate = try Instance(host: "b", port: 1, weight: 9)
        let publisher = FixedPublisher([a, b, duplicate])
        var iterator = publisher.updates().makeAsyncIterator()
        let update = try #require(await iterator.next())
        #expect(update.instances.map(\.id) == ["a:1", "b:1"])
        #expect(update.instances[1].weight == 1, "the first of duplicate ids wins")
    }

    @Test("a failure keeps the last good set and carries the error in band")
    func failureKeepsLastGood() async throws {
        let publisher = FixedPublisher(instances([1, 2]))
        var iterator = publisher.updates().makeAsyncIterator()
        _ = await iterator.next()

        publisher.fail(DiscoveryError(code: .registryUnavailable, message: "connection refused"))
        let failed = try #require(await iterator.next())
        #expect(failed.instances.map(\.port) == [1, 2])
        #expect(failed.error?.code == .registryUnavailable)
        #expect(failed.isFailure)

        publisher.replace(with: instances([3]))
        let recovered = try #require(await iterator.next())
        #expect(recovered.instances.map(\.port) == [3])
        #expect(recovered.error == nil)
    }

    @Test("invalidate-after: a timer from the first failure drops the set, even when no failure follows")
    func invalidateAfter() async throws {
        let clock = ManualClock()
        let broadcaster = InstanceBroadcaster(staleness: .invalidate(after: .seconds(30)), clock: clock)
        broadcaster.publish(instances([1, 2]))
        var iterator = broadcaster.updates().makeAsyncIterator()
        _ = await iterator.next()

        broadcaster.fail(DiscoveryError(code: .registryUnavailable, message: "first")) // t = 0: the timer starts
        #expect(await iterator.next()?.instances.count == 2)
        try await waitUntil { clock.sleeperCount == 1 }
        #expect(clock.sleeperDelays == [.seconds(30)])

        clock.advance(by: .seconds(20))
        broadcaster.fail(DiscoveryError(code: .registryUnavailable, message: "second")) // t = 20 s
        let second = try #require(await iterator.next())
        #expect(second.instances.count == 2)
        #expect(second.error?.message == "second")
        #expect(clock.sleeperDelays == [.seconds(10)], "a later failure does not restart the timer")

        // The publisher goes quiet: the timer alone drops the set at t = 30 s.
        clock.advance(by: .seconds(10))
        let invalidated = try #require(await iterator.next())
        #expect(invalidated.instances.isEmpty)
        #expect(invalidated.error?.code == .invalidated)
        let cause = try #require(invalidated.error?.cause as? DiscoveryError)
        #expect(cause.message == "first", "the cause is the first failure of the run")
        #expect(broadcaster.current?.instances.isEmpty == true)

        // Later failures keep the set empty; the cause stays the first failure, the newest is named.
        broadcaster.fail(DiscoveryError(code: .registryUnavailable, message: "third"))
        let third = try #require(await iterator.next())
        #expect(third.instances.isEmpty)
        #expect(third.error?.code == .invalidated)
        #expect((third.error?.cause as? DiscoveryError)?.message == "first")
        #expect(third.error?.message.contains("third") == true)

        // A success ends the run; a new run starts its own timer.
        broadcaster.publish(instances([5]))
        #expect(await iterator.next()?.instances.map(\.port) == [5])
        clock.advance(by: .seconds(100))
        broadcaster.fail(DiscoveryError(code: .registryUnavailable, message: "again"))
        #expect(await iterator.next()?.instances.map(\.port) == [5], "a new run of failures starts its own count")
        try await waitUntil { clock.sleeperCount == 1 }
        #expect(clock.sleeperDelays == [.seconds(30)])
    }

    @Test("a success before the limit cancels the staleness timer")
    func successCancelsTimer() async throws {
        let clock = ManualClock()
        let broadcaster = InstanceBroadcaster(staleness: .invalidate(after: .seconds(30)), clock: clock)
        broadcaster.publish(instances([1]))
        var iterator = broadcaster.updates().makeAsyncIterator()
        _ = await iterator.next()
        broadcaster.fail(DiscoveryError(code: .registryUnavailable, message: "down"))
        _ = await iterator.next()
        try await waitUntil { clock.sleeperCount == 1 }
        broadcaster.publish(instances([1]))
        #expect(await iterator.next()?.error == nil)
        try await waitUntil { clock.sleeperCount == 0 }
        clock.advance(by: .seconds(60))
        #expect(broadcaster.current?.instances.map(\.port) == [1])
        #expect(broadcaster.current?.error == nil)
    }

    @Test("bad entries reported beside a good set start no staleness timer")
    func invalidInstancesAreNotFailures() async throws {
        let clock = ManualClock()
        let broadcaster = InstanceBroadcaster(staleness: .invalidate(after: .zero), clock: clock)
        broadcaster.publish(instances([1]))
        broadcaster.fail(DiscoveryError(code: .invalidInstances, message: "x: bad"))
        let current = try #require(broadcaster.current)
        #expect(current.instances.map(\.port) == [1])
        #expect(current.error?.code == .invalidInstances)
        #expect(clock.sleeperCount == 0)
        // A zero limit drops the set at the first real failure.
        broadcaster.fail(DiscoveryError(code: .registryUnavailable, message: "down"))
        #expect(broadcaster.current?.instances.isEmpty == true)
        #expect(broadcaster.current?.error?.code == .invalidated)
    }

    @Test("without a policy the last good set is kept however long failures last")
    func keepForever() async throws {
        let clock = ManualClock()
        let broadcaster = InstanceBroadcaster(staleness: .keepLastGood, clock: clock)
        broadcaster.publish(instances([1]))
        var iterator = broadcaster.updates().makeAsyncIterator()
        _ = await iterator.next()
        for _ in 0..<5 {
            clock.advance(by: .seconds(3600))
            broadcaster.fail(DiscoveryError(code: .registryUnavailable, message: "down"))
            #expect(await iterator.next()?.instances.map(\.port) == [1])
            #expect(clock.sleeperCount == 0)
        }
    }

    @Test("finishing the publisher ends every subscription; cancelling a subscriber removes it")
    func termination() async throws {
        let publisher = FixedPublisher(instances([1]))
        let broadcaster = InstanceBroadcaster()
        broadcaster.publish(instances([1]))

        let consumer = Task {
            var count = 0
            for await _ in broadcaster.updates() { count += 1 }
            return count
        }
        try await waitUntil { broadcaster.subscriberCount == 1 }
        consumer.cancel()
        _ = await consumer.value
        try await waitUntil { broadcaster.subscriberCount == 0 }

        let reader = Task {
            var seen = 0
            for await _ in publisher.updates() { seen += 1 }
            return seen
        }
        publisher.finish()
        let seen = await reader.value
        #expect(seen <= 1)
        var after = publisher.updates().makeAsyncIterator()
        #expect(await after.next() == nil, "a finished publisher hands out ended sequences")
    }

    @Test("a static publisher keeps the good strings and reports the bad ones")
    func staticPublisher() async throws {
        let publisher = StaticPublisher(["127.0.0.1:8081", "[::1]:80", "nope", "127.0.0.1:0", "127.0.0.1:8080"])
        #expect(publisher.instances.map(\.id) == ["127.0.0.1:8080", "127.0.0.1:8081", "[::1]:80"])
        #expect(publisher.errors.map(\.input) == ["nope", "127.0.0.1:0"])
        #expect(publisher.errors.map(\.code) == [.missingPort, .portOutOfRange])

        var iterator = publisher.updates().makeAsyncIterator()
        let update = try #require(await iterator.next())
        #expect(update.instances.count == 3)
        let error = try #require(update.error)
        #expect(error.code == .invalidInstances)
        #expect(error.message.contains("\"nope\""))
        #expect(error.message.contains("\"127.0.0.1:0\""))

        let clean = StaticPublisher(parsing: "a:1,b:2,,")
        #expect(clean.instances.map(\.id) == ["a:1", "b:2"])
        var cleanIterator = clean.updates().makeAsyncIterator()
        #expect(await cleanIterator.next()?.error == nil)
    }
}
