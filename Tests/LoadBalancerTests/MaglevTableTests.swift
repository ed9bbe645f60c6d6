import LoadBalancer
import LoadBalancerSimulation
import Testing

/// The Maglev table's build: the direct claims of a nearly full table give exactly the table the
/// plain walk gives, and sizes are rounded up to a prime (with a composite size a walk could cycle
/// over taken entries forever).
@Suite("Maglev table")
struct MaglevTableTests {
    func view(_ count: Int, weights: (Int) -> Int = { _ in 1 }) throws -> EndpointSetView {
        var instances: [Instance] = []
        for index in 0..<count {
            let port = 1_000 + index
            instances.append(try Instance(host: "10.0.\(index / 250).\(index % 250)", port: port, weight: weights(index)))
        }
        instances.sort { $0.id < $1.id }
        return EndpointSetView(generation: 1, instances: instances, slots: instances.indices.map { UInt32($0) })
    }

    func compare(_ view: EndpointSetView, usable: [Int], size: Int) {
        let walked = ConsistentHashBalancer<Int, Int>.maglevTable(view, usable, size: size, directBelow: 0)
        let chosen = ConsistentHashBalancer<Int, Int>.maglevTable(view, usable, size: size)
        // Direct from the first claim: as many multiplications per claim as free entries (quadratic,
        // so only for small tables).
        let direct = ConsistentHashBalancer<Int, Int>.maglevTable(view, usable, size: size, directBelow: size <= 5_000 ? size : 1_000)
        #expect(walked.count == size)
        #expect(!walked.contains(-1))
        #expect(chosen == walked)
        #expect(direct == walked)
        // Every usable position owns entries, and only usable positions do.
        #expect(Set(walked.map(Int.init)) == Set(usable.filter { view.instances[$0].weight > 0 }))
    }

    @Test("direct claims give the walk's table (equal weights)", arguments: [1, 2, 7, 100, 1_000])
    func equalWeights(count: Int) throws {
        let set = try view(count)
        compare(set, usable: Array(0..<count), size: 65_537)
        compare(set, usable: Array(0..<count), size: 1_009)
    }

    @Test("direct claims give the walk's table (weighted, some usable)")
    func weighted() throws {
        let set = try view(300) { 1 + $0 % 5 }
        compare(set, usable: Array(0..<300), size: 65_537)
        compare(set, usable: Array(stride(from: 0, to: 300, by: 3)), size: 1_009)
        let zeros = try view(50) { $0 % 4 == 0 ? 0 : 2 }
        compare(zeros, usable: Array(0..<50), size: 1_009)
    }

    @Test("a table at the scale benchmark's size is the walk's")
    func tenThousand() throws {
        let set = try view(10_000)
        compare(set, usable: Array(0..<10_000), size: 65_537)
    }

    @Test("a walk's step is (candidate + skip) mod size, at the edges and for seeded values")
    func step() {
        for size: UInt64 in [2, 3, 101, 1_009, 65_537, 4_294_967_311, 1 << 62 + 135] {
            let edges: [(UInt64, UInt64)] = [(0, 1), (0, size - 1), (size - 1, 1), (size - 1, size - 1), (size / 2, size / 2 + 1)]
            var generator = SplitMix64(seed: size)
            let seeded = (0..<200).map { _ in (generator.next() % size, generator.next() % (size - 1) + 1) }
            for (candidate, skip) in edges + seeded {
                let expected = (candidate + skip) % size
                #expect(MaglevFill.step(candidate, skip: skip, size: size) == expected, "\(candidate) + \(skip) mod \(size)")
            }
        }
    }

    @Test("a composite size is rounded up to a prime, and a set fills it")
    func compositeSize() throws {
        #expect(MaglevFill.prime(atLeast: 100) == 101)
        #expect(MaglevFill.prime(atLeast: 65_536) == 65_537)
        #expect(MaglevFill.prime(atLeast: 65_537) == 65_537)
        #expect(MaglevFill.prime(atLeast: 0) == 2)
        let endpoints = (0..<60).map { index in
            Endpoint<Int, Int>(instance: try! Instance(host: "127.0.0.1", port: 2_000 + index)) { $0 + index }
        }
        // 100 = 2² × 5²: a skip of 50 would walk two entries only. Rounded to 101, every instance
        // gets entries and every key an instance.
        let balancer = ConsistentHashBalancer(endpoints: endpoints, tableSize: 100)
        #expect(balancer.tableSize == 101)
        var seen: Set<Int> = []
        for key in 0..<2_000 {
            let lease = try balancer.lease(forKey: "key-\(key)")
            seen.insert(lease.endpoint.instance.port)
        }
        #expect(seen.count == 60)
    }

    @Test("after changes through a cache (walks kept by id), keys land where a fresh balancer's table puts them")
    func changesMatchFreshBuild() async throws {
        let all = try (0..<300).map { try Instance(host: "10.1.\($0 / 200).\($0 % 200)", port: 3_000 + $0) }
        let cache = EndpointCache<Int, Int>(factory: .calling { instance, _ in instance.port })
        await cache.update(with: Array(all.prefix(200)))
        let balancer = ConsistentHashBalancer(cache, tableSize: 4_099)
        let keys = (0..<3_000).map { "key-\($0)" }
        // Removals, additions and both at once, each compared with a balancer built from scratch.
        let sets = [
            Array(all.prefix(200)).filter { $0.port != 3_050 },
            Array(all.prefix(201)),
            Array(all.prefix(250)).filter { $0.port % 7 != 0 },
            Array(all.suffix(120)),
        ]
        for set in sets {
            await cache.update(with: set)
            let fresh = ConsistentHashBalancer(
                endpoints: set.map { instance in Endpoint<Int, Int>(instance: instance) { _ in instance.port } }, tableSize: 4_099)
            for key in keys {
                #expect(try balancer.lease(forKey: key).endpoint.instance == fresh.lease(forKey: key).endpoint.instance)
            }
        }
    }
}
