import LoadBalancer
import LoadBalancerTestKit
import Synchronization
import Testing

@Suite("Balancers")
struct BalancerTests {
    func cache(_ count: Int) async -> EndpointCache<Int, Int> {
        let endpoints = instances(1...count).map { instance in Endpoint<Int, Int>(instance: instance) { _ in instance.port } }
        return await EndpointCache(endpoints: endpoints)
    }

    @Test("no endpoints is a typed error, for every balancer")
    func noEndpoints() async throws {
        let empty = EndpointCache<Int, Int>(factory: .calling { _, request in request })
        let balancers: [any Balancer<Int, Int>] = [RoundRobinBalancer(empty), RandomBalancer(empty, seed: 1)]
        for balancer in balancers {
            #expect(throws: LoadBalancerError.noEndpoints) { try balancer.pick() }
            await #expect(throws: LoadBalancerError.noEndpoints) { try await balancer.call(1) }
        }
    }

    @Test("round robin visits every endpoint in turn from its start")
    func roundRobinOrder() async throws {
        let endpoints = await cache(5)
        let balancer = RoundRobinBalancer(endpoints, start: 3)
        let picks = try (0..<10).map { _ in try balancer.pick().index }
        #expect(picks == [3, 4, 0, 1, 2, 3, 4, 0, 1, 2])
        #expect(try balancer.pick().generation == endpoints.snapshot.generation)
    }

    @Test("round robin starts each balancer at a random offset")
    func roundRobinRandomStart() async throws {
        let endpoints = await cache(1000)
        let firstPicks = try (0..<50).map { _ in try RoundRobinBalancer(endpoints).pick().index }
        // All 50 starting at the same index of 1000 has probability 1000^-49.
        #expect(Set(firstPicks).count > 1)
    }

    @Test("round robin wraps its counter without a trap")
    func roundRobinWraps() async throws {
        let endpoints = await cache(3)
        let balancer = RoundRobinBalancer(endpoints, start: UInt64.max - 1)
        let picks = try (0..<4).map { _ in try balancer.pick().index }
        #expect(picks.allSatisfy { (0..<3).contains($0) })
    }

    @Test("random is reproducible with a seed")
    func randomSeeded() async throws {
        let endpoints = await cache(10)
        let a = RandomBalancer(endpoints, seed: 42)
        let b = RandomBalancer(endpoints, seed: 42)
        let c = RandomBalancer(endpoints, seed: 43)
        let sa = try (0..<100).map { _ in try a.pick().index }
        let sb = try (0..<100).map { _ in try b.pick().index }
        let sc = try (0..<100).map { _ in try c.pick().index }
        #expect(sa == sb)
        #expect(sa != sc)
    }

    @Test("random is uniform (chi-square, 9 degrees of freedom)")
    func randomUniform() async throws {
        let endpoints = await cache(10)
        let balancer = RandomBalancer(endpoints, seed: 2024)
        var counts = [Int](repeating: 0, count: 10)
        let n = 100_000
        for _ in 0..<n { counts[try balancer.pick().index] += 1 }
        let expected = Double(n) / 10
        let chiSquare = counts.reduce(0.0) { $0 + pow2(Double($1) - expected) / expected }
        // The 99.99th percentile of chi-square with 9 degrees of freedom is 33.7.
        #expect(chiSquare < 33.7, "chi-square \(chiSquare), counts \(counts)")
    }

    @Test("random stays safe and in range under concurrent picks", arguments: [10, 1000])
    func randomConcurrent(count: Int) async throws {
        let endpoints = await cache(count)
        let balancer = RandomBalancer(endpoints, seed: 7)
        let perTask = 200_000
        let histograms = try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<4 {
                group.addTask {
                    var histogram = [Int](repeating: 0, count: count)
                    for _ in 0..<perTask { histogram[try balancer.pick().index] += 1 }
                    return histogram
                }
            }
            var total = [Int](repeating: 0, count: count)
            for try await histogram in group {
                for i in 0..<count { total[i] += histogram[i] }
            }
            return total
        }
        #expect(histograms.reduce(0, +) == 4 * perTask)
        // Every endpoint was chosen: concurrent pickers do not collapse onto shared values.
        #expect(histograms.allSatisfy { $0 > 0 })
        let expected = Double(4 * perTask) / Double(count)
        #expect(histograms.allSatisfy { abs(Double($0) - expected) < expected * 0.25 }, "\(histograms.prefix(10))")
    }

    @Test("round robin under concurrent picks hands out each index equally")
    func roundRobinConcurrent() async throws {
        let endpoints = await cache(7)
        let balancer = RoundRobinBalancer(endpoints, start: 0)
        let perTask = 70_000
        let total = try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<4 {
                group.addTask {
                    var histogram = [Int](repeating: 0, count: 7)
                    for _ in 0..<perTask { histogram[try balancer.pick().index] += 1 }
                    return histogram
                }
            }
            var total = [Int](repeating: 0, count: 7)
            for try await histogram in group { for i in 0..<7 { total[i] += histogram[i] } }
            return total
        }
        // Fetch-add hands out consecutive counter values, so the 280,000 picks split exactly.
        #expect(total == [Int](repeating: 40_000, count: 7))
    }

    @Test("a pick made against an older set is not resolved against a newer one")
    func generationCheck() async throws {
        let cache = EndpointCache<Int, Int>(factory: .calling { instance, _ in instance.port })
        await cache.update(with: instances([1, 2, 3]))
        let balancer = RoundRobinBalancer(cache, start: 2)
        let stale = try balancer.pick()
        await cache.update(with: instances([1, 2]))
        #expect(cache.endpoint(for: stale) == nil)
        let (endpoint, pick) = try balancer.pickEndpoint()
        #expect(pick.generation == cache.snapshot.generation)
        #expect(cache.endpoint(for: pick) === endpoint)
    }

    @Test("the scoped call reports outcome and latency to a balancer that observes calls")
    func scopedCallReports() async throws {
        let endpoints = await cache(2)
        let recorder = RecordingBalancer(RoundRobinBalancer(endpoints, start: 0))
        let value = try await recorder.withEndpoint { endpoint in try await endpoint(0) }
        #expect(value == 1)
        await #expect(throws: TestFailure.self) {
            try await recorder.withEndpoint { _ -> Int in throw TestFailure(message: "boom") }
        }
        let records = recorder.calls
        #expect(records.map(\.outcome) == [.success, .failure])
        #expect(records.map(\.instanceID) == ["127.0.0.1:1", "127.0.0.1:2"])
        #expect(records.allSatisfy { $0.latency >= .zero })
    }

    @Test("a type-erased balancer picks like its base")
    func anyBalancer() async throws {
        let endpoints = await cache(4)
        let erased = AnyBalancer(RoundRobinBalancer(endpoints, start: 1))
        #expect(try (0..<4).map { _ in try erased.pick().index } == [1, 2, 3, 0])
        #expect(try await erased.call(0) == 2)
    }
}

func pow2(_ x: Double) -> Double { x * x }
