import LoadBalancer
import Testing

@Suite("Zone-aware routing")
struct ZoneAwareRoutingTests {
    struct Case: Sendable, CustomStringConvertible {
        var name: String
        var clients: [String: Double]?
        var healthy: [String: Int]
        var total: [String: Int]
        var minimum = 6
        var expected: [String: Double]?
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "healthy like the clients: all local", clients: nil, healthy: ["a": 3, "b": 3, "c": 3], total: ["a": 3, "b": 3, "c": 3],
            expected: ["a": 1]),
        Case(
            name: "more capacity locally than clients: all local", clients: ["a": 1, "b": 2, "c": 2], healthy: ["a": 3, "b": 3, "c": 3],
            total: ["a": 3, "b": 3, "c": 3], expected: ["a": 1]),
        Case(
            name: "local 20% of healthy for 33% of clients: 60% local, the rest by spare capacity",
            clients: ["a": 1, "b": 1, "c": 1], healthy: ["a": 2, "b": 4, "c": 4], total: ["a": 4, "b": 4, "c": 4],
            expected: ["a": 0.6, "b": 0.2, "c": 0.2]),
        Case(
            name: "one of three local instances left (clients like the instances)", clients: nil, healthy: ["a": 1, "b": 3, "c": 3],
            total: ["a": 3, "b": 3, "c": 3], expected: ["a": 3.0 / 7, "b": 2.0 / 7, "c": 2.0 / 7]),
        Case(
            name: "spare capacity in one zone only: it takes the whole residual", clients: ["a": 0.5, "b": 0.25, "c": 0.25],
            healthy: ["a": 2, "b": 2, "c": 6], total: ["a": 6, "b": 2, "c": 6],
            expected: ["a": 0.4, "c": 0.6]),
        Case(
            name: "below the minimum cluster size: zones do not count", clients: nil, healthy: ["a": 1, "b": 2], total: ["a": 2, "b": 2],
            expected: nil),
        Case(
            name: "no healthy instance in the local zone: zones do not count", clients: nil, healthy: ["b": 3, "c": 3],
            total: ["a": 3, "b": 3, "c": 3], expected: nil),
        Case(
            name: "no client in the local zone: all local", clients: ["b": 1, "c": 1], healthy: ["a": 1, "b": 3, "c": 3],
            total: ["a": 3, "b": 3, "c": 3], expected: ["a": 1]),
    ]

    @Test("Envoy's rule, case by case", arguments: cases)
    func rule(_ c: Case) {
        let routing = ZoneAwareRouting(localZone: "a", clientShares: c.clients, minimumClusterSize: c.minimum)
        let shares = routing.shares(healthy: c.healthy, total: c.total)
        guard let expected = c.expected else {
            #expect(shares == nil)
            return
        }
        guard let got = shares else {
            Issue.record("zones should count: expected \(expected)")
            return
        }
        #expect(Set(got.keys.filter { got[$0, default: 0] > 0 }) == Set(expected.keys), "\(got)")
        for (zone, share) in expected {
            #expect(abs(got[zone, default: 0] - share) < 1e-9, "\(zone): \(got[zone, default: 0]) for \(share)")
        }
    }

    /// 9 instances, 3 in each of zones a, b and c (ports 1000-1008, zone by port / 3).
    func zonedCache() async -> EndpointCache<Int, Int> {
        let instances = (0..<9).map { i in try! Instance(host: "10.0.0.\(i + 1)", port: 1000 + i, zone: ["a", "b", "c"][i / 3]) }
        return await cache(instances)
    }

    func zoneShares(_ balancer: some Balancer<Int, Int>, _ cache: EndpointCache<Int, Int>, picks: Int = 9_000) throws -> [String: Double] {
        var counts: [String: Int] = [:]
        for _ in 0..<picks {
            let lease = try balancer.lease()
            counts[lease.endpoint.instance.zone ?? "", default: 0] += 1
            balancer.finish(lease, outcome: .success, latency: .milliseconds(1))
        }
        return counts.mapValues { Double($0) / Double(picks) }
    }

    @Test("every balancer picks inside the local zone while it has the capacity", arguments: BalancerKind.allCases)
    func local(kind: BalancerKind) async throws {
        let cache = await zonedCache()
        let balancer = kind.make(cache, zones: ZoneAwareRouting(localZone: "b"))
        #expect(try zoneShares(balancer, cache) == ["b": 1])
        let plain = kind.make(cache)
        #expect(try zoneShares(plain, cache).count == 3, "without zones, every zone")
    }

    @Test("as local instances are ejected, calls spill to the other zones smoothly", arguments: BalancerKind.allCases)
    func spill(kind: BalancerKind) async throws {
        let cache = await zonedCache()
        let time = TestTime()
        let detector = OutlierDetector(
            cache,
            configuration: .defaults {
                $0.consecutiveFailures = 1
                $0.failureRate = nil
                $0.maxEjectionPercent = 100
                $0.panicThreshold = 0
            },
            now: { time.now })
        let balancer = kind.make(cache, ejection: detector, zones: ZoneAwareRouting(localZone: "a"))
        // Local instances left: 3, 2, 1, 0. Clients spread like the instances (a third in a).
        let expectedLocal = [1.0, 0.75, 3.0 / 7, 0]
        var observed: [Double] = []
        for (ejected, expected) in expectedLocal.enumerated() {
            if ejected > 0 { report(detector, cache, port: 1000 + ejected - 1, .failure) }
            let local = try zoneShares(balancer, cache)["a", default: 0]
            observed.append(local)
            #expect(abs(local - expected) < 0.03, "\(ejected) ejected: local share \(local), expected \(expected)")
        }
        if kind == .roundRobin {
            print("zone-aware routing (3 zones x 3 instances, local a): local share with 0-3 local ejected: \(observed)")
        }
    }

    @Test("zones come from the registry value (a zone field, or the metadata) and go back into it")
    func registryValues() throws {
        let a = try Instance(registryValue: Array(#"{"host": "10.0.0.1", "port": 80, "zone": "eu-1a"}"#.utf8))
        #expect(a.zone == "eu-1a")
        let b = try Instance(registryValue: Array(#"{"host": "10.0.0.1", "port": 80, "metadata": {"zone": "eu-1b"}}"#.utf8))
        #expect(b.zone == "eu-1b")
        #expect(try Instance(registryValue: Array("10.0.0.1:80".utf8)).zone == nil)
        #expect(try Instance(registryValue: Array(a.registryJSON.utf8)) == a)
        #expect(try Instance(registryValue: Array(b.registryJSON.utf8)) == b)
        #expect(throws: InstanceParseError.self) {
            try Instance(registryValue: Array(#"{"host": "10.0.0.1", "port": 80, "zone": 3}"#.utf8))
        }
    }
}
