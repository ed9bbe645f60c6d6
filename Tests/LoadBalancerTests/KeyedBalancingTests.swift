import LoadBalancer
import LoadBalancerTestKit
import Synchronization
import Testing

/// Keys drawn from a Zipf distribution over `count` keys with exponent `s`, from a seeded stream.
struct ZipfKeys {
    private var cumulative: [Double] = []
    private var state: UInt64

    init(count: Int, s: Double, seed: UInt64) {
        var total = 0.0
        for rank in 1...count {
            total += 1 / Self.power(Double(rank), s)
            cumulative.append(total)
        }
        cumulative = cumulative.map { $0 / total }
        state = seed
    }

    /// x^s for x ≥ 1, without Foundation: e^(s ln x) by repeated square roots.
    static func power(_ x: Double, _ s: Double) -> Double {
        // ln x from ln x = 2^k ln(x^(1/2^k)), x^(1/2^k) near 1 after 20 square roots.
        var y = x
        for _ in 0..<20 { y = y.squareRoot() }
        let t = y - 1
        let lnY = t - t * t / 2 + t * t * t / 3
        let ln = lnY * 1_048_576
        // e^(s ln x) = (e^(s ln x / 2^20))^(2^20).
        var e = 1 + s * ln / 1_048_576
        for _ in 0..<20 { e *= e }
        return e
    }

    mutating func next() -> String {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        let u = Double(z >> 11) * 0x1p-53
        var low = 0
        var high = cumulative.count - 1
        while low < high {
            let middle = (low + high) / 2
            if cumulative[middle] < u { low = middle + 1 } else { high = middle }
        }
        return "key-\(low)"
    }
}

@Suite("Keys: weighted Maglev, a key's order of instances, keyed Retry, bounded load")
struct KeyedBalancingTests {
    func hashCache(_ weights: [Int]) async -> EndpointCache<Int, Int> {
        let cache = EndpointCache<Int, Int>(factory: .calling { instance, _ in instance.port })
        await cache.update(with: weighted(weights))
        return cache
    }

    @Test("weights count in the Maglev table: keys split in proportion to weight; weight 0 gets none")
    func weightedTable() async throws {
        let cache = await hashCache([1, 2, 3, 4, 0])
        let balancer = ConsistentHashBalancer(cache, tableSize: 65_537)
        var counts: [Int: Int] = [:]
        let set = cache.snapshot
        for key in 0..<50_000 { counts[set.instances[try balancer.pick(forKey: "user-\(key)").index].port, default: 0] += 1 }
        for (i, weight) in [1, 2, 3, 4].enumerated() {
            let share = Double(counts[1000 + i, default: 0]) / 50_000
            #expect(abs(share - Double(weight) / 10) < 0.02, "weight \(weight): share \(share)")
        }
        #expect(counts[1004] == nil)
    }

    @Test("a key's order of instances: distinct, its own instance first, stable; removing one of 20 moves about 1/20 of keys")
    func orderAndMoves() async throws {
        let cache = await hashCache([Int](repeating: 1, count: 20))
        let balancer = ConsistentHashBalancer(cache)
        let set = cache.snapshot
        for key in ["alice", "bob", "carol"] {
            let order = balancer.instances(forKey: key, count: 20)
            #expect(order.count == 20 && Set(order.map(\.id)).count == 20)
            #expect(order[0] == set.instances[try balancer.pick(forKey: key).index])
            #expect(balancer.instances(forKey: key, count: 3) == Array(order.prefix(3)))
        }
        let keys = (0..<20_000).map { "user-\($0)" }
        let before = try keys.map { set.instances[try balancer.pick(forKey: $0).index].id }
        let all = weighted([Int](repeating: 1, count: 20))
        await cache.update(with: all.filter { $0.port != 1007 })
        let after = try keys.map { cache.snapshot.instances[try balancer.pick(forKey: $0).index].id }
        let moved = Double(zip(before, after).filter { $0 != $1 }.count) / Double(keys.count)
        print("consistent hashing: removing 1 of 20 instances moved \(moved) of 20,000 keys (1/20 = 0.05)")
        #expect(moved > 0.03 && moved < 0.08, "moved \(moved)")
    }

    @Test("a keyed call through Retry: the first attempt on the key's instance, the retries on its next ones")
    func keyedRetry() async throws {
        let hits = Mutex<[Int]>([])
        let failing = Mutex<Set<Int>>([])
        let endpoints = try (0..<10).map { i in
            let instance = try Instance(host: "10.0.0.\(i + 1)", port: 1000 + i)
            return Endpoint<Int, Int>(instance: instance) { _ in
                hits.withLock { $0.append(instance.port) }
                if failing.withLock({ $0.contains(instance.port) }) { throw TestFailure(message: "\(instance.port) fails") }
                return instance.port
            }
        }
        let balancer = ConsistentHashBalancer(endpoints: endpoints, tableSize: 4_099)
        // The timeout is not what this test is about: scaled (TestTimeScale), because under
        // ThreadSanitizer the first attempt's task waited 49 s for a thread while the simulation
        // suites held the pool's two (session 17; 149 s in session 15).
        let timeout = TestTimeScale.scaled(Duration.seconds(30))
        let retry = Retry(balancer, maxAttempts: 3, timeout: timeout)
        let order = balancer.instances(forKey: "user-42", count: 3).map(\.port)
        #expect(try await retry(0, key: "user-42") == order[0])
        failing.withLock { $0 = [order[0], order[1]] }
        hits.withLock { $0 = [] }
        #expect(try await retry(0, key: "user-42") == order[2])
        #expect(hits.withLock { $0 } == order, "attempts follow the key's order")
        // The same on the supervised path (hedging on, never due).
        var hedged = Retry(balancer, maxAttempts: 3, timeout: timeout)
        hedged.hedging = HedgingPolicy(delay: .fixed(.seconds(3600)))
        hits.withLock { $0 = [] }
        #expect(try await hedged(0, key: "user-42") == order[2])
        #expect(hits.withLock { $0 } == order)
        // Every instance of the order failing: the error lists the key's instances, in order.
        failing.withLock { $0 = Set(order) }
        let error = try await #require(throws: RetryError.self) { try await retry(0, key: "user-42") }
        #expect(error.attempts.map { $0.instance?.port } == order)
    }

    @Test("bounded load: under Zipf keys (s = 1.1, 10,000 keys, 20 instances) no instance carries more than 1.25x the mean")
    func boundedLoad() async throws {
        let cache = await hashCache([Int](repeating: 1, count: 20))
        let plain = ConsistentHashBalancer(cache)
        let bounded = ConsistentHashBalancer(cache, boundedLoad: .init(factor: 1.25))
        #expect(bounded.boundedLoad?.factor == 1.25)
        // Nothing in flight: a key goes to its own instance, as without the bound.
        for key in (0..<200).map({ "user-\($0)" }) {
            #expect(try bounded.pick(forKey: key) == plain.pick(forKey: key))
        }
        /// 400 calls in flight (each new call ends the oldest): served calls per instance, and the
        /// most any instance had in flight.
        func run(_ balancer: ConsistentHashBalancer<Int, Int>) throws -> (maxOverMean: Double, peak: Int) {
            var keys = ZipfKeys(count: 10_000, s: 1.1, seed: 5)
            var window: [EndpointLease<Int, Int>] = []
            var served: [Int: Int] = [:]
            var inFlight: [Int: Int] = [:]
            var peak = 0
            let total = 200_000
            for _ in 0..<total {
                if window.count == 400 {
                    let oldest = window.removeFirst()
                    inFlight[oldest.endpoint.instance.port, default: 0] -= 1
                    balancer.finish(oldest, outcome: .success, latency: .milliseconds(1))
                }
                let lease = try balancer.lease(forKey: keys.next())
                let port = lease.endpoint.instance.port
                served[port, default: 0] += 1
                inFlight[port, default: 0] += 1
                peak = max(peak, inFlight[port]!)
                window.append(lease)
            }
            for lease in window { balancer.finish(lease, outcome: .success, latency: .milliseconds(1)) }
            let mean = Double(total) / 20
            return (Double(served.values.max() ?? 0) / mean, peak)
        }
        let withBound = try run(bounded)
        let without = try run(plain)
        print(
            "bounded load (Zipf s=1.1, 10k keys, 20 instances, 400 in flight): served max/mean \(withBound.maxOverMean), peak in flight \(withBound.peak) (mean 20); plain Maglev: max/mean \(without.maxOverMean), peak \(without.peak)"
        )
        #expect(withBound.peak <= 25, "at most ceil(1.25 x 400 / 20) = 25 in flight")
        #expect(withBound.maxOverMean <= 1.26)
        #expect(without.maxOverMean > 1.5, "the hot keys overload plain Maglev's instances")
    }
}
