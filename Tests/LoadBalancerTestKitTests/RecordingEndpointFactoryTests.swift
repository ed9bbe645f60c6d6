import LoadBalancer
import LoadBalancerTestKit
import Synchronization
import Testing

struct Refusal: Error, Equatable {}

func instances(_ ports: some Sequence<Int>) throws -> [Instance] {
    try ports.map { try Instance(host: "127.0.0.1", port: $0) }
}

@Suite("RecordingEndpointFactory", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct RecordingEndpointFactoryTests {
    @Test("endpoints answer from the closure and record each request with its instance")
    func recordsRequests() async throws {
        let backends = RecordingEndpointFactory<String, String> { instance, request in "\(instance.port): \(request)" }
        let cache = EndpointCache(factory: backends.factory)
        await cache.update(with: try instances([1, 2]))
        let balancer = RoundRobinBalancer(cache, start: 0)

        #expect(try await balancer.call("a") == "1: a")
        #expect(try await balancer.call("b") == "2: b")
        #expect(try await balancer.call("c") == "1: c")
        #expect(backends.requests.map(\.instanceID) == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:1"])
        #expect(backends.requests.map(\.request) == ["a", "b", "c"])
        #expect(backends.requests(to: "127.0.0.1:1") == ["a", "c"])
        #expect(backends.requestCounts == ["127.0.0.1:1": 2, "127.0.0.1:2": 1])

        backends.removeAllRequests()
        #expect(backends.requests.isEmpty)
        #expect(backends.made == ["127.0.0.1:1", "127.0.0.1:2"], "lifecycles are kept")
    }

    @Test("a throwing answer fails the call; the request is still recorded")
    func throwingAnswer() async throws {
        let backends = RecordingEndpointFactory<Int, Int> { _, _ in throw Refusal() }
        let cache = EndpointCache(factory: backends.factory)
        await cache.update(with: try instances([1]))
        await #expect(throws: Refusal.self) { try await RoundRobinBalancer(cache).call(7) }
        #expect(backends.requests(to: "127.0.0.1:1") == [7])
    }

    @Test("every endpoint made is recorded, and closed once after its instance leaves")
    func lifecycles() async throws {
        let closing = Mutex<[String]>([])
        let backends = RecordingEndpointFactory<Int, Int>(onClose: { endpoint in
            closing.withLock { $0.append(endpoint.id) }
        }) { _, request in request }
        let cache = EndpointCache(factory: backends.factory)
        await cache.update(with: try instances([1, 2, 3]))
        await cache.update(with: try instances([2, 3, 4]))
        #expect(backends.made == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"])
        #expect(backends.closed == ["127.0.0.1:1"])
        #expect(closing.withLock { $0 } == ["127.0.0.1:1"], "onClose saw the endpoint")
        #expect(backends.openInstanceIDs == ["127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"])

        await cache.shutdown()
        #expect(backends.openInstanceIDs.isEmpty)
        for (id, lifecycle) in backends.lifecycles {
            #expect(lifecycle.made == 1 && lifecycle.closed == 1, "\(id): \(lifecycle)")
            #expect(lifecycle.isOpen == false)
        }
    }

    @Test("a refused instance is left out by the cache and made once accepted")
    func refusals() async throws {
        let backends = RecordingEndpointFactory<Int, Int> { instance, _ in instance.port }
        backends.refuse("127.0.0.1:2")
        let cache = EndpointCache(factory: backends.factory)
        await cache.update(with: try instances([1, 2]))
        #expect(cache.snapshot.instances.map(\.port) == [1])
        let failure = try #require(cache.factoryFailures["127.0.0.1:2"])
        #expect(failure == "refused: factory refused 127.0.0.1:2, as the test asked")
        #expect(backends.lifecycles["127.0.0.1:2"]?.refused == 1)
        #expect(backends.lifecycles["127.0.0.1:2"]?.made == 0)

        backends.accept("127.0.0.1:2")
        await cache.update(with: try instances([1, 2]))
        #expect(cache.snapshot.instances.map(\.port) == [1, 2])
        #expect(backends.made == ["127.0.0.1:1", "127.0.0.1:2"])
        await cache.shutdown()
    }
}
