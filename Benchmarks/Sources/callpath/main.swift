// The whole call path at any number of threads or tasks: pick() of every balancer, balancer.call,
// and Retry on the success path, each over 10 in-process endpoints that answer at once.
//
//   swift run -c release callpath [--what pick|call|retry|retry-plain|memory] [--balancer NAME|all]
//                                 [--threads 1,2,4,8,16] [--seconds 2] [--endpoints 10] [--rounds 2]
//                                 [--observe none|count|explain]
//
// --observe attaches a BalancerObserver to the balancer for the run: `count` counts picks per
// instance (the observed path), `explain` also explains one pick in 1,000.
//
// Wall time per op = wall time / all ops (Go's RunParallel definition): if the work scaled
// perfectly with cores it would fall as 1/threads. "pick" runs on threads (one per count); the
// calls run as that many tasks on Swift's concurrency pool. "retry" uses endpoints that enforce
// deadlines themselves (as LoadBalancerHTTP's do), "retry-plain" plain closure endpoints.
// "memory" does Retry calls with a 30 s timeout at full speed for --seconds (default 60) and
// reports the resident memory against the same run of plain balanced calls.
//
// Built with -DCALLPATH_BEFORE it compiles against the library before the call-path redesign
// (no deadline-aware endpoints there), so both can be measured side by side.
import BenchmarkCLI
import Foundation
import LoadBalancer
import Synchronization

struct Options {
    var what = "call"
    var balancers = ["round-robin"]
    var threads = [1, 2, 4, 8, 16]
    var seconds = 2.0
    var endpoints = 10
    var rounds = 2
    /// With an observer attached: `count` (picks counted) or `explain` (and one pick in 1,000
    /// explained); `none` by default.
    var observe = "none"
}

let usage = """
    usage: callpath [--what pick|call|retry|retry-plain|memory] [--balancer NAME,...|all]
                    [--threads 1,2,4,8,16] [--seconds 2] [--endpoints 10] [--rounds 2]
                    [--observe none|count|explain]
    """

func parse() -> Options {
    var options = Options()
    var reader = FlagReader(program: "callpath", usage: usage)
    while let (flag, value) = reader.next() {
        switch flag {
        case "--what":
            guard ["pick", "call", "retry", "retry-plain", "memory"].contains(value) else { reader.fail("unknown --what '\(value)'") }
            options.what = value
        case "--balancer": options.balancers = reader.balancers(value, known: allBalancers, extra: ["round-robin-exact"])
        case "--threads": options.threads = reader.positives(value, flag)
        case "--seconds": options.seconds = reader.positive(value, flag)
        case "--endpoints": options.endpoints = reader.positive(value, flag)
        case "--rounds": options.rounds = reader.positive(value, flag)
        case "--observe":
            guard ["none", "count", "explain"].contains(value) else { reader.fail("unknown --observe '\(value)'") }
            options.observe = value
        default: reader.fail("unknown flag \(flag)")
        }
    }
    return options
}

let allBalancers = allBalancerNames

func endpoints(_ count: Int, deadlineAware: Bool) -> [Endpoint<Int, Int>] {
    (0..<count).map { i in
        let instance = try! Instance(host: "127.0.0.1", port: 10_000 + i, weight: 1 + i % 3)
        #if CALLPATH_BEFORE
            return Endpoint<Int, Int>(instance: instance) { $0 &+ 1 }
        #else
            return Endpoint<Int, Int>(instance: instance, enforcesDeadline: deadlineAware) { $0 &+ 1 }
        #endif
    }
}

/// What to run with a balancer; `visit` is generic, so each concrete balancer type gets its own
/// specialised copy of the measured loops (as a user of the concrete type gets).
protocol BalancerVisitor {
    func visit<B: Balancer>(_ balancer: B) async where B.Request == Int, B.Response == Int
}

/// Runs `visitor` with the balancer named `name` over `cache`.
func withBalancer(_ name: String, _ cache: EndpointCache<Int, Int>, _ visitor: some BalancerVisitor) async {
    switch name {
    case "round-robin": await visitor.visit(RoundRobinBalancer(cache))
    case "round-robin-exact":
        #if CALLPATH_BEFORE
            await visitor.visit(RoundRobinBalancer(cache))
        #else
            await visitor.visit(RoundRobinBalancer(cache, rotation: .exact))
        #endif
    case "random": await visitor.visit(RandomBalancer(cache))
    case "weighted-round-robin": await visitor.visit(WeightedRoundRobinBalancer(cache))
    case "weighted-random": await visitor.visit(WeightedRandomBalancer(cache))
    case "priority": await visitor.visit(PriorityBalancer(cache))
    case "p2c-least-outstanding": await visitor.visit(P2CBalancer(cache, metric: .leastOutstanding))
    case "p2c-peak-ewma": await visitor.visit(P2CBalancer(cache, metric: .peakEWMA()))
    case "consistent-hash": await visitor.visit(ConsistentHashBalancer(cache))
    case "any-round-robin": await visitor.visit(AnyBalancer(RoundRobinBalancer(cache)))
    default: fatalError("unknown balancer \(name)")
    }
}

struct Measure: BalancerVisitor {
    var name: String
    var options: Options

    func visit<B: Balancer>(_ balancer: B) async where B.Request == Int, B.Response == Int {
        #if !CALLPATH_BEFORE
            // Kept alive until the measurements end.
            let observer: BalancerObserver? =
                switch options.observe {
                case "count": (balancer as? any ObservableBalancer<Int, Int>)?.observe()
                case "explain": (balancer as? any ObservableBalancer<Int, Int>)?.observe(explainingEvery: 1000)
                default: nil
                }
            defer { observer?.stop() }
        #endif
        var single: Double?
        for threads in options.threads {
            let ops: Int
            switch options.what {
            case "pick":
                ops = pickOnThreads(balancer, threads: threads, seconds: options.seconds)
            case "call":
                ops = await callFromTasks(tasks: threads, seconds: options.seconds) { i in try await balancer.call(i) }
            case "retry", "retry-plain":
                let retry = Retry(balancer, maxAttempts: 3, timeout: .seconds(1))
                ops = await callFromTasks(tasks: threads, seconds: options.seconds) { i in try await retry(i) }
            default:
                fatalError("unknown --what \(options.what)")
            }
            let rate = report(options.what, name, threads, ops, options.seconds, single)
            if single == nil { single = rate }
        }
    }
}

final class Stop: Sendable {
    let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .relaxed) }
}

/// Picks on `threads` threads for `seconds`; returns all picks.
func pickOnThreads<B: Balancer>(_ balancer: B, threads: Int, seconds: Double) -> Int {
    let stop = Stop()
    let total = Atomic<Int>(0)
    let done = DispatchSemaphore(value: 0)
    for _ in 0..<threads {
        let thread = Thread {
            var count = 0
            var sum = 0
            while !stop.isSet {
                for _ in 0..<1024 { sum &+= try! balancer.pick().index }
                count += 1024
            }
            if sum == -1 { print("") }
            total.add(count, ordering: .relaxed)
            done.signal()
        }
        thread.start()
    }
    Thread.sleep(forTimeInterval: seconds)
    stop.flag.store(true, ordering: .relaxed)
    for _ in 0..<threads { done.wait() }
    return total.load(ordering: .relaxed)
}

/// Runs `call` from `tasks` tasks for `seconds`; returns all calls.
func callFromTasks(tasks: Int, seconds: Double, _ call: @escaping @Sendable (Int) async throws -> Int) async -> Int {
    let stop = Stop()
    return await withTaskGroup(of: Int.self) { group in
        for _ in 0..<tasks {
            group.addTask {
                var count = 0
                var sum = 0
                while !stop.isSet {
                    for i in 0..<256 { sum &+= try! await call(i) }
                    count += 256
                }
                if sum == -1 { print("") }
                return count
            }
        }
        // The stop comes from a thread of its own: calls that never suspend can keep every thread
        // of the concurrency pool busy, so a task there might never get to run.
        Thread {
            Thread.sleep(forTimeInterval: seconds)
            stop.flag.store(true, ordering: .relaxed)
        }.start()
        var total = 0
        for await count in group { total += count }
        return total
    }
}

func residentMiB() -> Double {
    guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = statm.split(separator: " ")
    guard fields.count > 1, let pages = Double(fields[1]) else { return 0 }
    return pages * 4096 / 1_048_576
}

func report(_ what: String, _ balancer: String, _ threads: Int, _ ops: Int, _ seconds: Double, _ single: Double?) -> Double {
    let perSecond = Double(ops) / seconds
    let nsPerOp = seconds * 1e9 / Double(ops)
    let scaling = single.map { String(format: "%.2fx", perSecond / $0) } ?? "1.00x"
    print(
        String(
            format: "%-12@ %-24@ T=%-3d %10.1f ns/op (wall)  %12.0f ops/s  scaling %@", what as NSString, balancer as NSString, threads,
            nsPerOp, perSecond, scaling as NSString))
    return perSecond
}

let options = parse()
let machine = ProcessInfo.processInfo
print(
    "callpath: \(options.what), \(machine.activeProcessorCount) cores, \(options.endpoints) endpoints, \(options.seconds) s per cell, \(options.rounds) rounds"
)

if options.what == "memory" {
    let seconds = options.seconds < 10 ? 60 : options.seconds
    let cache = await EndpointCache(endpoints: endpoints(options.endpoints, deadlineAware: true))
    let plainCache = await EndpointCache(endpoints: endpoints(options.endpoints, deadlineAware: false))
    let tasks = machine.activeProcessorCount
    for (label, retryCache) in [
        ("plain calls", cache), ("retry (deadline-aware endpoints)", cache), ("retry (plain endpoints)", plainCache),
    ] {
        let balancer = RoundRobinBalancer(retryCache)
        let retry = Retry(balancer, maxAttempts: 3, timeout: .seconds(30))
        let before = residentMiB()
        let peak = Mutex(before)
        let sampler = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(250))
                let now = residentMiB()
                peak.withLock { $0 = max($0, now) }
            }
        }
        let isPlain = label == "plain calls"
        let ops = await callFromTasks(tasks: tasks, seconds: seconds) { i in
            isPlain ? try await balancer.call(i) : try await retry(i)
        }
        sampler.cancel()
        let high = peak.withLock { $0 }
        print(
            String(
                format: "memory: %-34@ %d tasks, %.0f s: %.0f calls/s, resident %.1f MiB before, peak %.1f MiB (+%.1f)", label as NSString,
                tasks, seconds, Double(ops) / seconds, before, high, high - before))
    }
    exit(0)
}

for round in 1...options.rounds {
    print("-- round \(round)")
    for name in options.balancers {
        let deadlineAware = options.what != "retry-plain"
        let cache = await EndpointCache(endpoints: endpoints(options.endpoints, deadlineAware: deadlineAware))
        await withBalancer(name, cache, Measure(name: name, options: options))
    }
}
