import LoadBalancer
import Testing

@Suite("Slow start")
struct SlowStartTests {
    @Test("the share follows Envoy's curve: a minimum, then (elapsed / window)^(1 / aggression), then 1")
    func curve() {
        let linear = SlowStart(window: .seconds(10))
        #expect(linear.share(after: .zero) == 0.1)
        #expect(linear.share(after: .seconds(1)) == 0.1)
        #expect(abs(linear.share(after: .seconds(5)) - 0.5) < 1e-9)
        #expect(linear.share(after: .seconds(10)) == 1)
        #expect(linear.share(after: .seconds(60)) == 1)
        let fast = SlowStart(window: .seconds(10), aggression: 2)
        #expect(abs(fast.share(after: .milliseconds(2_500)) - 0.5) < 1e-6)
        let slow = SlowStart(window: .seconds(10), minimumShare: 0, aggression: 0.5)
        #expect(abs(slow.share(after: .seconds(5)) - 0.25) < 1e-6)
        #expect(SlowStart(window: .zero).share(after: .zero) == 1)
    }

    /// The share of `n` picks that went to `port`.
    func share(_ balancer: some Balancer<Int, Int>, port: Int, _ n: Int = 20_000) throws -> Double {
        Double(try histogram(balancer, n)[port, default: 0]) / Double(n)
    }

    @Test(
        "an instance new to the set ramps from 10% of its share to all of it over the window",
        arguments: BalancerKind.allCases
    )
    func newInstanceRamps(kind: BalancerKind) async throws {
        let time = TestTime()
        let endpoints = EndpointCache<Int, Int>(factory: .calling { instance, _ in instance.port })
        await endpoints.update(with: weighted([1, 1, 1]))
        let balancer = kind.make(endpoints, slowStart: SlowStart(window: .seconds(10), now: { time.now }))
        // The first set ramps nothing.
        #expect(abs(try share(balancer, port: 1000) - 1.0 / 3) < 0.03)
        await endpoints.update(with: weighted([1, 1, 1, 1]))
        // Its share of a fair quarter: 0.1 / 3.1 at the start, 0.5 / 3.5 half-way, a quarter after.
        let start = try share(balancer, port: 1003)
        #expect(start < 0.07, "\(kind) at 0 s: \(start)")
        time.advance(.seconds(5))
        let halfway = try share(balancer, port: 1003)
        #expect(halfway > start && abs(halfway - 0.5 / 3.5) < 0.05, "\(kind) at 5 s: \(halfway)")
        // A re-publication of the same instances restarts nothing.
        await endpoints.update(with: weighted([1, 1, 1, 1]))
        #expect(abs(try share(balancer, port: 1003) - 0.5 / 3.5) < 0.05)
        time.advance(.seconds(5))
        #expect(abs(try share(balancer, port: 1003) - 0.25) < 0.03, "\(kind) after the window")
    }

    @Test("an instance back from ejection ramps again")
    func backFromEjection() async throws {
        let time = TestTime()
        let (endpoints, detector) = await levels([0, 0, 0, 0], time: time) {
            $0.maxEjectionPercent = 100
            $0.baseEjectionTime = .seconds(30)
        }
        let balancer = RoundRobinBalancer(endpoints, ejection: detector, slowStart: SlowStart(window: .seconds(10), now: { time.now }))
        #expect(abs(try share(balancer, port: 1000) - 0.25) < 0.03)
        report(detector, endpoints, port: 1000, .failure)
        #expect(try share(balancer, port: 1000) == 0)
        time.advance(.seconds(30))
        report(detector, endpoints, port: 1001, .success) // any completed call moves the detector's time
        #expect(detector.ejectedInstanceIDs.isEmpty)
        #expect(try share(balancer, port: 1000) < 0.07)
        time.advance(.seconds(10))
        #expect(abs(try share(balancer, port: 1000) - 0.25) < 0.03)
    }

    @Test("consistent hashing: keys move to a ramping instance gradually, and those that moved stay")
    func hashingRamps() async throws {
        let time = TestTime()
        let endpoints = EndpointCache<Int, Int>(factory: .calling { instance, _ in instance.port })
        await endpoints.update(with: weighted([1, 1, 1]))
        let balancer = ConsistentHashBalancer(endpoints, tableSize: 4_099, slowStart: SlowStart(window: .seconds(10), now: { time.now }))
        let plain = ConsistentHashBalancer(endpoints, tableSize: 4_099)
        let keys = (0..<4_000).map { "user-\($0)" }
        _ = try balancer.pick(forKey: keys[0]) // the first set ramps nothing
        await endpoints.update(with: weighted([1, 1, 1, 1]))
        func onNew() throws -> Set<String> {
            let set = balancer.snapshot
            return Set(try keys.filter { set.instances[try balancer.pick(forKey: $0).index].port == 1003 })
        }
        let target = Set(try keys.filter { plain.snapshot.instances[try plain.pick(forKey: $0).index].port == 1003 })
        let early = try onNew()
        time.advance(.seconds(5))
        let halfway = try onNew()
        time.advance(.seconds(5))
        let done = try onNew()
        #expect(Double(early.count) < 0.2 * Double(target.count), "\(early.count) of \(target.count) at 0 s")
        #expect(abs(Double(halfway.count) / Double(target.count) - 0.5) < 0.1, "\(halfway.count) of \(target.count) at 5 s")
        #expect(early.isSubset(of: halfway) && halfway.isSubset(of: done), "keys that moved stay")
        #expect(done == target, "after the window, the plain mapping")
    }
}
