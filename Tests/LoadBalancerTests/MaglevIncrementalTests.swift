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
        try await checkRandomChanges(
            count: count, size: size, changes: changes, weights: weighted ? [1, 2, 3] : [1], largest: weighted ? 4 : nil)
    }

    /// Weights up to ten million to one apart: 10,000,000 and 9,999,995 (within a millionth of the
    /// largest: their rounds are kept as the rule makes them), 5,000,000, and 10,000 and 1, which
    /// claim nothing in a fill of a few rounds: their next claims, thousands or millions of rounds
    /// away, are computed.
    @Test("each change's table and state are the full fill's with weights ten million to one apart")
    func randomChangesFarApartWeights() async throws {
        try await checkRandomChanges(
            count: 1_000, size: 10_007, changes: 16, weights: [10_000_000, 9_999_995, 5_000_000, 10_000, 1], largest: nil)
    }

    /// `changes` random additions and removals of instances with weights from `weights`; every
    /// eighth addition, when `largest` is given, has that weight.
    func checkRandomChanges(count: Int, size: Int, changes: Int, weights: [Int], largest: Int?) async throws {
        var random = SplitMix64(seed: UInt64(count * 31 + size))
        var next = 0
        func newInstance(weight: Int? = nil) throws -> Instance {
            defer { next += 1 }
            return try Instance(
                host: "10.\(next / 62_500).\(next / 250 % 250).\(next % 250)", port: 1_000 + next % 50_000,
                weight: weight ?? (weights.count == 1 ? weights[0] : weights[Int(random.next() % UInt64(weights.count))]))
        }
        var instances = try (0..<count).map { _ in try newInstance() }.sorted { $0.id < $1.id }
        let incremental = MaglevIncremental(
            walks: instances.map { MaglevWalk(id: $0.id, size: size) }, weights: instances.map { UInt64($0.weight) }, size: size)
        #expect(incremental.table == ConsistentHashBalancer<Int, Int>.maglevTable(view(instances), Array(instances.indices), size: size))
        var simulated = 0
        for change in 0..<changes {
            if random.next() % 2 == 0 {
                let instance = try newInstance(weight: change % 8 == 3 ? largest : nil)
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

    @Test("a set too small to keep, and a set with a weight of 0, are filled in full; weights a million to one apart are kept")
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
        // Weights a million to one apart: the first set is filled in full, the next change is
        // simulated (a claim a million rounds away is computed, not scheduled round by round),
        // and the keys go where a fresh balancer sends them.
        var spread = small
        spread[7] = try Instance(host: spread[7].host, port: spread[7].port, weight: 1_000_000)
        await other.update(with: spread)
        #expect(kept.lastIncrementalChange?.incremental == false)
        spread.remove(at: 300)
        await other.update(with: spread)
        #expect(kept.lastIncrementalChange?.incremental == true)
        expectFreshKeys(kept, spread, "a million to one")
    }

    @Test("one instance's new weight is applied as that instance removed and added back; keys go where a fresh balancer sends them")
    func weightChange() async throws {
        var instances = try (0..<1_200).map { try Instance(host: "10.6.\($0 / 250).\($0 % 250)", port: 2_000 + $0, weight: 1 + $0 % 3) }
        let cache = EndpointCache<Int, String>(factory: EndpointLedger().factory())
        let balancer = ConsistentHashBalancer(cache, tableSize: 10_007)
        await cache.update(with: instances)
        var random = SplitMix64(seed: 19)
        for step in 0..<4 {
            let position = Int(random.next() % UInt64(instances.count))
            let old = instances[position]
            // Another weight of 1-3 (the largest, 3, stays in the set).
            let weight = 1 + (old.weight + Int(random.next() % 2)) % 3
            instances[position] = try Instance(host: old.host, port: old.port, weight: weight)
            await cache.update(with: instances)
            #expect(balancer.lastIncrementalChange?.incremental == true, "step \(step): the table was simulated")
            expectFreshKeys(balancer, instances, "step \(step)")
        }
        // Two weights changed at once: the plain full fill; the next single change fills the
        // kept state again (in its storage), and the one after is simulated from it.
        instances[3] = try Instance(host: instances[3].host, port: instances[3].port, weight: 1 + instances[3].weight % 3)
        instances[9] = try Instance(host: instances[9].host, port: instances[9].port, weight: 1 + instances[9].weight % 3)
        await cache.update(with: instances)
        #expect(balancer.lastIncrementalChange?.incremental == false)
        expectFreshKeys(balancer, instances, "two weights")
        instances.remove(at: 500)
        await cache.update(with: instances)
        #expect(balancer.lastIncrementalChange?.incremental == false)
        expectFreshKeys(balancer, instances, "the first removal after the full fill")
        instances.remove(at: 700)
        await cache.update(with: instances)
        #expect(balancer.lastIncrementalChange?.incremental == true)
        expectFreshKeys(balancer, instances, "the second removal")
    }

    /// 300 keys go where a balancer built from `instances` sends them.
    func expectFreshKeys(_ balancer: ConsistentHashBalancer<Int, String>, _ instances: [Instance], _ what: String) {
        let fresh = ConsistentHashBalancer(endpoints: instances.map { Endpoint<Int, String>(instance: $0) { "\($0)" } }, tableSize: 10_007)
        for key in 0..<300 {
            #expect(balancer.instances(forKey: "key-\(key)") == fresh.instances(forKey: "key-\(key)"), "\(what), key \(key)")
        }
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
