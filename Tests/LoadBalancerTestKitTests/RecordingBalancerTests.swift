import LoadBalancer
import LoadBalancerTestKit
import Synchronization
import Testing

@Suite("RecordingBalancer", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct RecordingBalancerTests {
    @Test("records the picks of pick() and of calls, and every call's outcome")
    func picksAndOutcomes() async throws {
        let backends = RecordingEndpointFactory<Int, Int> { instance, request in
            if request < 0 { throw Refusal() }
            return instance.port
        }
        let cache = EndpointCache(factory: backends.factory)
        await cache.update(with: try instances([1, 2, 3]))
        let balancer = RecordingBalancer(RoundRobinBalancer(cache, start: 0))

        let pick = try balancer.pick()
        #expect(pick.index == 0)
        #expect(try await balancer.call(1) == 2)
        await #expect(throws: Refusal.self) { try await balancer.call(-1) }
        let cancelled = Task {
            try await balancer.withEndpoint { _ -> Int in
                withUnsafeCurrentTask { $0?.cancel() }
                throw CancellationError()
            }
        }
        await #expect(throws: CancellationError.self) { try await cancelled.value }

        #expect(balancer.picks == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:1"])
        #expect(balancer.pickRecords.first?.pick == pick)
        #expect(balancer.calls.map(\.outcome) == [.success, .failure, .cancelled], "pick() alone makes no call")
        #expect(balancer.calls.map(\.instanceID) == ["127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:1"])
        #expect(balancer.calls.allSatisfy { $0.latency >= .zero })
        #expect(balancer.callCounts(.failure) == ["127.0.0.1:3": 1])
        #expect(backends.requestCounts == ["127.0.0.1:2": 1, "127.0.0.1:3": 1], "the cancelled body never called")

        balancer.removeAll()
        #expect(balancer.picks.isEmpty && balancer.calls.isEmpty)
    }

    @Test("a pick from an empty set throws noEndpoints and is counted")
    func emptySet() async throws {
        let cache = EndpointCache<Int, Int>(factory: .calling { _, request in request })
        let balancer = RecordingBalancer(RandomBalancer(cache, seed: 1))
        #expect(throws: LoadBalancerError.noEndpoints) { try balancer.pick() }
        await #expect(throws: LoadBalancerError.noEndpoints) { try await balancer.call(0) }
        #expect(balancer.emptyPickCount == 2)
        #expect(balancer.picks.isEmpty)
    }

    @Test("the wrapped load-aware balancer still counts calls in flight")
    func wrappedP2CStillCounts() async throws {
        let endpoints = try instances([1, 2]).map { instance in Endpoint<Int, Int>(instance: instance) { _ in instance.port } }
        let balancer = RecordingBalancer(P2CBalancer(endpoints: endpoints, metric: .leastOutstanding, seed: 7))
        // A call in flight on port 1, leased through the recorder.
        let held = try #require(try balancer.lease(avoiding: ["127.0.0.1:2"]))
        #expect(held.endpoint.id == "127.0.0.1:1")
        // P2C samples both of the two instances and sends every call to the one with fewer calls in
        // flight: port 2, which it can only know if it counted the call leased through the recorder.
        for _ in 0..<20 { #expect(try await balancer.call(0) == 2) }
        balancer.finish(held, outcome: .success, latency: .milliseconds(1))
        #expect(balancer.picks == ["127.0.0.1:1"] + Array(repeating: "127.0.0.1:2", count: 20))
        #expect(balancer.calls.count == 21)
        #expect(balancer.calls.last?.instanceID == "127.0.0.1:1")
        // Ended: port 1 is back in the running.
        var seen = Set<Int>()
        for _ in 0..<200 where seen.count < 2 { seen.insert(try await balancer.call(0)) }
        #expect(seen == [1, 2])
    }

    @Test("under Retry, each attempt's pick and outcome is recorded")
    func underRetry() async throws {
        let backends = RecordingEndpointFactory<Int, String> { instance, _ in
            if instance.port == 1 { throw Refusal() }
            return "ok from \(instance.port)"
        }
        let cache = EndpointCache(factory: backends.factory)
        await cache.update(with: try instances([1, 2]))
        let balancer = RecordingBalancer(RoundRobinBalancer(cache, start: 0))
        let retry = Retry(balancer, maxAttempts: 3, timeout: .seconds(10), clock: ManualClock())
        #expect(try await retry(0) == "ok from 2")
        #expect(balancer.picks == ["127.0.0.1:1", "127.0.0.1:2"])
        #expect(balancer.calls.map(\.outcome) == [.failure, .success])
    }

    @Test("callers that pick and report by themselves reach the wrapped balancer and the record")
    func willCallAndRecord() async throws {
        let endpoints = try instances([1]).map { instance in Endpoint<Int, Int>(instance: instance) { $0 } }
        let balancer = RecordingBalancer(P2CBalancer(endpoints: endpoints, metric: .leastOutstanding))
        let pick = try balancer.pick()
        let set = balancer.snapshot
        balancer.willCall(pick, slot: set.slots[pick.index])
        balancer.record(
            CallRecord(
                pick: pick, instanceID: set.instances[pick.index].id, slot: set.slots[pick.index], outcome: .success,
                latency: .milliseconds(3)))
        #expect(balancer.calls.map(\.latency) == [.milliseconds(3)])
        #expect(balancer.observesCalls)
        #expect(balancer.cache == nil)
    }
}
