import LoadBalancer
import LoadBalancerSimulation
import Testing

/// The incremental Maglev table against the full fill, after each change of a random sequence of
/// additions and removals: the table and the whole kept state (claims, probe index).
@Suite("Maglev table, incremental")
struct MaglevIncrementalTests {
    func view(_ instances: [Instance]) -> EndpointSetView {
        EndpointSetView(generation: 1, instances: instances, slots: instances.indices.map { UInt32($0) })
    }

    /// Equal weights, or weights 1-3 (with `largest`: now and then an instance of weight 4 added
    /// and removed, which changes every instance's share of the rounds).
    @Test(
        "each change's table and state are the full fill's",
        arguments: [
            (1_000, 10_007, 16, false), (4_000, 65_537, 3, false), (40, 101, 30, false),
            (1_000, 10_007, 16, true), (4_000, 65_537, 3, true), (40, 101, 30, true),
        ]
    )
    func randomChanges(count: Int, size: Int, changes: Int, weighted: Bool) async throws {
        var random = SplitMix64(seed: UInt64(count * 31 + size))
        var next = 0
        func newInstance(weight: Int? = nil) throws -> Instance {
            defer { next += 1 }
            return try Instance(
                host: "10.\(next / 62_500).\(next / 250 % 250).\(next % 250)", port: 1_000 + next % 50_000,
                weight: weight ?? (weighted ? 1 + Int(random.next() % 3) : 1))
        }
        var instances = try (0..<count).map { _ in try newInstance() }.sorted { $0.id < $1.id }
        let incremental = MaglevIncremental(
            walks: instances.map { MaglevWalk(id: $0.id, size: size) }, weights: instances.map { UInt64($0.weight) }, size: size)
        #expect(incremental.table == ConsistentHashBalancer<Int, Int>.maglevTable(view(instances), Array(instances.indices), size: size))
        var simulated = 0
        for change in 0..<changes {
            if random.next() % 2 == 0 {
                let instance = try newInstance(weight: weighted && change % 8 == 3 ? 4 : nil)
                let position = instances.firstIndex { $0.id > instance.id } ?? instances.count
                instances.insert(instance, at: position)
                let walk = MaglevWalk(id: instance.id, size: size)
                if incremental.insert(walk, weight: UInt64(instance.weight), at: position) { simulated += 1 }
            } else {
                let position = Int(random.next() % UInt64(instances.count))
                instances.remove(at: position)
                if incremental.remove(at: position) { simulated += 1 }
            }
            let full = ConsistentHashBalancer<Int, Int>.maglevTable(view(instances), Array(instances.indices), size: size)
            #expect(incremental.table == full)
            #expect(incremental.stateMatchesFullFill())
            #expect(incremental.count == instances.count)
            // Each change's checks are a few full fills: let other tests' tasks run between them
            // (a sanitizer makes them slow, and the pool has a thread per core).
            await Task.yield()
        }
        if count >= 1_000 { #expect(simulated > changes / 2, "the incremental path was taken") }
    }

    @Test("a change past the budget fills again, and the next change starts from that fill")
    func budgetFallsBack() throws {
        let size = 10_007
        var instances = try (0..<1_000).map { try Instance(host: "10.3.\($0 / 250).\($0 % 250)", port: 4_000 + $0) }
        let incremental = MaglevIncremental(walks: instances.map { MaglevWalk(id: $0.id, size: size) }, size: size)
        instances.remove(at: 17)
        #expect(!incremental.remove(at: 17, budget: 3))
        #expect(incremental.lastChange == .init(incremental: false, slots: 4))
        #expect(incremental.stateMatchesFullFill())
        let added = try Instance(host: "10.4.0.1", port: 9)
        instances.insert(added, at: 500)
        #expect(incremental.insert(MaglevWalk(id: added.id, size: size), at: 500))
        #expect(incremental.lastChange.incremental)
        #expect(incremental.table == ConsistentHashBalancer<Int, Int>.maglevTable(view(instances), Array(instances.indices), size: size))
        #expect(incremental.stateMatchesFullFill())
        // The next removal, simulated, against a fresh fill of the set.
        instances.remove(at: 0)
        #expect(incremental.remove(at: 0))
        let again = MaglevIncremental(walks: instances.map { MaglevWalk(id: $0.id, size: size) }, size: size)
        #expect(incremental.table == again.table)
    }
}

@Suite("Consistent hashing with the incremental table")
struct ConsistentHashIncrementalTests {
    @Test("the table is kept incrementally only for at most 16 entries per instance, from 1,000 instances")
    func threshold() {
        #expect(!MaglevIncremental.isWorthKeeping(count: 1_000, size: 65_537))
        #expect(!MaglevIncremental.isWorthKeeping(count: 3_855, size: 65_537))
        #expect(MaglevIncremental.isWorthKeeping(count: 3_856, size: 65_537))
        #expect(MaglevIncremental.isWorthKeeping(count: 1_000, size: 10_007))
        #expect(!MaglevIncremental.isWorthKeeping(count: 999, size: 10_007))
    }

    @Test("a set too small to keep, a set with a weight of 0, and weights a million to one apart are filled in full")
    func fullFills() async throws {
        let small = try (0..<1_200).map { try Instance(host: "10.5.\($0 / 250).\($0 % 250)", port: 2_000 + $0) }
        let cache = EndpointCache<Int, String>(factory: EndpointLedger().factory())
        let balancer = ConsistentHashBalancer(cache)
        await cache.update(with: small)
        #expect(balancer.lastIncrementalChange == nil)
        let other = EndpointCache<Int, String>(factory: EndpointLedger().factory())
        let kept = ConsistentHashBalancer(other, tableSize: 10_007)
        await other.update(with: small)
        #expect(kept.lastIncrementalChange != nil)
        var drained = small
        drained[5] = try Instance(host: drained[5].host, port: drained[5].port, weight: 0)
        await other.update(with: drained)
        #expect(kept.lastIncrementalChange == nil)
        // Weights too far apart (a million to one): filled in full, and at once.
        var spread = small
        spread[7] = try Instance(host: spread[7].host, port: spread[7].port, weight: 1_000_000)
        await other.update(with: spread)
        #expect(kept.lastIncrementalChange == nil)
        #expect(MaglevIncremental.weightsFit(smallest: 1, largest: 1_024))
        #expect(!MaglevIncremental.weightsFit(smallest: 1, largest: 1_025))
        #expect(!MaglevIncremental.weightsFit(smallest: 0, largest: 1))
    }

    @Test("a large weighted set's keys after each one-instance change go where a balancer built from the new set sends them")
    func balancerFollowsChanges() async throws {
        var instances = try (0..<1_200).map { try Instance(host: "10.1.\($0 / 250).\($0 % 250)", port: 2_000 + $0, weight: 1 + $0 % 3) }
        let cache = EndpointCache<Int, String>(factory: EndpointLedger().factory())
        // 10,007 entries: at most 16 per instance, so the balancer keeps the table incrementally.
        let balancer = ConsistentHashBalancer(cache, tableSize: 10_007)
        await cache.update(with: instances)
        var random = SplitMix64(seed: 7)
        for step in 0..<8 {
            if step % 2 == 0 {
                instances.append(try Instance(host: "10.2.0.\(step)", port: 3_000 + step, weight: 1 + step % 3))
            } else {
                instances.remove(at: Int(random.next() % UInt64(instances.count)))
            }
            await cache.update(with: instances)
            #expect(balancer.lastIncrementalChange?.incremental == true, "step \(step): the table was simulated")
            let fresh = ConsistentHashBalancer(
                endpoints: instances.map { Endpoint<Int, String>(instance: $0) { "\($0)" } }, tableSize: 10_007)
            for key in 0..<300 {
                #expect(balancer.instances(forKey: "key-\(key)") == fresh.instances(forKey: "key-\(key)"), "step \(step), key \(key)")
            }
        }
    }
}
