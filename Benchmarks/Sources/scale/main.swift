// Discovery at scale: what a change to the instance set costs as the set grows, for every balancer.
//
//   swift run -c release scale [--sizes 100,1000,10000] [--balancer NAME,...|all] [--changes 200]
//                              [--flood-seconds 2] [--rate 100] [--rate-seconds 3] [--csv FILE]
//                              [--updates whole|hinted] [--change one|weight|several]
//
// For each size n and balancer, over an EndpointCache fed by hand with whole sets (as every
// publisher delivers them) and endpoints made by the benchmark (the "user's endpoint objects"):
// with `--updates hinted`, each change's update also says what changed (`InstanceUpdate.changes`, as the
// etcd and ZooKeeper publishers deliver it), so the cache applies it without comparing the sets.
//
// - first: the wall and CPU time of the first set (the cache's update plus the first pick, which
//   builds the balancer's table);
// - memory: the heap bytes (glibc's mallinfo2) the cache and balancer hold per instance, beyond the
//   endpoints and the instance array the caller made, after calls from as many tasks as cores
//   (each task's thread makes its shard's leases);
// - change: `--changes` changes, alternately one instance removed and one added back (a random one
//   each time; with `--change weight`, one instance's weight changed and changed back; with
//   `--change several`, two instances removed and added back together), each timed from the
//   start of `cache.update(with:)` to the first pick that returns
//   an endpoint of the new set: wall p50/p99, CPU p50/p99 (the process's CPU time: nothing else
//   runs) and mallocs per change (the malloc interposer's count);
// - flood: changes applied back to back for `--flood-seconds` on one task while one thread picks
//   without pause: changes per second absorbed, and the picks' p50/p99/p99.9 (each pick timed)
//   against the same thread picking with no changes;
// - rate: the same with `--rate` changes per second (paced), the issue's "picks' p99 during 100
//   changes per second" figure;
// - control: the same paced changes applied to a second cache of the same set, with a balancer of
//   the same kind (its table built as the first's is), while the thread picks from the first,
//   whose set stays: the picks' p99/p99.9 with the changes' work on the machine but not on the
//   balancer picked from.
import BenchmarkCLI
import CHeapInfo
import Foundation
import LoadBalancer
import MallocInterposerSwift
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

struct Options {
    var sizes = [100, 1_000, 10_000]
    var balancers = allBalancers
    var changes = 200
    var floodSeconds = 2.0
    var rate = 100.0
    var rateSeconds = 3.0
    var csv: String?
    var hinted = false
    var change = ChangeKind.one
}

/// What one change of the set is (`--change`).
enum ChangeKind: String {
    /// One instance removed, then added back.
    case one
    /// One instance's weight changed (1 -> 2 -> 3 -> 1), then changed back.
    case weight
    /// Two instances removed, then added back, in one update.
    case several
}

let allBalancers = allBalancerNames

let usage = """
    usage: scale [--sizes 100,1000,10000] [--balancer NAME,...|all] [--changes 200]
                 [--flood-seconds 2] [--rate 100] [--rate-seconds 3] [--csv FILE] [--updates whole|hinted]
                 [--change one|weight|several]
    """

func parse() -> Options {
    var options = Options()
    var reader = FlagReader(program: "scale", usage: usage)
    while let (flag, value) = reader.next() {
        switch flag {
        case "--sizes": options.sizes = reader.positives(value, flag)
        case "--balancer": options.balancers = reader.balancers(value, known: allBalancers)
        case "--changes": options.changes = reader.positive(value, flag)
        case "--flood-seconds": options.floodSeconds = reader.positive(value, flag)
        case "--rate": options.rate = reader.positive(value, flag)
        case "--rate-seconds": options.rateSeconds = reader.positive(value, flag)
        case "--csv": options.csv = value
        case "--updates":
            guard value == "whole" || value == "hinted" else { reader.fail("--updates is whole or hinted, not '\(value)'") }
            options.hinted = value == "hinted"
        case "--change":
            guard let kind = ChangeKind(rawValue: value) else { reader.fail("--change is one, weight or several, not '\(value)'") }
            options.change = kind
        default: reader.fail("unknown flag \(flag)")
        }
    }
    return options
}

// MARK: Clocks and counters

/// The process's CPU time in nanoseconds.
func cpuNanoseconds() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &spec)
    return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
}

/// Monotonic wall time in nanoseconds.
@inline(__always)
func wallNanoseconds() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
}

func mallocs() -> Int { MallocInterposerSwift.getStatistics().mallocCount }

func heapBytes() -> Int64 {
    _ = lb_heap_trim()
    return Int64(lb_heap_in_use())
}

func percentile(_ sorted: [UInt64], _ p: Double) -> UInt64 {
    guard !sorted.isEmpty else { return 0 }
    let rank = Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1
    return sorted[min(max(rank, 0), sorted.count - 1)]
}

func ms(_ nanoseconds: UInt64) -> String { String(format: "%.3f", Double(nanoseconds) / 1e6) }
func us(_ nanoseconds: UInt64) -> String { String(format: "%.2f", Double(nanoseconds) / 1e3) }

// MARK: The set

func makeInstances(_ count: Int) -> [Instance] {
    (0..<count).map { i in
        // 10.x.y.z addresses, weights 1-3, two priority levels (a quarter on the second).
        let host = "10.\(i >> 16 & 255).\(i >> 8 & 255).\(i & 255)"
        return try! Instance(host: host, port: 8080, weight: 1 + i % 3, priority: i % 4 == 3 ? 1 : 0)
    }
}

func makeEndpoints(_ instances: [Instance]) -> [String: Endpoint<Int, Int>] {
    var byID: [String: Endpoint<Int, Int>] = [:]
    byID.reserveCapacity(instances.count)
    for instance in instances { byID[instance.id] = Endpoint<Int, Int>(instance: instance, enforcesDeadline: true) { $0 &+ 1 } }
    return byID
}

/// A balancer, type-erased only outside the measured loops.
protocol BalancerVisitor {
    mutating func visit<B: Balancer>(_ balancer: B) async where B.Request == Int, B.Response == Int
}

func withBalancer(_ name: String, _ cache: EndpointCache<Int, Int>, _ visitor: inout some BalancerVisitor) async {
    switch name {
    case "round-robin": await visitor.visit(RoundRobinBalancer(cache))
    case "random": await visitor.visit(RandomBalancer(cache))
    case "weighted-round-robin": await visitor.visit(WeightedRoundRobinBalancer(cache))
    case "weighted-random": await visitor.visit(WeightedRandomBalancer(cache))
    case "priority": await visitor.visit(PriorityBalancer(cache))
    case "p2c-least-outstanding": await visitor.visit(P2CBalancer(cache, metric: .leastOutstanding))
    case "p2c-peak-ewma": await visitor.visit(P2CBalancer(cache, metric: .peakEWMA()))
    case "consistent-hash": await visitor.visit(ConsistentHashBalancer(cache))
    default: fatalError("unknown balancer \(name)")
    }
}

final class Stop: Sendable {
    let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .relaxed) }
}

/// Picks on a thread of its own until stopped, timing each pick; returns the sorted latencies
/// (at most `limit`, every pick's until then) and the number of picks.
func timedPicks<B: Balancer>(_ balancer: B, until stop: Stop, started: DispatchSemaphore, limit: Int = 4_000_000) async -> (
    [UInt64], Int
) {
    await withCheckedContinuation { continuation in
        let thread = Thread {
            var samples = [UInt64]()
            samples.reserveCapacity(limit)
            var count = 0
            var sum = 0
            started.signal()
            while !stop.isSet {
                for _ in 0..<64 {
                    let start = wallNanoseconds()
                    sum &+= (try? balancer.pick().index) ?? 0
                    let end = wallNanoseconds()
                    if samples.count < limit { samples.append(end &- start) }
                }
                count += 64
            }
            if sum == -1 { print("") }
            samples.sort()
            continuation.resume(returning: (samples, count))
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
}

struct Row {
    var n: Int
    var balancer: String
    var firstWall: UInt64 = 0
    var firstCPU: UInt64 = 0
    var bytesPerInstance: Double = 0
    var changeWall: [UInt64] = []
    var changeCPU: [UInt64] = []
    var mallocsPerChange: Double = 0
    var idleP50: UInt64 = 0
    var idleP99: UInt64 = 0
    var idleP999: UInt64 = 0
    var floodRate: Double = 0
    var floodP50: UInt64 = 0
    var floodP99: UInt64 = 0
    var floodP999: UInt64 = 0
    var rateAchieved: Double = 0
    var rateP99: UInt64 = 0
    var rateP999: UInt64 = 0
    var controlRate: Double = 0
    var controlP99: UInt64 = 0
    var controlP999: UInt64 = 0
}

/// A second cache and a balancer of the same kind on it, for the paced phase's control.
struct Control {
    let cache: EndpointCache<Int, Int>
    let balancer: any Balancer<Int, Int>
}

/// Keeps the balancer it visits.
struct Capture: BalancerVisitor {
    var balancer: (any Balancer<Int, Int>)?
    mutating func visit<B: Balancer>(_ balancer: B) async where B.Request == Int, B.Response == Int { self.balancer = balancer }
}

struct Measure: BalancerVisitor {
    let options: Options
    let cache: EndpointCache<Int, Int>
    let instances: [Instance]
    var row: Row

    /// The control of the paced phase: a second cache of the same set with a balancer of the same
    /// kind, which the paced changes are applied to instead (the picks still read `cache`).
    let control: Control
    /// The updates applied to `cache`, and to the control's cache.
    var updates = Updates()
    var controlUpdates = Updates()

    /// The serial of the last update (`--updates hinted`), and the index of the instance last removed.
    struct Updates {
        var serial: UInt64 = 0
        var removed = 0
    }

    /// Applies the whole set (with a serial, when `--updates hinted`).
    mutating func applyWhole() async {
        await Self.applyWhole(to: cache, &updates, options: options, instances: instances)
    }

    static func applyWhole(to cache: EndpointCache<Int, Int>, _ updates: inout Updates, options: Options, instances: [Instance]) async {
        guard options.hinted else { return await cache.update(with: instances) }
        updates.serial += 1
        await cache.update(from: InstanceUpdate(instances: instances, serial: updates.serial))
    }

    /// Applies change number `change`, whose set is `set`: an even one removes the instance at
    /// `index` (or changes its weight, or removes it and the next one: `--change`), an odd one
    /// undoes it; with `--updates hinted`, as an update that says what changed.
    mutating func applyChange(_ change: Int, index: Int, set: [Instance]) async {
        await Self.applyChange(change, index: index, set: set, to: cache, &updates, options: options, instances: instances)
    }

    static func applyChange(
        _ change: Int, index: Int, set: [Instance], to cache: EndpointCache<Int, Int>, _ updates: inout Updates, options: Options,
        instances: [Instance]
    ) async {
        guard options.hinted else { return await cache.update(with: set) }
        let base = updates.serial
        updates.serial += 1
        let touched = Self.touched(index: change % 2 == 0 ? index : updates.removed, options: options, instances: instances)
        let changes: InstanceChanges
        switch (options.change, change % 2 == 0) {
        case (.weight, true): changes = InstanceChanges(base: base, upserted: [Self.reweighed(instances[index])], removed: [])
        case (_, true): changes = InstanceChanges(base: base, upserted: [], removed: touched.map { instances[$0].id })
        case (_, false): changes = InstanceChanges(base: base, upserted: touched.map { instances[$0] }, removed: [])
        }
        if change % 2 == 0 { updates.removed = index }
        await cache.update(from: InstanceUpdate(instances: set, serial: updates.serial, changes: changes))
    }

    /// The set after change number `change` at `index`: an even change's set (`--change`), or the
    /// whole set again.
    func changedSet(_ change: Int, _ index: Int) -> [Instance] {
        guard change % 2 == 0 else { return instances }
        var set = instances
        switch options.change {
        case .weight: set[index] = Self.reweighed(set[index])
        case .one, .several:
            for i in Self.touched(index: index, options: options, instances: instances).sorted(by: >) { set.remove(at: i) }
        }
        return set
    }

    /// The indices a change at `index` touches: it, and for `--change several` the next one.
    static func touched(index: Int, options: Options, instances: [Instance]) -> [Int] {
        options.change == .several && instances.count > 1 ? [index, (index + 1) % instances.count] : [index]
    }

    /// `instance` with its weight moved on (1 -> 2 -> 3 -> 1).
    static func reweighed(_ instance: Instance) -> Instance {
        var instance = instance
        instance.weight = 1 + instance.weight % 3
        return instance
    }

    /// Waits (spinning on picks) until a pick returns an endpoint of generation `generation` or later.
    func pickUntilSeen<B: Balancer>(_ balancer: B, generation: UInt32) {
        while true {
            if let pick = try? balancer.pick(), pick.generation >= generation { return }
        }
    }

    mutating func visit<B: Balancer>(_ balancer: B) async where B.Request == Int, B.Response == Int {
        // First set: the update plus the first pick (the table is built then, or when published).
        let heapBefore = heapBytes()
        let wall0 = wallNanoseconds()
        let cpu0 = cpuNanoseconds()
        await applyWhole()
        _ = try? balancer.pick()
        row.firstCPU = cpuNanoseconds() - cpu0
        row.firstWall = wallNanoseconds() - wall0
        // Calls from as many tasks as cores, each over every instance twice: the shards the
        // calling threads use make their leases (one per instance per shard), P2C its loads.
        let tasks = ProcessInfo.processInfo.activeProcessorCount
        let callsPerTask = 2 * instances.count
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<tasks {
                group.addTask {
                    for i in 0..<callsPerTask { _ = try? await balancer.call(i) }
                }
            }
        }
        row.bytesPerInstance = Double(heapBytes() - heapBefore) / Double(instances.count)

        // One change at a time: removed, then added back.
        var generator = SystemRandomNumberGenerator()
        MallocInterposerSwift.hook()
        var mallocTotal = 0
        for change in 0..<options.changes {
            let index = Int.random(in: 0..<instances.count, using: &generator)
            let set = changedSet(change, index)
            let generation = cache.snapshot.generation &+ 1
            let m0 = mallocs()
            let c0 = cpuNanoseconds()
            let w0 = wallNanoseconds()
            await applyChange(change, index: index, set: set)
            pickUntilSeen(balancer, generation: generation)
            let w1 = wallNanoseconds()
            let c1 = cpuNanoseconds()
            mallocTotal += mallocs() - m0
            row.changeWall.append(w1 - w0)
            row.changeCPU.append(c1 - c0)
        }
        MallocInterposerSwift.unhook()
        if options.changes % 2 == 1 { await applyChange(1, index: 0, set: instances) }
        row.mallocsPerChange = Double(mallocTotal) / Double(options.changes)
        row.changeWall.sort()
        row.changeCPU.sort()

        // Picks with no changes.
        do {
            let stop = Stop()
            let started = DispatchSemaphore(value: 0)
            async let picks = timedPicks(balancer, until: stop, started: started)
            await waitFor(started)
            try? await Task.sleep(for: .seconds(min(1, options.floodSeconds)))
            stop.flag.store(true, ordering: .relaxed)
            let (samples, _) = await picks
            row.idleP50 = percentile(samples, 50)
            row.idleP99 = percentile(samples, 99)
            row.idleP999 = percentile(samples, 99.9)
        }

        // A flood of changes while a thread picks, then 100 changes per second (paced).
        let flood = await changesWhilePicking(balancer, seconds: options.floodSeconds, perSecond: nil)
        row.floodRate = flood.rate
        row.floodP50 = percentile(flood.picks, 50)
        row.floodP99 = percentile(flood.picks, 99)
        row.floodP999 = percentile(flood.picks, 99.9)
        let paced = await changesWhilePicking(balancer, seconds: options.rateSeconds, perSecond: options.rate)
        row.rateAchieved = paced.rate
        row.rateP99 = percentile(paced.picks, 99)
        row.rateP999 = percentile(paced.picks, 99.9)
        // The control: the same paced changes and builds, applied to the control's cache, while
        // the thread picks from this one, whose set stays: what the changes' work costs the picks
        // by sharing the machine (cores, caches, memory), apart from what they do to this
        // balancer.
        await Self.applyWhole(to: control.cache, &controlUpdates, options: options, instances: instances)
        let controlled = await changesWhilePicking(balancer, seconds: options.rateSeconds, perSecond: options.rate, toControl: true)
        row.controlRate = controlled.rate
        row.controlP99 = percentile(controlled.picks, 99)
        row.controlP999 = percentile(controlled.picks, 99.9)
    }

    /// Applies changes for `seconds`, back to back or `perSecond` of them, while a thread of its
    /// own picks; returns the changes applied per second and the picks' latencies, sorted. Leaves
    /// the whole set in the cache.
    /// With `toControl`, the changes go to the control's cache (each followed by a pick of the
    /// control's balancer that sees it, so that a table built at the first pick is built) and
    /// `balancer`'s set does not change.
    mutating func changesWhilePicking<B: Balancer>(_ balancer: B, seconds: Double, perSecond: Double?, toControl: Bool = false) async -> (
        rate: Double, picks: [UInt64]
    )
    where B.Request == Int, B.Response == Int {
        var generator = SystemRandomNumberGenerator()
        let stop = Stop()
        let started = DispatchSemaphore(value: 0)
        async let picks = timedPicks(balancer, until: stop, started: started)
        await waitFor(started)
        let start = wallNanoseconds()
        let length = UInt64(seconds * 1e9)
        var applied = 0
        while wallNanoseconds() - start < length {
            if let perSecond {
                let due = start + UInt64(Double(applied) * 1e9 / perSecond)
                let now = wallNanoseconds()
                if now < due { try? await Task.sleep(for: .nanoseconds(Int64(due - now))) }
            }
            let index = Int.random(in: 0..<instances.count, using: &generator)
            let set = changedSet(applied, index)
            if toControl {
                let generation = control.cache.snapshot.generation &+ 1
                await Self.applyChange(
                    applied, index: index, set: set, to: control.cache, &controlUpdates, options: options, instances: instances)
                pickUntilSeen(control.balancer, generation: generation)
            } else {
                await applyChange(applied, index: index, set: set)
            }
            applied += 1
        }
        stop.flag.store(true, ordering: .relaxed)
        let (samples, _) = await picks
        if applied % 2 == 1, !toControl { await applyChange(1, index: 0, set: instances) }
        return (Double(applied) / seconds, samples)
    }
}

/// Waits for `semaphore` without blocking a thread of the concurrency pool.
func waitFor(_ semaphore: DispatchSemaphore) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        Thread {
            semaphore.wait()
            continuation.resume()
        }.start()
    }
}

MallocInterposerSwift.initialize()
let options = parse()
print(
    "scale: \(options.hinted ? "hinted updates, " : "")\(options.change == .one ? "" : "--change \(options.change.rawValue), ")\(ProcessInfo.processInfo.activeProcessorCount) cores, sizes \(options.sizes.map(String.init).joined(separator: ",")), \(options.changes) changes, flood \(options.floodSeconds) s, \(options.rate) changes/s for \(options.rateSeconds) s"
)
print(
    "n,balancer,first_wall_ms,first_cpu_ms,bytes_per_instance,change_wall_p50_ms,change_wall_p99_ms,change_cpu_p50_ms,change_cpu_p99_ms,mallocs_per_change,idle_pick_p50_us,idle_pick_p99_us,idle_pick_p999_us,flood_changes_per_s,flood_pick_p50_us,flood_pick_p99_us,flood_pick_p999_us,paced_changes_per_s,paced_pick_p99_us,paced_pick_p999_us,control_changes_per_s,control_pick_p99_us,control_pick_p999_us"
)
var lines: [String] = []
for n in options.sizes {
    let instances = makeInstances(n).sorted()
    for name in options.balancers {
        let endpoints = makeEndpoints(instances)
        let cache = EndpointCache<Int, Int>(
            factory: EndpointFactory { instance in
                guard let endpoint = endpoints[instance.id] else { throw CancellationError() }
                return ManagedEndpoint(endpoint)
            })
        let controlCache = EndpointCache<Int, Int>(
            factory: EndpointFactory { instance in
                guard let endpoint = endpoints[instance.id] else { throw CancellationError() }
                return ManagedEndpoint(endpoint)
            })
        var capture = Capture()
        await withBalancer(name, controlCache, &capture)
        guard let controlBalancer = capture.balancer else { fatalError("no balancer named \(name)") }
        let control = Control(cache: controlCache, balancer: controlBalancer)
        var measure = Measure(options: options, cache: cache, instances: instances, row: Row(n: n, balancer: name), control: control)
        await withBalancer(name, cache, &measure)
        let row = measure.row
        let line = [
            "\(n)", name, ms(row.firstWall), ms(row.firstCPU), String(format: "%.0f", row.bytesPerInstance),
            ms(percentile(row.changeWall, 50)), ms(percentile(row.changeWall, 99)),
            ms(percentile(row.changeCPU, 50)), ms(percentile(row.changeCPU, 99)),
            String(format: "%.1f", row.mallocsPerChange),
            us(row.idleP50), us(row.idleP99), us(row.idleP999),
            String(format: "%.0f", row.floodRate), us(row.floodP50), us(row.floodP99), us(row.floodP999),
            String(format: "%.0f", row.rateAchieved), us(row.rateP99), us(row.rateP999),
            String(format: "%.0f", row.controlRate), us(row.controlP99), us(row.controlP999),
        ].joined(separator: ",")
        print(line)
        lines.append(line)
        await cache.shutdown()
        await controlCache.shutdown()
    }
}
if let csv = options.csv {
    try! (lines.joined(separator: "\n") + "\n").write(toFile: csv, atomically: true, encoding: .utf8)
}
