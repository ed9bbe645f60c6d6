import LoadBalancerSimulation
import LoadBalancerTestKit
import Synchronization
import Testing

@testable import LoadBalancer

/// Issue 23, point 3: updates that say what changed (``InstanceUpdate/changes``) are applied by
/// what changed, with exactly the result of comparing the whole sets, and only when the change
/// starts from the set the cache last applied.
@Suite("Change hints")
struct ChangeHintTests {
    /// A factory that logs what it makes, refuses and closes, and refuses the ids in `broken`.
    final class LoggingFactory: Sendable {
        private let state = Mutex<(log: [String], broken: Set<String>)>(([], []))

        func breakIDs(_ ids: Set<String>) { state.withLock { $0.broken = ids } }

        /// The log since the last call: each entry "make id", "refuse id" or "close id"; the closes
        /// (run concurrently by the cache) sorted among themselves at the end.
        func takeLog() -> [String] {
            let log = state.withLock { state in
                defer { state.log = [] }
                return state.log
            }
            return log.filter { !$0.hasPrefix("close ") } + log.filter { $0.hasPrefix("close ") }.sorted()
        }

        var factory: EndpointFactory<Int, String> {
            EndpointFactory { instance in
                let refused = self.state.withLock { state -> Bool in
                    let refused = state.broken.contains(instance.id)
                    state.log.append((refused ? "refuse " : "make ") + instance.id)
                    return refused
                }
                if refused { throw TestFailure(message: "refused \(instance.id)") }
                let id = instance.id
                return ManagedEndpoint(Endpoint(instance: instance) { _ in id }) {
                    self.state.withLock { $0.log.append("close " + id) }
                }
            }
        }
    }

    /// What a cache publishes, for comparing two caches (their endpoint objects differ).
    struct Published: Equatable {
        var generation: UInt32
        var instances: [Instance]
        var endpointIDs: [String]
        var endpointInstances: [Instance]
        var slots: [UInt32]
        var failures: [String]

        init(_ cache: EndpointCache<Int, String>) {
            let set = cache.snapshot
            generation = set.generation
            instances = set.instances
            endpointIDs = set.endpoints.map(\.id)
            endpointInstances = set.endpoints.map(\.instance)
            slots = set.slots
            failures = cache.factoryFailures.keys.sorted()
        }
    }

    static func instance(_ n: Int, weight: Int = 1, zone: String? = nil) -> Instance {
        // Ids of varying length and order, so that binary searches meet every position.
        try! Instance(host: "10.0.\(n % 7).\(n % 251)", port: 1_000 + n, weight: weight, zone: zone, id: "i\(n * 7_919 % 10_007)")
    }

    @Test(
        "random changes applied by their hints give the same sets, factory calls and closes as the whole-set walk", arguments: [1, 2, 3, 4])
    func hintedEqualsWalk(seed: UInt64) async throws {
        var random = SplitMix64(seed: seed)
        let hinted = LoggingFactory()
        let walked = LoggingFactory()
        let hintedCache = EndpointCache<Int, String>(factory: hinted.factory)
        let walkedCache = EndpointCache<Int, String>(factory: walked.factory)
        let broadcaster = InstanceBroadcaster()
        var updates = broadcaster.updates().makeAsyncIterator()

        var model: [String: Instance] = [:]
        var next = 0
        func ordered() -> [Instance] { model.values.sorted { $0.id < $1.id } }
        // A first set, then changes of up to five instances each.
        for _ in 0..<40 {
            let instance = Self.instance(next)
            next += 1
            model[instance.id] = instance
        }
        broadcaster.publish(ordered())
        for step in 0..<300 {
            if step > 0 {
                var upserted: [Instance] = []
                var removed: [String] = []
                for _ in 0..<Int.random(in: 1...5, using: &random) {
                    let roll = Int.random(in: 0..<10, using: &random)
                    if roll < 4 || model.count < 3 {
                        let instance = Self.instance(next)
                        next += 1
                        if removed.contains(instance.id) || model[instance.id] != nil { continue }
                        model[instance.id] = instance
                        upserted.removeAll { $0.id == instance.id }
                        upserted.append(instance)
                    } else {
                        let id = model.keys.sorted()[Int.random(in: 0..<model.count, using: &random)]
                        if upserted.contains(where: { $0.id == id }) { continue }
                        if roll < 7 {
                            model[id] = nil
                            removed.append(id)
                        } else {
                            var changed = model[id]!
                            if roll == 7 { changed.weight += 1 } else { changed.zone = "z\(step)" }
                            model[id] = changed
                            upserted.append(changed)
                        }
                    }
                }
                // Now and then an instance's factory fails (both caches alike), and heals later.
                if Int.random(in: 0..<8, using: &random) == 0 {
                    let ids: Set<String> = Set(upserted.prefix(1).map(\.id))
                    hinted.breakIDs(ids)
                    walked.breakIDs(ids)
                } else {
                    hinted.breakIDs([])
                    walked.breakIDs([])
                }
                broadcaster.publish(ordered(), upserted: upserted, removed: removed)
            }
            let update = try #require(await updates.next())
            #expect(update.instances == ordered())
            await hintedCache.update(from: update)
            await walkedCache.update(with: update.instances)
            #expect(Published(hintedCache) == Published(walkedCache), "step \(step)")
            #expect(hinted.takeLog() == walked.takeLog(), "step \(step)")
        }
        // Most changes were applied by their hint (not those after a factory failure).
        #expect(hintedCache.updatesAppliedByHint > 200)
        #expect(walkedCache.updatesAppliedByHint == 0)
        await hintedCache.shutdown()
        await walkedCache.shutdown()
        #expect(hinted.takeLog() == walked.takeLog())
    }

    @Test("an update whose change starts from a set the cache did not apply (one coalesced away) is applied by the walk")
    func coalescedHintFallsBack() async throws {
        let factory = LoggingFactory()
        let cache = EndpointCache<Int, String>(factory: factory.factory)
        let broadcaster = InstanceBroadcaster()
        let subscription = broadcaster.updates()
        var updates = subscription.makeAsyncIterator()
        let a = Self.instance(1)
        let b = Self.instance(2)
        let c = Self.instance(3)
        broadcaster.publish([a, b].sorted { $0.id < $1.id })
        await cache.update(from: try #require(await updates.next()))
        _ = factory.takeLog()

        // Two changes before the subscriber takes one: it holds only the newest, whose change
        // starts from the set it never saw.
        broadcaster.publish([a, b, c].sorted { $0.id < $1.id }, upserted: [c], removed: [])
        broadcaster.publish([b, c].sorted { $0.id < $1.id }, upserted: [], removed: [a.id])
        let newest = try #require(await updates.next())
        #expect(newest.changes?.removed == [a.id])
        #expect(newest.changes?.upserted == [])
        await cache.update(from: newest)
        #expect(cache.updatesAppliedByHint == 0, "the change does not start from the applied set")
        #expect(cache.snapshot.instances == [b, c].sorted { $0.id < $1.id })
        #expect(factory.takeLog() == ["make \(c.id)", "close \(a.id)"])

        // The next change starts from that set: it is applied by its hint.
        broadcaster.publish([c], upserted: [], removed: [b.id])
        await cache.update(from: try #require(await updates.next()))
        #expect(cache.updatesAppliedByHint == 1)
        #expect(cache.snapshot.instances == [c])
        #expect(factory.takeLog() == ["close \(b.id)"])
    }

    @Test(
        "a change that does not fit the sets (wrong ids, wrong counts, an instance elsewhere) is applied by the walk, with the walk's result"
    )
    func inconsistentHintFallsBack() async throws {
        let a = Self.instance(1)
        let b = Self.instance(2)
        let c = Self.instance(3)
        let d = Self.instance(4)
        let start = [a, b, c].sorted { $0.id < $1.id }
        let target = [a, b, d].sorted { $0.id < $1.id }
        let lies: [InstanceChanges] = [
            InstanceChanges(base: 1, upserted: [d], removed: ["nowhere"]), // removes an id not there
            InstanceChanges(base: 1, upserted: [d], removed: []), // counts do not add up
            InstanceChanges(base: 1, upserted: [], removed: [c.id]), // d is not where it says
            InstanceChanges(base: 1, upserted: [d], removed: [d.id]), // an id in both lists
        ]
        for lie in lies {
            let factory = LoggingFactory()
            let cache = EndpointCache<Int, String>(factory: factory.factory)
            await cache.update(from: InstanceUpdate(instances: start, serial: 1))
            await cache.update(from: InstanceUpdate(instances: target, serial: 2, changes: lie))
            #expect(cache.updatesAppliedByHint == 0, "\(lie)")
            #expect(cache.snapshot.instances == target)
            #expect(cache.snapshot.endpoints.map(\.id) == target.map(\.id))
        }
        // The true change is used.
        let factory = LoggingFactory()
        let cache = EndpointCache<Int, String>(factory: factory.factory)
        await cache.update(from: InstanceUpdate(instances: start, serial: 1))
        await cache.update(
            from: InstanceUpdate(instances: target, serial: 2, changes: InstanceChanges(base: 1, upserted: [d], removed: [c.id])))
        #expect(cache.updatesAppliedByHint == 1)
        #expect(cache.snapshot.endpoints.map(\.id) == target.map(\.id))
    }

    @Test("a set given by hand, or a factory failure, makes the next hint unusable until a whole set is applied")
    func handUpdatesAndFailuresForgetTheSerial() async throws {
        let a = Self.instance(1)
        let b = Self.instance(2)
        let c = Self.instance(3)
        let factory = LoggingFactory()
        let cache = EndpointCache<Int, String>(factory: factory.factory)
        await cache.update(from: InstanceUpdate(instances: [a], serial: 1))
        await cache.update(with: [a, b].sorted { $0.id < $1.id })
        // Starts from serial 1, but the cache holds a set given by hand since.
        await cache.update(
            from: InstanceUpdate(
                instances: [a, c].sorted { $0.id < $1.id }, serial: 2, changes: InstanceChanges(base: 1, upserted: [c], removed: [])))
        #expect(cache.updatesAppliedByHint == 0)
        #expect(cache.snapshot.instances == [a, c].sorted { $0.id < $1.id })

        // b's factory fails: the published set is not serial 3's, so the next change is walked
        // (and b is tried again, as the walk always does).
        factory.breakIDs([b.id])
        await cache.update(
            from: InstanceUpdate(
                instances: [a, b, c].sorted { $0.id < $1.id }, serial: 3, changes: InstanceChanges(base: 2, upserted: [b], removed: [])))
        #expect(cache.updatesAppliedByHint == 1)
        #expect(cache.factoryFailures.keys.sorted() == [b.id])
        factory.breakIDs([])
        _ = factory.takeLog()
        await cache.update(
            from: InstanceUpdate(
                instances: [a, b].sorted { $0.id < $1.id }, serial: 4, changes: InstanceChanges(base: 3, upserted: [], removed: [c.id])))
        #expect(cache.updatesAppliedByHint == 1)
        #expect(cache.snapshot.instances == [a, b].sorted { $0.id < $1.id })
        #expect(factory.takeLog() == ["make \(b.id)", "close \(c.id)"])
    }

    @Test("an update with the serial of the set the cache holds changes nothing")
    func sameSerialIsNoChange() async throws {
        let a = Self.instance(1)
        let factory = LoggingFactory()
        let cache = EndpointCache<Int, String>(factory: factory.factory)
        await cache.update(from: InstanceUpdate(instances: [a], serial: 7))
        let generation = cache.snapshot.generation
        await cache.update(from: InstanceUpdate(instances: [a], error: DiscoveryError(code: .invalidInstances, message: "bad"), serial: 7))
        #expect(cache.snapshot.generation == generation)
        #expect(factory.takeLog() == ["make \(a.id)"])
        #expect(cache.discoveryStatus.lastError?.code == .invalidInstances)
    }

    @Test("setting an update's instances drops its serial and change")
    func settingInstancesDropsTheHint() {
        var update = InstanceUpdate(instances: [], serial: 3, changes: InstanceChanges(base: 2, upserted: [], removed: ["x"]))
        update.error = DiscoveryError(code: .other, message: "e")
        #expect(update.serial == 3)
        update.instances = [Self.instance(1)]
        #expect(update.serial == nil)
        #expect(update.changes == nil)
    }

    @Test("the broadcaster numbers sets, says what changed, keeps the serial through failures, and drops hints it cannot trust")
    func broadcasterSerials() async throws {
        let clock = ManualClock()
        let broadcaster = InstanceBroadcaster(staleness: .invalidate(after: .seconds(1)), clock: clock)
        let a = Self.instance(1)
        let b = Self.instance(2)
        let ab = [a, b].sorted { $0.id < $1.id }

        broadcaster.publish([a], upserted: [a], removed: [])
        let first = try #require(broadcaster.current)
        #expect(first.serial != nil)
        #expect(first.changes == nil, "no set before it")

        broadcaster.publish(ab, upserted: [b], removed: [])
        let second = try #require(broadcaster.current)
        #expect(second.changes == InstanceChanges(base: first.serial!, upserted: [b], removed: []))

        // A failure keeps the set: the same serial and change.
        broadcaster.fail(DiscoveryError(code: .registryUnavailable, message: "down"))
        #expect(broadcaster.current?.serial == second.serial)
        #expect(broadcaster.current?.changes == second.changes)

        // Invalidation empties the set: a new serial, no change. The next publish's change starts
        // from the last good set, which the subscriber no longer holds.
        try await waitUntil { clock.sleeperCount == 1 }
        clock.advance(by: .seconds(2))
        try await waitUntil { broadcaster.current?.error?.code == .invalidated }
        let invalidated = try #require(broadcaster.current)
        #expect(invalidated.serial != second.serial)
        #expect(invalidated.changes == nil)
        broadcaster.publish([a], upserted: [], removed: [b.id])
        #expect(broadcaster.current?.changes?.base == second.serial)

        // An unordered set, or a change naming an id twice, is published without a change.
        broadcaster.publish(ab.reversed(), upserted: [b], removed: [])
        #expect(broadcaster.current?.instances == ab)
        #expect(broadcaster.current?.changes == nil)
        broadcaster.publish([a], upserted: [], removed: [b.id, b.id])
        #expect(broadcaster.current?.changes == nil)
        broadcaster.publish(ab, upserted: [b], removed: [b.id])
        #expect(broadcaster.current?.changes == nil)
        // The same set again is not sent, and keeps its serial.
        let serial = broadcaster.current?.serial
        broadcaster.publish(ab, upserted: [], removed: [])
        #expect(broadcaster.current?.serial == serial)
    }

    @Test("the keyed table keeps the set ordered by id (smallest key wins an id) and says what changed", arguments: [11, 12, 13])
    func keyedTable(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var table = KeyedInstanceTable()
        var model: [String: Instance] = [:]
        func expected() -> [Instance] {
            var byID: [String: (key: String, instance: Instance)] = [:]
            for (key, instance) in model where byID[instance.id].map({ key < $0.key }) ?? true {
                byID[instance.id] = (key, instance)
            }
            return byID.values.map(\.instance).sorted { $0.id < $1.id }
        }
        var before = expected()
        for step in 0..<500 {
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                // Few ids over more keys: ids named by several keys are common.
                let key = "k\(Int.random(in: 0..<40, using: &random))"
                let n = Int.random(in: 0..<15, using: &random)
                if Int.random(in: 0..<3, using: &random) == 0 {
                    model[key] = nil
                    table.set(key, to: nil)
                } else {
                    let instance = try! Instance(host: "h\(n)", port: 1 + n, weight: Int.random(in: 1...3, using: &random), id: "id\(n)")
                    model[key] = instance
                    table.set(key, to: instance)
                }
            }
            let now = expected()
            #expect(table.ordered == now, "step \(step)")
            let changes = table.takeChanges()
            let beforeByID = Dictionary(uniqueKeysWithValues: before.map { ($0.id, $0) })
            let nowByID = Dictionary(uniqueKeysWithValues: now.map { ($0.id, $0) })
            #expect(changes.removed == beforeByID.keys.filter { nowByID[$0] == nil }.sorted(), "step \(step)")
            #expect(changes.upserted == now.filter { beforeByID[$0.id] != $0 }, "step \(step)")
            before = now
        }
        let rebuilt = KeyedInstanceTable(model)
        #expect(rebuilt.ordered == expected())
    }
}
