// The churn soak: continuous registry churn under load, then a clean shutdown.
//
//   swift run -c release churn-soak                    # 10 minutes (RELIABILITY.md's figures)
//   swift run churn-soak --seconds 60 --warmup 20 --max-growth 20    # the test command's short run
//
// Twelve local HTTP backends on 127.0.0.1. A publisher's set changes every 100 ms: an instance is
// added (a new id, at one of the backends' ports) or removed, the set kept between 2 and 10
// instances. Sixteen workers send requests all the while through `Retry` over a P2C peak-EWMA
// balancer with outlier ejection, over AsyncHTTPClient. Then everything is shut down.
//
// It checks, and exits 1 if any check fails:
// - memory is flat: the mean of the last 10% of the samples (one a second) is less than 5%
//   (`--max-growth`) above the mean of the first 10% after the warm-up, both for the resident size
//   (sampled right after malloc_trim, so pages malloc keeps but does not use are not counted;
//   `--no-trim` counts them) and, with glibc, for the bytes malloc has handed out (mallinfo2);
// - every endpoint the factory made was closed exactly once, and none is still alive after
//   shutdown (each holds a token that counts its deinitialisation);
// - after shutdown nothing is left: the pipeline's task group returned (every task it started has
//   ended: the cache, the churn, the workers and their attempts are all its children), no endpoint
//   call, factory call or close is in flight, no backend has an open connection, and no backend
//   gets a request in the second after;
// - at least 99.9% of the requests succeeded (removal takes an instance out of the set, its backend
//   stays up, so nothing should fail).
import AsyncHTTPClient
import CHeapInfo
import LoadBalancer
import LoadBalancerHTTP
import LoadBalancerLocalBackends
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

// MARK: - Options

struct Options {
    var seconds = 600
    var warmup: Int?
    var interval = Duration.milliseconds(100)
    var concurrency = 16
    /// Whether malloc's unused pages are given back before each memory sample (`--no-trim`: not).
    var trim = true
    /// The most memory may grow after the warm-up, in percent.
    var maxGrowth = 5

    /// The warm-up: 60 s, or a third of a shorter run.
    var warmupSeconds: Int { warmup ?? min(60, seconds / 3) }

    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var iterator = arguments.makeIterator()
        func number(_ name: String) -> Int {
            guard let text = iterator.next(), let value = Int(text), value > 0 else {
                fail("\(name) needs a positive whole number")
            }
            return value
        }
        while let argument = iterator.next() {
            switch argument {
            case "--seconds": options.seconds = number(argument)
            case "--warmup": options.warmup = number(argument)
            case "--concurrency": options.concurrency = number(argument)
            case "--no-trim": options.trim = false
            case "--max-growth": options.maxGrowth = number(argument)
            case "--help", "-h":
                print(
                    "usage: churn-soak [--seconds N (600)] [--warmup N (min(60, N/3))] [--concurrency N (16)] [--max-growth PERCENT (5)] [--no-trim]"
                )
                exit(0)
            default: fail("unknown argument '\(argument)' (see --help)")
            }
        }
        guard options.warmupSeconds < options.seconds, options.seconds >= 10 else {
            fail("the run must be at least 10 s and longer than its warm-up")
        }
        return options
    }
}

func fail(_ message: String) -> Never {
    print("churn-soak: \(message)")
    exit(2)
}

// MARK: - Ledgers

/// Every endpoint the factory made, how often each was closed, and what is in flight.
final class EndpointLedger: Sendable {
    private struct State {
        var closes: [Int] = []
        var factoryCalls = 0
        var calls = 0
        var closing = 0
        var alive = 0
    }
    private let state = Mutex(State())

    func factoryStarted() { state.withLock { $0.factoryCalls += 1 } }
    func factoryEnded() { state.withLock { $0.factoryCalls -= 1 } }

    /// Records a new endpoint; returns its serial.
    func made() -> Int {
        state.withLock { state in
            state.closes.append(0)
            return state.closes.count - 1
        }
    }

    func closeStarted(_ serial: Int) {
        state.withLock { state in
            state.closes[serial] += 1
            state.closing += 1
        }
    }
    func closeEnded() { state.withLock { $0.closing -= 1 } }
    func born() { state.withLock { $0.alive += 1 } }
    func died() { state.withLock { $0.alive -= 1 } }
    /// Endpoints not yet deinitialised.
    var alive: Int { state.withLock { $0.alive } }
    func callStarted() { state.withLock { $0.calls += 1 } }
    func callEnded() { state.withLock { $0.calls -= 1 } }

    var summary: (made: Int, closedOnce: Int, neverClosed: Int, closedTwice: Int, inFlight: Int) {
        state.withLock { state in
            (
                state.closes.count,
                state.closes.count(where: { $0 == 1 }),
                state.closes.count(where: { $0 == 0 }),
                state.closes.count(where: { $0 > 1 }),
                state.factoryCalls + state.calls + state.closing
            )
        }
    }
}

/// Lives as long as the endpoint whose closure holds it: counts endpoints not yet released.
final class LifeToken: Sendable {
    let ledger: EndpointLedger
    init(_ ledger: EndpointLedger) {
        self.ledger = ledger
        ledger.born()
    }
    deinit { ledger.died() }
}

/// Request outcomes.
final class Outcomes: Sendable {
    private let state = Mutex((succeeded: 0, failed: 0, longest: Duration.zero, errors: [String: Int]()))
    func record(_ took: Duration, _ error: (any Error)?) {
        state.withLock { state in
            if let error {
                state.failed += 1
                state.errors[String(describing: error).prefix(120).description, default: 0] += 1
            } else {
                state.succeeded += 1
            }
            state.longest = max(state.longest, took)
        }
    }
    var snapshot: (succeeded: Int, failed: Int, longest: Duration, errors: [String: Int]) { state.withLock { $0 } }
}

/// The resident set size of this process in bytes, from /proc/self/statm; nil where there is none.
func residentBytes() -> Int? {
    #if os(Linux)
        // "size resident shared text lib data dt", in pages.
        guard let file = fopen("/proc/self/statm", "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 128)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
        let fields = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
        return pages * sysconf(Int32(_SC_PAGESIZE))
    #else
        return nil
    #endif
}

func mebibytes(_ bytes: Double) -> String {
    let tenths = Int((bytes / 1_048_576 * 10).rounded())
    return "\(tenths / 10).\(tenths % 10) MiB"
}

// MARK: - The run

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
print(
    "churn-soak: \(options.seconds) s (warm-up \(options.warmupSeconds) s), a change every \(options.interval), \(options.concurrency) workers"
)

var started: [LocalHTTPBackend] = []
for i in 0..<12 { started.append(try await LocalHTTPBackend.start(.init(latency: .milliseconds(1), seed: UInt64(i + 1)))) }
let backends = started

let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPEndpointFactory.clientConfiguration())
let ledger = EndpointLedger()
let http = HTTPEndpointFactory.make(client: client)
let factory = EndpointFactory<HTTPCall, HTTPReply> { instance in
    ledger.factoryStarted()
    defer { ledger.factoryEnded() }
    let made = try await http(instance)
    let serial = ledger.made()
    let token = LifeToken(ledger)
    let endpoint = Endpoint<HTTPCall, HTTPReply>(instance: instance) { call in
        _ = token
        ledger.callStarted()
        defer { ledger.callEnded() }
        return try await made.endpoint(call)
    }
    return ManagedEndpoint(endpoint) {
        ledger.closeStarted(serial)
        defer { ledger.closeEnded() }
        try await made.close?()
    }
}
let publisher = FixedPublisher()
let cache = EndpointCache(publisher: publisher, factory: factory)
let balancer = P2CBalancer(cache, metric: .peakEWMA(), ejection: OutlierDetector(cache))
var configured = Retry(balancer, maxAttempts: 3, timeout: .seconds(5))
configured.budget = RetryBudget()
let retry = configured
let outcomes = Outcomes()
let stopping = Atomic<Bool>(false)
let samples = Mutex<[Sample]>([])

/// One second's memory: the resident size (after malloc's unused pages were given back, unless
/// `--no-trim`), the resident size before that, and the bytes malloc has handed out (-1: unknown).
struct Sample {
    var second: Int
    var bytes: Int
    var untrimmed: Int
    var heap: Int
}

/// Samples the process's memory.
func sample(_ second: Int) -> Sample? {
    guard let untrimmed = residentBytes() else { return nil }
    if options.trim { _ = lb_heap_trim() }
    let bytes = options.trim ? residentBytes() ?? untrimmed : untrimmed
    return Sample(second: second, bytes: bytes, untrimmed: untrimmed, heap: Int(lb_heap_in_use()))
}
let changes = Atomic<Int>(0)

/// The churn: a new set every interval, one instance added or removed, each added instance a new id.
@Sendable func churn() async throws {
    var random = SystemRandomNumberGenerator()
    var serial = 0
    func fresh() throws -> Instance {
        serial += 1
        let backend = backends[Int.random(in: 0..<backends.count, using: &random)]
        return try Instance(host: "127.0.0.1", port: backend.port, id: "soak-\(serial)@\(backend.port)")
    }
    var current = try (0..<5).map { _ in try fresh() }
    publisher.replace(with: current)
    let start = ContinuousClock.now
    var tick = 0
    while true {
        tick += 1
        do {
            try await Task.sleep(until: start + options.interval * tick, clock: .continuous)
        } catch {
            return // cancelled: the run is over
        }
        let add = current.count <= 2 || (current.count < 10 && Bool.random(using: &random))
        if add {
            current.append(try fresh())
        } else {
            current.remove(at: Int.random(in: 0..<current.count, using: &random))
        }
        publisher.replace(with: current)
        changes.add(1, ordering: .relaxed)
    }
}

/// One worker: requests until told to stop.
@Sendable func work() async {
    while !stopping.load(ordering: .relaxed) {
        let start = ContinuousClock.now
        do {
            _ = try await retry(HTTPCall(path: "/"))
            outcomes.record(.now - start, nil)
        } catch {
            outcomes.record(.now - start, error)
        }
    }
}

let runStart = ContinuousClock.now
var shutdownTook = Duration.zero
try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask {
        do {
            try await cache.run()
        } catch is CancellationError {
            // The shutdown.
        }
    }
    group.addTask { try await churn() }
    await cache.waitUntilReady()
    try await withThrowingTaskGroup(of: Void.self) { workers in
        for _ in 0..<options.concurrency { workers.addTask { await work() } }
        // The sampler, and the clock of the run.
        for second in 1...options.seconds {
            try await Task.sleep(until: runStart + .seconds(second), clock: .continuous)
            let taken = sample(second)
            if let taken { samples.withLock { $0.append(taken) } }
            if second % 10 == 0 || second == options.seconds {
                let result = outcomes.snapshot
                let rss = taken.map { mebibytes(Double($0.bytes)) } ?? "?"
                let heapText = taken.map { $0.heap < 0 ? "?" : mebibytes(Double($0.heap)) } ?? "?"
                let connections = backends.map(\.openConnections).reduce(0, +)
                print(
                    "  \(second) s: \(result.succeeded) ok, \(result.failed) failed, \(changes.load(ordering: .relaxed)) changes, \(cache.snapshot.count) instances, \(connections) connections, RSS \(rss), heap \(heapText)"
                )
            }
        }
        stopping.store(true, ordering: .relaxed)
        let shutdownStart = ContinuousClock.now
        try await workers.waitForAll()
        group.cancelAll()
        try await group.waitForAll()
        shutdownTook = .now - shutdownStart
    }
}
// Every task the run started has ended here (structured concurrency: they were the group's children).
let afterShutdown = ledger.summary
// The cache has let go of every endpoint: none may still be alive (the balancer's snapshot is empty).
let aliveAfterShutdown = ledger.alive
let servedAtShutdown = backends.map(\.served.total)
try await client.shutdown().get()
// The client's connections close asynchronously: wait for the backends to see them go (bounded).
let connectionDeadline = ContinuousClock.now + .seconds(5)
while backends.contains(where: { $0.openConnections > 0 }), ContinuousClock.now < connectionDeadline {
    try await Task.sleep(for: .milliseconds(10))
}
let openConnections = backends.map(\.openConnections).reduce(0, +)
try await Task.sleep(for: .seconds(1))
let lateRequests = zip(backends.map(\.served.total), servedAtShutdown).map { $0 - $1 }.reduce(0, +)
for backend in backends { try? await backend.stop() }

// MARK: - The verdict

let result = outcomes.snapshot
let total = result.succeeded + result.failed
let successRate = total == 0 ? 0 : Double(result.succeeded) / Double(total)
var failures: [String] = []
print("requests: \(total) (\(total / options.seconds)/s), \(result.failed) failed, longest \(result.longest)")
if !result.errors.isEmpty { print("errors: \(result.errors)") }
if successRate < 0.999 { failures.append("success rate \(successRate) is below 99.9%") }
print("set changes: \(changes.load(ordering: .relaxed))")

let taken = samples.withLock { $0 }
if taken.isEmpty {
    print("memory: not measured on this platform (no /proc/self/statm)")
} else {
    let afterWarmup = taken.filter { $0.second > options.warmupSeconds }
    let window = max(1, afterWarmup.count / 10)
    func mean(_ part: ArraySlice<Sample>, _ value: (Sample) -> Int) -> Double {
        Double(part.map(value).reduce(0, +)) / Double(part.count)
    }
    func percent(_ value: Double) -> String { "\(Double(Int((value * 100).rounded())) / 100)%" }
    /// Prints the growth of one measure from the first window after the warm-up to the last one.
    func report(_ name: String, _ value: (Sample) -> Int) -> Double {
        let baseline = mean(afterWarmup.prefix(window), value)
        let final = mean(afterWarmup.suffix(window), value)
        let growth = (final / baseline - 1) * 100
        let peak = Double(taken.map(value).max() ?? 0)
        print(
            "\(name): at 1 s \(mebibytes(Double(taken.first.map(value) ?? 0))); after the warm-up \(mebibytes(baseline)) (mean of the first \(window) s), at the end \(mebibytes(final)) (last \(window) s): growth \(percent(growth)); peak \(mebibytes(peak))"
        )
        return growth
    }
    print("memory, window: \(window) s")
    let growth = report(options.trim ? "RSS (sampled after malloc_trim)" : "RSS", \.bytes)
    let limit = Double(options.maxGrowth)
    if growth >= limit { failures.append("RSS grew \(growth)% after the warm-up (limit \(options.maxGrowth)%)") }
    if options.trim { _ = report("RSS before each trim", \.untrimmed) }
    if taken.allSatisfy({ $0.heap >= 0 }) {
        let heapGrowth = report("heap in use (mallinfo2)", \.heap)
        if heapGrowth >= limit { failures.append("the heap in use grew \(heapGrowth)% after the warm-up (limit \(options.maxGrowth)%)") }
    }
}

print(
    "endpoints: \(afterShutdown.made) made, \(afterShutdown.closedOnce) closed once, \(afterShutdown.neverClosed) never closed, \(afterShutdown.closedTwice) closed more than once"
)
if afterShutdown.made == 0 { failures.append("the factory made no endpoint") }
if afterShutdown.closedOnce != afterShutdown.made { failures.append("not every endpoint was closed exactly once") }
print("endpoints still alive after shutdown: \(aliveAfterShutdown)")
if aliveAfterShutdown != 0 { failures.append("\(aliveAfterShutdown) endpoints still alive after shutdown (leaked)") }
print(
    "shutdown: took \(shutdownTook); in flight after it: \(afterShutdown.inFlight); connections open after the client's shutdown: \(openConnections); requests in the second after: \(lateRequests)"
)
if afterShutdown.inFlight != 0 {
    failures.append("\(afterShutdown.inFlight) calls, factory calls or closes still in flight after shutdown")
}
if openConnections != 0 { failures.append("\(openConnections) connections still open") }
if lateRequests != 0 { failures.append("\(lateRequests) requests arrived after shutdown") }

if failures.isEmpty {
    print("churn-soak: passed")
} else {
    for failure in failures { print("churn-soak: FAILED: \(failure)") }
    exit(1)
}
