import Benchmark
import LoadBalancer

// The cost of one successful call through Retry (round robin over 10 endpoints that answer at
// once), against a call through the balancer alone: time and allocations per call. Retry runs an
// attempt inline when its endpoint enforces deadlines itself, and in a supervised child task
// otherwise: both are measured.

let benchmarks: @Sendable () -> Void = {
    let configuration = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 200
    )

    Benchmark("Retry(3, 1 s) successful call, endpoints enforcing deadlines (inline)", configuration: configuration) { benchmark async in
        let retry = Retry(RoundRobinBalancer(await cache(enforcesDeadline: true)), maxAttempts: 3, timeout: .seconds(1))
        benchmark.startMeasurement()
        var sum = 0
        for request in benchmark.scaledIterations { sum &+= try! await retry(request) }
        benchmark.stopMeasurement()
        blackHole(sum)
    }

    Benchmark("Retry(3, 1 s) successful call", configuration: configuration) { benchmark async in
        let retry = Retry(RoundRobinBalancer(await cache()), maxAttempts: 3, timeout: .seconds(1))
        benchmark.startMeasurement()
        var sum = 0
        for request in benchmark.scaledIterations { sum &+= try! await retry(request) }
        benchmark.stopMeasurement()
        blackHole(sum)
    }

    Benchmark("Retry(3, 1 s) with budget and backoff, successful call", configuration: configuration) { benchmark async in
        var retry = Retry(RoundRobinBalancer(await cache()), maxAttempts: 3, timeout: .seconds(1))
        retry.budget = RetryBudget()
        retry.backoff = Backoff()
        benchmark.startMeasurement()
        var sum = 0
        for request in benchmark.scaledIterations { sum &+= try! await retry(request) }
        benchmark.stopMeasurement()
        blackHole(sum)
    }

    Benchmark("balancer.call (no Retry), successful call", configuration: configuration) { benchmark async in
        let balancer = RoundRobinBalancer(await cache())
        benchmark.startMeasurement()
        var sum = 0
        for request in benchmark.scaledIterations { sum &+= try! await balancer.call(request) }
        benchmark.stopMeasurement()
        blackHole(sum)
    }
}

/// 10 endpoints that answer at once; `enforcesDeadline` marks them as ending calls at their
/// deadline themselves (as LoadBalancerHTTP's endpoints do), which lets Retry run them inline.
func cache(enforcesDeadline: Bool = false) async -> EndpointCache<Int, Int> {
    await EndpointCache(
        endpoints: (0..<10).map { i in
            Endpoint<Int, Int>(instance: try! Instance(host: "127.0.0.1", port: 10_000 + i), enforcesDeadline: enforcesDeadline) { $0 }
        }
    )
}
