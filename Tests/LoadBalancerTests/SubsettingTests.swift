import LoadBalancer
import LoadBalancerTestKit
import Synchronization
import Testing

@Suite("Subsetting")
struct SubsettingTests {
    /// `count` instances with ids like the registries', in id order.
    static func fleet(_ count: Int) -> [Instance] {
        (0..<count).map { try! Instance(host: "10.0.\($0 / 250).\($0 % 250)", port: 8080) }.sorted()
    }

    /// How many subsets each instance id is in.
    static func connections(_ subsets: [[Instance]]) -> [String: Int] {
        var counts: [String: Int] = [:]
        for subset in subsets { for instance in subset { counts[instance.id, default: 0] += 1 } }
        return counts
    }

    @Test("the same inputs give the same subset, in any order, of the requested size, in id order")
    func deterministic() throws {
        let fleet = Self.fleet(100)
        let indexed = try Subsetting.indexed(client: 7, of: 50, size: .fixed(10))
        let hashed = try Subsetting.hashed(clientID: "web-7", size: .fixed(10))
        for subsetting in [indexed, hashed] {
            let subset = subsetting.subset(of: fleet)
            #expect(subset.count == 10)
            #expect(Set(subset.map(\.id)).count == 10)
            #expect(subset == subset.sorted())
            #expect(subsetting.subset(of: fleet.reversed()).map(\.id).sorted() == subset.map(\.id))
            #expect(subsetting.subset(of: fleet) == subset)
        }
        // Another client gets another subset.
        let other = try Subsetting.hashed(clientID: "web-8", size: .fixed(10)).subset(of: fleet)
        #expect(other != hashed.subset(of: fleet))
        // Each client's own computation agrees with the computation of all clients together.
        let all = indexed.subsetsOfAllClients(of: fleet)
        for client in [0, 1, 7, 31, 49] {
            #expect(try Subsetting.indexed(client: client, of: 50, size: .fixed(10)).subset(of: fleet) == all[client])
        }
    }

    @Test("a size at or above the fleet keeps every instance; the fleet's share per client raises an indexed size")
    func sizes() throws {
        let fleet = Self.fleet(8)
        #expect(try Subsetting.hashed(clientID: "a", size: .fixed(8)).subset(of: fleet) == fleet)
        #expect(try Subsetting.hashed(clientID: "a", size: .fixed(50)).subset(of: fleet) == fleet)
        #expect(try Subsetting.hashed(clientID: "a", size: .fixed(3)).subset(of: []) == [])
        // 2 clients over 8 instances: at least 4 each.
        let indexed = try Subsetting.indexed(client: 1, of: 2, size: .fixed(1))
        #expect(indexed.count(forInstances: 8) == 4)
        #expect(indexed.subset(of: fleet).count == 4)
        // Subsets nest: one more place adds one instance.
        let five = try Subsetting.hashed(clientID: "a", size: .fixed(5)).subset(of: Self.fleet(40))
        let six = try Subsetting.hashed(clientID: "a", size: .fixed(6)).subset(of: Self.fleet(40))
        #expect(Set(five.map(\.id)).isSubset(of: Set(six.map(\.id))))
    }

    @Test("a size from load: requests per second over the rate per instance, within the bounds")
    func sizeFromLoad() throws {
        #expect(try SubsetSize.forLoad(requestsPerSecond: 2_500, perInstance: 100).count(forInstances: 1_000) == 25)
        #expect(try SubsetSize.forLoad(requestsPerSecond: 2_501, perInstance: 100).count(forInstances: 1_000) == 26)
        #expect(try SubsetSize.forLoad(requestsPerSecond: 10, perInstance: 100).count(forInstances: 1_000) == 3)
        #expect(try SubsetSize.forLoad(requestsPerSecond: 1e12, perInstance: 1, maximum: 40).count(forInstances: 1_000) == 40)
        #expect(try SubsetSize.forLoad(requestsPerSecond: 0, perInstance: 1, minimum: 1).count(forInstances: 1_000) == 1)
    }

    @Test("invalid configurations are typed errors")
    func errors() {
        #expect(throws: SubsettingError.self) { try SubsetSize.fixed(0) }
        #expect((try? SubsetSize.fixed(-1)) == nil)
        do {
            _ = try SubsetSize.fixed(0)
        } catch {
            #expect(error.code == .invalidSize)
        }
        #expect(throws: SubsettingError.self) { try SubsetSize.forLoad(requestsPerSecond: 10, perInstance: 0) }
        #expect(throws: SubsettingError.self) { try SubsetSize.forLoad(requestsPerSecond: -1, perInstance: 1) }
        #expect(throws: SubsettingError.self) { try SubsetSize.forLoad(requestsPerSecond: 1, perInstance: 1, minimum: 0) }
        #expect(throws: SubsettingError.self) { try SubsetSize.forLoad(requestsPerSecond: 1, perInstance: 1, minimum: 5, maximum: 4) }
        do {
            _ = try Subsetting.indexed(client: 3, of: 3, size: .fixed(1))
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .invalidClient)
        }
        #expect(throws: SubsettingError.self) { try Subsetting.indexed(client: 0, of: 0, size: .fixed(1)) }
        #expect(throws: SubsettingError.self) { try Subsetting.indexed(client: -1, of: 4, size: .fixed(1)) }
        do {
            _ = try Subsetting.indexed(client: 0, of: 4, size: .fixed(1), loadBound: 0.9)
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .invalidLoadBound)
        }
        #expect(throws: SubsettingError.self) { try Subsetting.hashed(clientID: "", size: .fixed(1)) }
    }

    @Test("indexed, 1,000 clients x 100 instances, d = 10: every instance in 100 to 110 subsets (max/mean <= 1.1)")
    func indexedEvenness() throws {
        let fleet = Self.fleet(100)
        let subsets = try Subsetting.indexed(client: 0, of: 1_000, size: .fixed(10)).subsetsOfAllClients(of: fleet)
        #expect(subsets.allSatisfy { $0.count == 10 && Set($0.map(\.id)).count == 10 })
        let counts = Self.connections(subsets)
        #expect(counts.count == 100, "every instance has clients")
        let maximum = try #require(counts.values.max())
        #expect(maximum <= 110, "max/mean \(Double(maximum) / 100)")
        // A tighter bound holds too.
        let tight = try Subsetting.indexed(client: 0, of: 1_000, size: .fixed(10), loadBound: 1.02).subsetsOfAllClients(of: fleet)
        #expect(Self.connections(tight).values.max() ?? 0 <= 102)
        // And with a mean that is not a whole number: 700 clients x 10 / 90 = 77.8, cap 85.
        let uneven = try Subsetting.indexed(client: 0, of: 700, size: .fixed(10)).subsetsOfAllClients(of: Self.fleet(90))
        #expect(Self.connections(uneven).values.max() ?? 0 <= 85)
    }

    @Test("indexed: one instance removed or added changes few clients' subsets and moves few connections")
    func indexedStability() throws {
        let fleet = Self.fleet(100)
        let subsetting = try Subsetting.indexed(client: 0, of: 1_000, size: .fixed(10))
        let before = subsetting.subsetsOfAllClients(of: fleet).map { Set($0.map(\.id)) }
        for removed in [0, 37, 99] {
            var smaller = fleet
            let gone = smaller.remove(at: removed)
            let after = subsetting.subsetsOfAllClients(of: smaller).map { Set($0.map(\.id)) }
            let changed = (0..<1_000).filter { before[$0] != after[$0] }
            let had = (0..<1_000).filter { before[$0].contains(gone.id) }
            // At least the clients that had it (about 10%) must change; the bound shifts a few more.
            #expect(Set(had).isSubset(of: Set(changed)))
            #expect(changed.count <= 150, "\(changed.count) of 1,000 clients changed")
            let swaps = changed.map { before[$0].subtracting(after[$0]).count }.reduce(0, +)
            #expect(swaps <= 160, "\(swaps) connections moved")
        }
        let larger = (fleet + [try Instance(host: "10.9.9.9", port: 8080)]).sorted()
        let grown = subsetting.subsetsOfAllClients(of: larger).map { Set($0.map(\.id)) }
        let changed = (0..<1_000).filter { before[$0] != grown[$0] }.count
        #expect(changed <= 150, "\(changed) of 1,000 clients changed")
        // Another client joining moves no other client's point: few subsets change.
        let moreClients = try Subsetting.indexed(client: 0, of: 1_001, size: .fixed(10)).subsetsOfAllClients(of: fleet)
        let moved = (0..<1_000).filter { before[$0] != Set(moreClients[$0].map(\.id)) }.count
        #expect(moved <= 50, "\(moved) of 1,000 clients changed")
    }

    @Test("hashed: removing an instance changes exactly the subsets that had it, each by one instance")
    func hashedStability() throws {
        let fleet = Self.fleet(100)
        var smaller = fleet
        let gone = smaller.remove(at: 42)
        var had = 0
        for client in 0..<100 {
            let subsetting = try Subsetting.hashed(clientID: "client-\(client)", size: .fixed(10))
            let before = Set(subsetting.subset(of: fleet).map(\.id))
            let after = Set(subsetting.subset(of: smaller).map(\.id))
            if before.contains(gone.id) {
                had += 1
                #expect(before.subtracting(after) == [gone.id])
                #expect(after.subtracting(before).count == 1)
            } else {
                #expect(before == after)
            }
        }
        #expect(had > 0)
    }

    @Test("weights, priorities and metadata of the instances kept are unchanged")
    func keepsInstances() throws {
        let fleet = try (0..<30).map {
            try Instance(host: "10.0.0.\($0)", port: 80, weight: $0 + 1, priority: $0 % 3, metadata: ["zone": "z\($0 % 2)"])
        }.sorted()
        let subset = try Subsetting.hashed(clientID: "a", size: .fixed(5)).subset(of: fleet)
        #expect(subset.count == 5)
        for instance in subset { #expect(fleet.contains(instance)) }
    }

    @Test("the publisher: subsets of each set, errors in band with the subset of the last good set, reconfiguration")
    func publisher() async throws {
        let fleet = Self.fleet(20)
        let base = FixedPublisher(fleet)
        let subsetting = try Subsetting.hashed(clientID: "a", size: .fixed(4))
        let publisher = base.subset(subsetting)
        var iterator = publisher.updates().makeAsyncIterator()
        let first = try #require(await iterator.next())
        #expect(first.instances == subsetting.subset(of: fleet))
        #expect(first.error == nil)

        base.fail(DiscoveryError(code: .registryUnavailable, message: "refused"))
        let failed = try #require(await iterator.next())
        #expect(failed.error?.code == .registryUnavailable)
        #expect(failed.instances == first.instances, "the good set is kept")

        // An instance outside the subset leaves: the same subset is sent once after the error, then not again.
        let outside = try #require(fleet.first { !first.instances.contains($0) })
        base.replace(with: fleet.filter { $0 != outside })
        let recovered = try #require(await iterator.next())
        #expect(recovered.error == nil)
        #expect(recovered.instances == first.instances)

        // An instance of the subset leaves: one replacement.
        let member = first.instances[0]
        let third = fleet.filter { $0 != outside && $0 != member }
        base.replace(with: third)
        let replaced = try #require(await iterator.next())
        #expect(replaced.instances.count == 4)
        #expect(!replaced.instances.contains(member))
        #expect(Set(first.instances).subtracting(replaced.instances) == [member])

        // A larger size: one more instance, the rest kept.
        publisher.reconfigure(try Subsetting.hashed(clientID: "a", size: .fixed(5)))
        let resized = try #require(await iterator.next())
        #expect(resized.instances.count == 5)
        #expect(Set(replaced.instances).isSubset(of: Set(resized.instances)))
        #expect(publisher.subsetting.size == (try SubsetSize.fixed(5)))

        base.finish()
        #expect(await iterator.next() == nil)
    }

    @Test("end to end: the cache makes endpoints for the subset's instances only, and a balancer picks among them")
    func endToEnd() async throws {
        let fleet = Self.fleet(50)
        let base = FixedPublisher(fleet)
        let subsetting = try Subsetting.indexed(client: 3, of: 20, size: .fixed(5))
        let expected = subsetting.subset(of: fleet).map(\.id)
        let backends = RecordingEndpointFactory<String, String> { instance, _ in instance.id }
        let cache = EndpointCache(publisher: base.subset(subsetting), factory: backends.factory)
        let running = Task { try await cache.run() }
        try await waitUntil { cache.snapshot.count == 5 }
        #expect(backends.made.sorted() == expected)

        let balancer = RoundRobinBalancer(cache)
        var answered = Set<String>()
        for _ in 0..<20 { answered.insert(try await balancer.call("GET /")) }
        #expect(answered == Set(expected))

        // One of the subset's instances leaves: its endpoint is closed, the new subset's are open,
        // and no other instance of the fleet ever got one.
        let gone = try #require(fleet.first { $0.id == expected[0] })
        let smaller = fleet.filter { $0 != gone }
        let next = subsetting.subset(of: smaller).map(\.id)
        base.replace(with: smaller)
        try await waitUntil { backends.openInstanceIDs.sorted() == next && cache.snapshot.count == 5 }
        #expect(backends.closed.contains(gone.id))
        #expect(Set(backends.made).isSubset(of: Set(expected + next)))
        #expect(backends.made.count - backends.closed.count == 5)

        running.cancel()
        _ = await running.result
    }
}
