// Hedging's effect on tail latency with one slow backend, and retry amplification during a full
// outage with and without a retry budget: the real Retry over in-process endpoints, in real time.
import LoadBalancer
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Counters the workers share.
final class Shared: Sendable {
    let next = Atomic<Int>(0)
    let latencies = Mutex<[Double]>([])
}

/// SplitMix64.
struct Generator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func milliseconds(_ d: Duration) -> Double { Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15 }

/// Service time: log-normal, median 5 ms, p99 20 ms; backend 0 is ten times slower.
func serviceTime(backend: Int, _ random: inout Generator) -> Duration {
    let u1 = 1 - Double(random.next() >> 11) * 0x1.0p-53
    let u2 = Double(random.next() >> 11) * 0x1.0p-53
    let z = (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    let sigma = log(4.0) / 2.326_347_874_040_841
    var ms = 5 * exp(sigma * z)
    if backend == 0 { ms *= 10 }
    return .microseconds(Int64(ms * 1000))
}

func hedgingRun(hedging: HedgingPolicy?, requests: Int, concurrency: Int) async -> (p50: Double, p99: Double, p999: Double, attempts: Int) {
    let attempts = Atomic<Int>(0)
    let randoms = Mutex(Generator(state: 42))
    let endpoints = (0..<10).map { i in
        Endpoint<Int, Int>(instance: try! Instance(host: "127.0.0.1", port: 20_000 + i)) { request in
            attempts.add(1, ordering: .relaxed)
            let delay = randoms.withLock { serviceTime(backend: i, &$0) }
            try await Task.sleep(for: delay)
            return request
        }
    }
    let cache = await EndpointCache(endpoints: endpoints)
    let retry = {
        var retry = Retry(RoundRobinBalancer(cache, start: 0), maxAttempts: 3, timeout: .seconds(5))
        retry.hedging = hedging
        retry.budget = RetryBudget()
        return retry
    }()
    let shared = Shared()
    await withTaskGroup(of: Void.self) { group in
        for _ in 0..<concurrency {
            group.addTask {
                while true {
                    let request = shared.next.add(1, ordering: .relaxed).oldValue
                    if request >= requests { return }
                    let start = ContinuousClock.now
                    _ = try? await retry(request)
                    let elapsed = milliseconds(.now - start)
                    shared.latencies.withLock { $0.append(elapsed) }
                }
            }
        }
    }
    let sorted = shared.latencies.withLock { $0 }.sorted()
    func percentile(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int((p * Double(sorted.count)).rounded(.up)) - 1)] }
    return (percentile(0.5), percentile(0.99), percentile(0.999), attempts.load(ordering: .relaxed))
}

func outageRun(budget: RetryBudget?, requests: Int) async -> (attempts: Int, seconds: Double) {
    let attempts = Atomic<Int>(0)
    struct Down: Error {}
    let endpoints = (0..<10).map { i in
        Endpoint<Int, Int>(instance: try! Instance(host: "127.0.0.1", port: 21_000 + i)) { _ in
            attempts.add(1, ordering: .relaxed)
            throw Down()
        }
    }
    let cache = await EndpointCache(endpoints: endpoints)
    var retry = Retry(RandomBalancer(cache, seed: 3), maxAttempts: 3, timeout: .seconds(5))
    retry.budget = budget
    let start = ContinuousClock.now
    for request in 0..<requests { _ = try? await retry(request) }
    let elapsed = ContinuousClock.now - start
    return (attempts.load(ordering: .relaxed), Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
}

let requests = 4_000
print("### Hedging with one slow backend\n")
print(
    "10 in-process backends (log-normal service time, median 5 ms, p99 20 ms; backend 0 ten times slower), round robin, \(requests) requests, 20 in flight, Retry(maxAttempts: 3) with the default budget.\n"
)
print("| hedging | p50 | p99 | p99.9 | attempts per request |")
print("|---|---|---|---|---|")
for (name, policy) in [
    ("none", nil),
    ("after 15 ms", HedgingPolicy(delay: .fixed(.milliseconds(15)))),
    ("after the p90 of recent latency", HedgingPolicy(delay: .percentile(90, minimum: .milliseconds(2), initial: .milliseconds(15)))),
] as [(String, HedgingPolicy?)] {
    let result = await hedgingRun(hedging: policy, requests: requests, concurrency: 20)
    func f(_ v: Double) -> String { "\((v * 10).rounded() / 10) ms" }
    print(
        "| \(name) | \(f(result.p50)) | \(f(result.p99)) | \(f(result.p999)) | \((Double(result.attempts) / Double(requests) * 100).rounded() / 100) |"
    )
}

let outage = 20_000
print("\n### Retry amplification during a full outage\n")
print("Every call fails at once on all 10 backends; \(outage) calls through Retry(maxAttempts: 3), one after another.\n")
print("| budget | attempts | attempts per request | wall time |")
print("|---|---|---|---|")
for (name, budget) in [("none", nil), ("default (20% + 10/s)", RetryBudget())] as [(String, RetryBudget?)] {
    let result = await outageRun(budget: budget, requests: outage)
    print(
        "| \(name) | \(result.attempts) | \((Double(result.attempts) / Double(outage) * 100).rounded() / 100) | \((result.seconds * 100).rounded() / 100) s |"
    )
}
