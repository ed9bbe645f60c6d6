import LoadBalancer
import LoadBalancerTestKit
import Testing

@Suite("ManualPublisher", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct ManualPublisherTests {
    @Test("says nothing until told, then sends whole sets ordered by id, the current one first")
    func silentThenSets() async throws {
        let publisher = ManualPublisher()
        #expect(publisher.current == nil)
        var early = publisher.updates().makeAsyncIterator()
        try await publisher.waitForSubscribers()

        try publisher.publish(parsing: ["10.0.0.2:80", "10.0.0.1:80"])
        let first = try #require(await early.next())
        #expect(first.instances.map(\.id) == ["10.0.0.1:80", "10.0.0.2:80"])
        #expect(first.error == nil)

        var late = publisher.updates().makeAsyncIterator()
        #expect(await late.next()?.instances.map(\.id) == ["10.0.0.1:80", "10.0.0.2:80"], "a new subscriber gets the current set")
        #expect(publisher.subscriptionCount == 2)
        #expect(publisher.subscriberCount == 2)
    }

    @Test("a failure keeps the last good set and carries the error; a recovery clears it")
    func failures() async throws {
        let publisher = ManualPublisher(try ["10.0.0.1:80"].map { try Instance(parsing: $0) })
        var updates = publisher.updates().makeAsyncIterator()
        _ = await updates.next()

        publisher.fail(message: "connection refused")
        let failed = try #require(await updates.next())
        #expect(failed.instances.map(\.id) == ["10.0.0.1:80"])
        #expect(failed.error?.code == .registryUnavailable)
        #expect(failed.error?.message == "connection refused")

        publisher.fail(DiscoveryError(code: .notFound, message: "no such service"))
        #expect(await updates.next()?.error?.code == .notFound)

        try publisher.publish(parsing: ["10.0.0.3:80"])
        let recovered = try #require(await updates.next())
        #expect(recovered.instances.map(\.id) == ["10.0.0.3:80"])
        #expect(recovered.error == nil)
    }

    @Test("an address that does not parse throws and sends nothing")
    func badAddress() async throws {
        let publisher = ManualPublisher()
        #expect(throws: InstanceParseError.self) { try publisher.publish(parsing: ["10.0.0.1:80", "no port"]) }
        #expect(publisher.current == nil)
    }

    @Test("the staleness timer runs on the clock it is given")
    func stalenessOnManualClock() async throws {
        let clock = ManualClock()
        let publisher = ManualPublisher(staleness: .invalidate(after: .seconds(30)), clock: clock)
        try publisher.publish(parsing: ["10.0.0.1:80"])
        publisher.fail(message: "down")
        try await clock.waitForSleepers(count: 1)
        #expect(publisher.current?.instances.count == 1, "kept until the limit")

        clock.advance(by: .seconds(30))
        try await pollUntil("the kept set invalidated", timeout: .seconds(30)) { publisher.current?.error?.code == .invalidated }
        #expect(publisher.current?.instances.isEmpty == true)
        #expect(publisher.current?.error?.code == .invalidated)
    }

    @Test("an endpoint cache follows it, and finish ends the cache's subscription")
    func drivesACache() async throws {
        let publisher = ManualPublisher()
        let factory = RecordingEndpointFactory<Int, String> { instance, _ in instance.id }
        let cache = EndpointCache(publisher: publisher, factory: factory.factory)
        let run = Task { try await cache.run() }
        try await publisher.waitForSubscribers()
        #expect(cache.discoveryStatus.isReady == false, "nothing published yet")

        try publisher.publish(parsing: ["127.0.0.1:1", "127.0.0.1:2"])
        try await cache.waitUntilReady(timeout: .seconds(30))
        #expect(cache.snapshot.instances.map(\.port) == [1, 2])

        publisher.finish()
        try await run.value
        #expect(publisher.subscriberCount == 0)
        #expect(factory.closed.sorted() == ["127.0.0.1:1", "127.0.0.1:2"], "the cache shut down and closed its endpoints")
        // Later subscriptions end at once; later sets are ignored.
        try publisher.publish(parsing: ["127.0.0.1:3"])
        var after = publisher.updates().makeAsyncIterator()
        #expect(await after.next() == nil)
    }

    @Test("a wait for subscribers that never come ends with a timedOut error")
    func waitTimesOut() async throws {
        let publisher = ManualPublisher()
        let error = try await #require(throws: TestKitError.self) {
            try await publisher.waitForSubscribers(count: 1, timeout: .milliseconds(20))
        }
        #expect(error.code == .timedOut)
        #expect(error.message.contains("0 live"), "\(error)")
    }
}
