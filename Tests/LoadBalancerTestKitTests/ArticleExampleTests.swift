import LoadBalancer
import LoadBalancerTestKit
import Testing

// The code of the "Testing your code with the test kit" article, as written there, so that the
// article cannot drift from what compiles and passes.

struct ProfileClient<C: Clock<Duration>>: Sendable {
    let cache: EndpointCache<String, String>
    let retry: Retry<RoundRobinBalancer<String, String>, C>

    init(publisher: some InstancePublisher, factory: EndpointFactory<String, String>, clock: C) {
        cache = EndpointCache(publisher: publisher, factory: factory)
        retry = Retry(RoundRobinBalancer(cache), maxAttempts: 2, timeout: .seconds(2), clock: clock)
    }

    /// Runs the client's discovery until the task is cancelled.
    func run() async throws { try await cache.run() }

    /// The profile of `user`, once an instance of the service is known (within `timeout`).
    func profile(of user: String, timeout: Duration) async throws -> String {
        try await cache.waitUntilReady(timeout: timeout, clock: retry.clock)
        return try await retry("GET /profiles/\(user)")
    }
}

struct Refused: Error {}

@Suite("The test kit article's examples", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct ArticleExampleTests {
    @Test func callsTheInstancesTheRegistryNames() async throws {
        let publisher = ManualPublisher()
        let backends = RecordingEndpointFactory<String, String> { instance, request in
            "\(instance.port) answers \(request)"
        }
        let client = ProfileClient(publisher: publisher, factory: backends.factory, clock: ManualClock())
        let running = Task { try await client.run() }
        defer { running.cancel() }

        try await publisher.waitForSubscribers()
        try publisher.publish(parsing: ["10.0.0.1:8080", "10.0.0.2:8080"])

        _ = try await client.profile(of: "ada", timeout: .seconds(5))
        _ = try await client.profile(of: "bob", timeout: .seconds(5))
        #expect(backends.requests.map(\.request) == ["GET /profiles/ada", "GET /profiles/bob"])
        #expect(Set(backends.requests.map(\.instanceID)).isSubset(of: ["10.0.0.1:8080", "10.0.0.2:8080"]))

        // "Play an outage".
        publisher.fail(message: "connection refused")
        _ = try await client.profile(of: "ada", timeout: .seconds(5)) // still served
        #expect(backends.requests.count == 3)

        try publisher.publish(parsing: ["10.0.0.3:8080"])
        // The cache closes the endpoints of the instances that left.
        try await pollUntil("the two departed instances' endpoints closed", timeout: .seconds(30), seen: { "closed \(backends.closed)" }) {
            backends.closed.count >= 2
        }
        #expect(backends.closed.sorted() == ["10.0.0.1:8080", "10.0.0.2:8080"])
    }

    @Test func givesUpWhenNoInstanceIsKnown() async throws {
        let clock = ManualClock()
        let publisher = ManualPublisher() // never answers
        let backends = RecordingEndpointFactory<String, String> { _, _ in "" }
        let client = ProfileClient(publisher: publisher, factory: backends.factory, clock: clock)
        let running = Task { try await client.run() }
        defer { running.cancel() }

        let call = Task { try await client.profile(of: "ada", timeout: .seconds(5)) }
        try await clock.waitForSleepers(count: 1) // the readiness wait is asleep
        clock.advance(by: .seconds(5))

        let error = try await #require(throws: DiscoveryError.self) { try await call.value }
        #expect(error.code == .notReady)
        #expect(backends.requests.isEmpty)
    }

    @Test func retriesOnAnotherInstance() async throws {
        let backends = RecordingEndpointFactory<String, String> { instance, _ in
            if instance.port == 1 { throw Refused() }
            return "ok"
        }
        let cache = EndpointCache(factory: backends.factory)
        await cache.update(with: try ["10.0.0.1:1", "10.0.0.2:2"].map { try Instance(parsing: $0) })
        let balancer = RecordingBalancer(RoundRobinBalancer(cache, start: 0))
        let retry = Retry(balancer, maxAttempts: 2, timeout: .seconds(2), clock: ManualClock())

        #expect(try await retry("GET /") == "ok")
        #expect(balancer.picks == ["10.0.0.1:1", "10.0.0.2:2"])
        #expect(balancer.calls.map(\.outcome) == [.failure, .success])
    }
}
