import AsyncHTTPClient
import LoadBalancer
import LoadBalancerHTTP
import LoadBalancerLocalBackends
import LoadBalancerTestKit
import Synchronization
import Testing

/// Counts outcomes of many concurrent requests.
final class Outcomes: Sendable {
    private let state = Mutex((succeeded: 0, failed: 0, longest: Duration.zero, errors: [String: Int]()))
    func record(_ ok: Bool, _ took: Duration, _ error: (any Error)?) {
        state.withLock { state in
            if ok { state.succeeded += 1 } else { state.failed += 1 }
            state.longest = max(state.longest, took)
            if let error { state.errors[String(describing: type(of: error)), default: 0] += 1 }
        }
    }
    var snapshot: (succeeded: Int, failed: Int, longest: Duration, errors: [String: Int]) { state.withLock { $0 } }

    /// Runs one request and records whether it succeeded and how long it took.
    func measure(_ request: () async throws -> Void) async {
        let start = ContinuousClock.now
        do {
            try await request()
            record(true, .now - start, nil)
        } catch {
            record(false, .now - start, error)
        }
    }
}

/// Hands out request numbers.
final class Tickets: Sendable {
    private let next = Mutex(0)
    func take() -> Int {
        next.withLock { value in
            defer { value += 1 }
            return value
        }
    }
}

@Suite("Reliability: backend faults under load", .serialized, .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct BackendFaultTests {
    @Test("killing 1 of 5 HTTP backends during 20,000 requests with retries: at least 99.9% succeed, none outlives its timeout")
    func killOneOfFive() async throws {
        var started: [LocalHTTPBackend] = []
        for i in 0..<5 { started.append(try await LocalHTTPBackend.start(.init(latency: .milliseconds(1), seed: UInt64(i + 1)))) }
        let backends = started
        let victim = backends[2]
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPEndpointFactory.clientConfiguration())
        var factoryConfiguration = HTTPEndpointFactory.Configuration()
        factoryConfiguration.timeout = .seconds(2)
        let publisher = StaticPublisher(instances: try backends.map { try Instance(host: "127.0.0.1", port: $0.port) })
        let cache = EndpointCache(
            publisher: publisher, factory: HTTPEndpointFactory.make(client: client, configuration: factoryConfiguration))
        let detector = OutlierDetector(cache)
        let balancer = P2CBalancer(cache, metric: .leastOutstanding, ejection: detector)
        let timeout = Duration.seconds(5)
        var configured = Retry(balancer, maxAttempts: 3, timeout: timeout)
        configured.budget = RetryBudget()
        let retry = configured
        let outcomes = Outcomes()
        let total = 20_000
        let concurrency = 32
        let tickets = Tickets()

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await cache.run() }
            await cache.waitUntilReady()
            try await withThrowingTaskGroup(of: Void.self) { workers in
                for _ in 0..<concurrency {
                    workers.addTask {
                        while true {
                            let n = tickets.take()
                            guard n < total else { return }
                            if n == total / 3 { await victim.kill() }
                            await outcomes.measure { _ = try await retry(HTTPCall(path: "/")) }
                        }
                    }
                }
                try await workers.waitForAll()
            }
            group.cancelAll()
        }
        let result = outcomes.snapshot
        let rate = Double(result.succeeded) / Double(total)
        #expect(result.succeeded + result.failed == total)
        #expect(rate >= 0.999, "success \(rate): \(result.failed) failed \(result.errors)")
        #expect(result.longest <= timeout + .milliseconds(500), "the longest request took \(result.longest)")
        let killed = backends[2].served.total
        #expect(killed < total / 5 + 100, "the killed backend served \(killed) before it died")
        print(
            "backend fault: \(result.succeeded)/\(total) succeeded (\(rate * 100)%), longest \(result.longest), killed backend served \(killed)"
        )
        for backend in backends { await backend.kill() }
        try await client.shutdown()
    }
}
