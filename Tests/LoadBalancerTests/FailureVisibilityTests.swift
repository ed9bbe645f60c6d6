import LoadBalancer
import LoadBalancerTestKit
import Synchronization
import Testing

@Suite("Failures are visible: discovery status, readiness, bounded errors", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct FailureVisibilityTests {
    @Test("registry failures alone do not make the cache ready; the status says why, and since when")
    func statusThroughFailures() async throws {
        let publisher = ManualPublisher() // a registry that has not answered yet
        let cache = EndpointCache(publisher: publisher, factory: EndpointLedger().factory())
        let run = Task { try await cache.run() }
        defer { run.cancel() }
        #expect(cache.discoveryStatus.isReady == false)
        #expect(cache.discoveryStatus.updates == 0)

        publisher.fail(DiscoveryError(code: .registryUnavailable, message: "connection refused"))
        try await waitUntil { cache.discoveryStatus.updates == 1 }
        let down = cache.discoveryStatus
        #expect(down.isReady == false)
        #expect(down.isStale)
        #expect(down.consecutiveFailures == 1)
        #expect(down.lastError?.message == "connection refused")
        let firstFailure = try #require(down.staleSince)
        #expect(down.lastErrorAt == firstFailure)
        #expect(down.description.hasPrefix("not ready, stale for"), "\(down)")

        publisher.fail(DiscoveryError(code: .registryUnavailable, message: "timed out"))
        try await waitUntil { cache.discoveryStatus.updates == 2 }
        #expect(cache.discoveryStatus.staleSince == firstFailure, "stale since the first failure of the run")
        #expect(cache.discoveryStatus.consecutiveFailures == 2)
        #expect(cache.discoveryStatus.lastError?.message == "timed out")

        publisher.publish(instances([1, 2]))
        await cache.waitUntilReady()
        let up = cache.discoveryStatus
        #expect(up.isReady)
        #expect(up.isStale == false)
        #expect(up.staleSince == nil)
        #expect(up.consecutiveFailures == 0)
        #expect(up.lastError?.message == "timed out", "the last error stays visible after recovery")
        #expect(try #require(up.lastSuccessAt) >= firstFailure)
        #expect(cache.snapshot.instances.map(\.port) == [1, 2], "ready means the set is applied")

        // A later outage keeps the set and the readiness, and is stale again.
        publisher.fail(DiscoveryError(code: .registryUnavailable, message: "gone again"))
        try await waitUntil { cache.discoveryStatus.isStale }
        #expect(cache.discoveryStatus.isReady)
        #expect(cache.snapshot.count == 2)
    }

    @Test("the staleness timer's invalidation shows in the status, and a recovery clears it")
    func invalidationInStatus() async throws {
        let publisher = FixedPublisher(instances([1]), staleness: .invalidate(after: .zero))
        let cache = EndpointCache(publisher: publisher, factory: EndpointLedger().factory())
        let run = Task { try await cache.run() }
        defer { run.cancel() }
        await cache.waitUntilReady()
        publisher.fail(DiscoveryError(code: .registryUnavailable, message: "down"))
        try await waitUntil { cache.discoveryStatus.isInvalidated }
        #expect(cache.snapshot.isEmpty)
        #expect(cache.discoveryStatus.lastError?.code == .invalidated)
        publisher.replace(with: instances([1]))
        try await waitUntil { !cache.discoveryStatus.isStale }
        #expect(cache.discoveryStatus.isInvalidated == false)
    }

    @Test("bad entries are recorded as the last error without making the set stale")
    func invalidInstancesInStatus() async throws {
        let publisher = StaticPublisher(["127.0.0.1:1", "nonsense"])
        let cache = EndpointCache(publisher: publisher, factory: EndpointLedger().factory())
        let run = Task { try await cache.run() }
        defer { run.cancel() }
        await cache.waitUntilReady()
        let status = cache.discoveryStatus
        #expect(status.isReady)
        #expect(status.isStale == false)
        #expect(status.lastError?.code == .invalidInstances)
    }

    @Test("waitUntilReady(timeout:) says why the cache is not ready, with the registry's last error as cause")
    func waitTimeoutSaysWhy() async throws {
        let clock = ManualClock()
        let publisher = ManualPublisher() // a registry that has not answered yet
        let cache = EndpointCache(publisher: publisher, factory: EndpointLedger().factory())
        let run = Task { try await cache.run() }
        defer { run.cancel() }

        // Nothing from the publisher yet.
        let quiet = Task { try await cache.waitUntilReady(timeout: .seconds(5), clock: clock) }
        try await waitUntil { clock.sleeperCount == 1 }
        clock.advance(by: .seconds(5))
        let first = try #require(await #expect(throws: DiscoveryError.self) { try await quiet.value })
        #expect(first.code == .notReady)
        #expect(first.message == "not ready after 5s: no update from the publisher yet", "\(first)")
        #expect(first.cause == nil)

        // The registry failing.
        publisher.fail(DiscoveryError(code: .registryUnavailable, message: "connection refused"))
        try await waitUntil { cache.discoveryStatus.updates == 1 }
        let failing = Task { try await cache.waitUntilReady(timeout: .seconds(5), clock: clock) }
        try await waitUntil { clock.sleeperCount == 1 }
        clock.advance(by: .seconds(5))
        let second = try #require(await #expect(throws: DiscoveryError.self) { try await failing.value })
        #expect(second.code == .notReady)
        #expect(second.message.contains("the registry has failed 1 time in a row"), "\(second)")
        #expect((second.cause as? DiscoveryError)?.message == "connection refused")

        // Ready before the timeout: returns, and the timer is cancelled.
        let ready = Task { try await cache.waitUntilReady(timeout: .seconds(5), clock: clock) }
        try await waitUntil { clock.sleeperCount == 1 }
        publisher.publish(instances([1]))
        try await ready.value
        try await waitUntil { clock.sleeperCount == 0 }
    }

    @Test("waitUntilReady honours cancellation: a timeout wrapped around it ends")
    func waitHonoursCancellation() async throws {
        let cache = EndpointCache(publisher: ManualPublisher(), factory: EndpointLedger().factory())
        let run = Task { try await cache.run() }
        defer { run.cancel() }

        let plain = Task { await cache.waitUntilReady() }
        plain.cancel()
        await plain.value
        #expect(cache.discoveryStatus.isReady == false)

        let clock = ManualClock()
        let throwing = Task { try await cache.waitUntilReady(timeout: .seconds(3600), clock: clock) }
        try await waitUntil { clock.sleeperCount == 1 }
        throwing.cancel()
        await #expect(throws: CancellationError.self) { try await throwing.value }

        // A user's own timeout around the plain wait (a task group racing a sleep) ends too.
        let timedOut = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await cache.waitUntilReady()
                return false
            }
            group.addTask {
                try? await clock.sleep(for: .seconds(1))
                return true
            }
            try? await waitUntil { clock.sleeperCount == 1 }
            clock.advance(by: .seconds(1))
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        #expect(timedOut)
    }

    @Test("withLoadBalancer waits for a set while the registry fails; cancelling it ends it without running the body")
    func withLoadBalancerCancellable() async throws {
        let publisher = ManualPublisher() // a registry that has not answered yet
        publisher.fail(DiscoveryError(code: .registryUnavailable, message: "down"))
        let ran = Counter()
        let call = Task {
            try await withLoadBalancer(
                publisher: publisher,
                factory: EndpointLedger().factory(),
                balancer: { RoundRobinBalancer($0) }
            ) { _ in ran.increment() }
        }
        try await waitUntil { publisher.subscriberCount == 1 }
        call.cancel()
        await #expect(throws: CancellationError.self) { try await call.value }
        #expect(ran.value == 0, "the body never ran")
    }

    @Test("a cache that shuts down before it was ready releases its waiters")
    func shutdownReleasesWaiters() async throws {
        let publisher = ManualPublisher() // a registry that has not answered yet
        let cache = EndpointCache(publisher: publisher, factory: EndpointLedger().factory())
        let run = Task { try await cache.run() }
        let waiter = Task { try await cache.waitUntilReady(timeout: .seconds(3600)) }
        publisher.finish()
        try await run.value
        let error = try #require(await #expect(throws: DiscoveryError.self) { try await waiter.value })
        #expect(error.code == .notReady)
        #expect(error.message.hasPrefix("shut down before it was ready"), "\(error)")
        #expect(cache.discoveryStatus.isShutDown)
    }

    @Test("a set given by hand makes the cache ready")
    func manualUpdateIsReady() async throws {
        let cache = EndpointCache(factory: EndpointLedger().factory())
        #expect(cache.discoveryStatus.isReady == false)
        await cache.update(with: instances([1]))
        try await cache.waitUntilReady(timeout: .seconds(60))
        #expect(cache.discoveryStatus.isReady)
    }

    @Test("an empty instance id is refused, as the string and registry forms refuse it")
    func emptyID() throws {
        let error = try #require(throws: InstanceParseError.self) { try Instance(host: "127.0.0.1", port: 80, id: "") }
        #expect(error.code == .emptyID)
        #expect(throws: InstanceParseError.self) { try Instance(registryValue: Array(#"{"host":"h","port":1,"id":""}"#.utf8)) }
        #expect(try Instance(host: "127.0.0.1", port: 80, id: "a").id == "a")
        #expect(try Instance(host: "127.0.0.1", port: 80).id == "127.0.0.1:80")
    }

    @Test("RetryError's description stays bounded; every attempt stays available as data")
    func boundedRetryError() throws {
        let instance = try Instance(host: "10.0.0.1", port: 80)
        let attempts = (1...999).map {
            RetryError.Attempt(number: $0, instance: instance, error: TestFailure(message: "refused \($0)"), duration: .milliseconds(1))
        }
        let error = RetryError(reason: .attemptsExhausted, attempts: attempts, timeout: .seconds(10))
        let text = error.description
        #expect(text.utf8.count < 1_000, "\(text.utf8.count) bytes")
        #expect(text.hasPrefix("all 999 attempts failed: #1 10.0.0.1:80 after 1ms: refused 1; #2 "))
        #expect(text.contains("; ... 993 more attempts ...; #997 10.0.0.1:80"))
        #expect(text.hasSuffix("#999 10.0.0.1:80 after 1ms: refused 999"))
        #expect(error.attempts.count == 999)
        #expect((error.attempts[499].error as? TestFailure)?.message == "refused 500")

        // A few attempts are all listed; a long error text is cut.
        let few = RetryError(reason: .attemptsExhausted, attempts: Array(attempts.prefix(8)), timeout: .seconds(10))
        #expect(few.description.contains("#8 10.0.0.1:80"))
        #expect(!few.description.contains("more attempt"))
        let long = RetryError(
            reason: .notRetryable,
            attempts: [
                RetryError.Attempt(
                    number: 1, instance: nil, error: TestFailure(message: String(repeating: "x", count: 100_000)), duration: .zero)
            ],
            timeout: .seconds(1)
        )
        #expect(long.description.utf8.count < RetryError.describedAttemptLength + 100)
        #expect(long.description.hasSuffix("x..."))
    }
}
