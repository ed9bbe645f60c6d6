import Benchmark
import Foundation
import LoadBalancer

// pick() of every balancer over 10 and 1000 endpoints, on one thread and on two threads picking
// from the same balancer at once.
//
// "2 threads": each iteration's picks are split between the benchmark thread and a second thread
// started for the iteration; the time reported per pick is wall time / total picks (Go's
// RunParallel definition), so the two columns compare directly.

let benchmarks: @Sendable () -> Void = {
    let configuration = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        scalingFactor: .mega,
        maxDuration: .seconds(2),
        maxIterations: 50
    )
    // Pick explanations (issue 24): off by default, where every pick above runs; with an observer
    // that only counts picks; explaining one pick in 1,000; and explaining every pick (each
    // explained pick allocates its explanation: the allocations per pick show what sampling saves).
    for (label, observe) in observations {
        Benchmark("P2C peak-EWMA pick, 10 endpoints, 1 thread, \(label)", configuration: configuration) { benchmark async in
            let balancer = P2CBalancer(await cache(10), metric: .peakEWMA())
            let observer = observe(balancer)
            benchmark.startMeasurement()
            loop(balancer, benchmark.scaledIterations.count)
            benchmark.stopMeasurement()
            observer?.stop()
        }
    }
    for count in [10, 1000] {
        for (name, make) in balancers {
            for threads in [1, 2] {
                Benchmark("\(name) pick, \(count) endpoints, \(threads) thread\(threads == 1 ? "" : "s")", configuration: configuration) {
                    benchmark async in
                    let balancer = await make(count)
                    benchmark.startMeasurement()
                    pickConcurrently(balancer, picks: benchmark.scaledIterations.count, threads: threads)
                    benchmark.stopMeasurement()
                }
            }
        }
    }
}

/// The observations the explanation benchmarks compare.
let observations: [(String, @Sendable (P2CBalancer<Int, Int>) -> BalancerObserver?)] = [
    ("not observed", { _ in nil }),
    ("observed (picks counted)", { $0.observe() }),
    ("explaining 1 in 1000", { $0.observe(explainingEvery: 1000) }),
    ("explaining every pick", { $0.observe(explainingEvery: 1) }),
]

/// Each balancer, made over `count` endpoints with weights 1–3.
let balancers: [(String, @Sendable (Int) async -> AnyBalancer<Int, Int>)] = [
    ("RoundRobin", { AnyBalancer(RoundRobinBalancer(await cache($0))) }),
    ("Random", { AnyBalancer(RandomBalancer(await cache($0))) }),
    ("WeightedRoundRobin", { AnyBalancer(WeightedRoundRobinBalancer(await cache($0))) }),
    ("WeightedRandom", { AnyBalancer(WeightedRandomBalancer(await cache($0))) }),
    ("Priority", { AnyBalancer(PriorityBalancer(await cache($0))) }),
    ("P2C least-outstanding", { AnyBalancer(P2CBalancer(await cache($0), metric: .leastOutstanding)) }),
    ("P2C peak-EWMA", { AnyBalancer(P2CBalancer(await cache($0), metric: .peakEWMA())) }),
    ("ConsistentHash", { AnyBalancer(ConsistentHashBalancer(await cache($0))) }),
]

func cache(_ count: Int) async -> EndpointCache<Int, Int> {
    let endpoints = (0..<count).map { i in
        Endpoint<Int, Int>(instance: try! Instance(host: "127.0.0.1", port: 10_000 + i, weight: 1 + i % 3)) { $0 }
    }
    return await EndpointCache(endpoints: endpoints)
}

/// Makes `picks` picks, split over `threads` threads started together.
///
/// The balancer is unwrapped from `AnyBalancer` into its concrete type first, so the loop calls the
/// specialised, inlined `pick()` a user of the concrete type gets.
func pickConcurrently(_ balancer: AnyBalancer<Int, Int>, picks: Int, threads: Int) {
    switch balancer.base {
    case let b as RoundRobinBalancer<Int, Int>: run(b, picks, threads)
    case let b as RandomBalancer<Int, Int>: run(b, picks, threads)
    case let b as WeightedRoundRobinBalancer<Int, Int>: run(b, picks, threads)
    case let b as WeightedRandomBalancer<Int, Int>: run(b, picks, threads)
    case let b as PriorityBalancer<Int, Int>: run(b, picks, threads)
    case let b as P2CBalancer<Int, Int>: run(b, picks, threads)
    case let b as ConsistentHashBalancer<Int, Int>: run(b, picks, threads)
    default: fatalError("unknown balancer")
    }
}

/// The measured loop: picks are summed and the sum is black-holed once, so the loop measures
/// `pick()` itself (inlined, as in a caller's code) rather than a call per pick into `blackHole`.
@inline(never)
func loop<B: Balancer>(_ balancer: B, _ picks: Int) {
    var sum = 0
    for _ in 0..<picks {
        sum &+= try! balancer.pick().index
    }
    blackHole(sum)
}

func run<B: Balancer>(_ balancer: B, _ picks: Int, _ threads: Int) {
    if threads == 1 {
        loop(balancer, picks)
        return
    }
    let done = DispatchSemaphore(value: 0)
    let share = picks / threads
    for _ in 1..<threads {
        let thread = Thread {
            loop(balancer, share)
            done.signal()
        }
        thread.start()
    }
    loop(balancer, picks - share * (threads - 1))
    for _ in 1..<threads { done.wait() }
}
