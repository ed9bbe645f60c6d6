import InMemoryTracing
import LoadBalancer
import LoadBalancerTestKit
import MetricsTestKit
import Synchronization
import Testing
import Tracing

/// Endpoints that answer their instance id, failing for the ids in `failing`, slow for `slow`.
private func endpoint(_ id: Int, failing: Bool = false, delay: Duration = .zero) throws -> Endpoint<Int, String> {
    let instance = try Instance(host: "127.0.0.1", port: 9000 + id)
    return Endpoint(instance: instance) { _ in
        if delay > .zero { try await Task.sleep(for: delay) }
        if failing { throw TestFailure(message: "\(instance.id) fails") }
        return instance.id
    }
}

/// A cache fed by hand with `endpoints`, instrumented with `metrics` and `tracer`.
private func instrumentedCache(
    _ endpoints: [Endpoint<Int, String>],
    metrics: TestMetrics,
    tracer: InMemoryTracer? = nil
) async -> EndpointCache<Int, String> {
    let byID = Dictionary(uniqueKeysWithValues: endpoints.map { ($0.id, $0) })
    let cache = EndpointCache<Int, String>(
        factory: EndpointFactory { instance in
            guard let endpoint = byID[instance.id] else { throw TestFailure(message: "no endpoint for \(instance.id)") }
            return ManagedEndpoint(endpoint)
        },
        instrumentation: LoadBalancerInstrumentation(service: "users", metrics: metrics, tracer: tracer)
    )
    await cache.update(with: endpoints.map(\.instance))
    return cache
}

@Suite("Metrics and tracing")
struct InstrumentationTests {
    @Test("calls count picks, requests, failures and latency per balancer and instance; ejections and gauges follow")
    func metrics() async throws {
        let metrics = TestMetrics()
        let endpoints = [try endpoint(1), try endpoint(2), try endpoint(3, failing: true)]
        let cache = await instrumentedCache(endpoints, metrics: metrics)
        let detector = OutlierDetector(cache, configuration: .defaults { $0.consecutiveFailures = 2 })
        let balancer = RoundRobinBalancer(cache, start: 0, ejection: detector)
        #expect(try metrics.expectGauge("loadbalancer_instances", [("service", "users")]).lastValue == 3)

        var failures = 0
        for _ in 0..<30 {
            do { _ = try await balancer.call(0) } catch { failures += 1 }
        }
        let service = ("service", "users")
        #expect(try metrics.expectCounter("loadbalancer_picks_total", [service, ("balancer", "RoundRobinBalancer")]).totalValue == 30)
        let third = try Instance(host: "127.0.0.1", port: 9003).id
        let thirdFailures = try metrics.expectCounter("loadbalancer_failures_total", [service, ("instance", third)]).totalValue
        #expect(thirdFailures == Int64(failures) && failures == 2, "ejected after two failures in a row")
        var requests: Int64 = 0
        for id in endpoints.map(\.id) {
            let count = try metrics.expectCounter("loadbalancer_requests_total", [service, ("instance", id)]).totalValue
            requests += count
            let timer = try metrics.expectTimer("loadbalancer_request_duration", [service, ("instance", id)])
            #expect(timer.values.count == Int(count) && timer.values.allSatisfy { $0 >= 0 })
        }
        #expect(requests == 30)
        #expect(try metrics.expectCounter("loadbalancer_ejections_total", [service, ("instance", third)]).totalValue == 1)
        #expect(try metrics.expectGauge("loadbalancer_instances_ejected", [service]).lastValue == 1)

        // An instance that leaves takes its series with it; the gauge follows the set.
        await cache.update(with: [endpoints[0].instance, endpoints[1].instance])
        #expect(try metrics.expectGauge("loadbalancer_instances", [service]).lastValue == 2)
        #expect(throws: (any Error).self) { try metrics.expectCounter("loadbalancer_requests_total", [service, ("instance", third)]) }

        // No endpoints: counted per balancer.
        await cache.update(with: [])
        await #expect(throws: LoadBalancerError.self) { _ = try await balancer.call(0) }
        #expect(
            try metrics.expectCounter("loadbalancer_no_endpoints_total", [service, ("balancer", "RoundRobinBalancer")]).totalValue == 1)
    }

    @Test("retries, hedges and budget refusals are counted")
    func retryMetrics() async throws {
        let metrics = TestMetrics()
        let cache = await instrumentedCache([try endpoint(1, failing: true), try endpoint(2, failing: true)], metrics: metrics)
        // Long timeouts: the suite runs beside CPU-bound tests on few threads; no call may time out.
        var retry = Retry(RoundRobinBalancer(cache), maxAttempts: 3, timeout: TestTimeScale.scaled(.seconds(60)))
        // A budget that allows exactly one retry in all.
        retry.budget = RetryBudget(ratio: 0, minimumPerSecond: 0.1, window: .seconds(10), now: { .zero })
        for _ in 0..<3 {
            await #expect(throws: RetryError.self) { _ = try await retry(0) }
        }
        let service = [("service", "users")]
        #expect(try metrics.expectCounter("loadbalancer_retries_total", service).totalValue == 1)
        #expect(try metrics.expectCounter("loadbalancer_retry_budget_exhausted_total", service).totalValue == 3)

        let hedgedMetrics = TestMetrics()
        let slowCache = await instrumentedCache(
            [try endpoint(1, delay: TestTimeScale.scaled(.seconds(30))), try endpoint(2)], metrics: hedgedMetrics)
        var hedged = Retry(RoundRobinBalancer(slowCache, start: 0), maxAttempts: 2, timeout: TestTimeScale.scaled(.seconds(60)))
        hedged.hedging = HedgingPolicy(delay: .fixed(.milliseconds(20)))
        #expect(try await hedged(0) == (try Instance(host: "127.0.0.1", port: 9002)).id)
        #expect(try hedgedMetrics.expectCounter("loadbalancer_hedges_total", service).totalValue == 1)
    }

    @Test("a span per balanced call; a retried call is one span whose children are its attempts")
    func spans() async throws {
        let tracer = InMemoryTracer()
        let endpoints = [try endpoint(1, failing: true), try endpoint(2)]
        let cache = await instrumentedCache(endpoints, metrics: TestMetrics(), tracer: tracer)
        let balancer = RoundRobinBalancer(cache, start: 0)

        _ = try? await balancer.call(0)
        let call = try #require(tracer.finishedSpans.last)
        #expect(call.operationName == "loadbalancer.call")
        #expect(call.attributes["loadbalancer.balancer"]?.toSpanAttribute() == "RoundRobinBalancer")
        #expect(call.attributes["loadbalancer.instance"]?.toSpanAttribute() == SpanAttribute.string(endpoints[0].id))
        #expect(call.attributes["loadbalancer.service"]?.toSpanAttribute() == "users")
        #expect(call.errors.count == 1, "the failed call records its error")
        tracer.clearFinishedSpans()

        let retry = Retry(RoundRobinBalancer(cache, start: 0), maxAttempts: 3, timeout: TestTimeScale.scaled(.seconds(60)))
        #expect(try await retry(0) == endpoints[1].id)
        let spans = tracer.finishedSpans
        let parent = try #require(spans.first { $0.operationName == "loadbalancer.retry" })
        let attempts = spans.filter { $0.operationName == "loadbalancer.call" }
        #expect(attempts.count == 2)
        #expect(attempts.allSatisfy { $0.parentSpanID == parent.spanID && $0.traceID == parent.traceID })
        #expect(attempts.map { $0.attributes["loadbalancer.attempt"]?.toSpanAttribute() } == [1, 2])
        #expect(parent.events.map(\.name) == ["loadbalancer.retry"])
        #expect(parent.attributes["loadbalancer.attempts"]?.toSpanAttribute() == 2)
    }

    @Test("without instrumentation, balancers still learn every call's outcome")
    func off() async throws {
        let endpoints = [try endpoint(1), try endpoint(2, failing: true)]
        let cache = await EndpointCache(endpoints: endpoints)
        let detector = OutlierDetector(cache, configuration: .defaults { $0.consecutiveFailures = 1 })
        let balancer = RoundRobinBalancer(cache, start: 0, ejection: detector)
        var failures = 0
        for _ in 0..<10 {
            do { _ = try await balancer.call(0) } catch { failures += 1 }
        }
        #expect(failures == 1, "the failing instance is ejected after its first failure")
        #expect(detector.ejectedInstanceIDs == [endpoints[1].id])
    }
}
