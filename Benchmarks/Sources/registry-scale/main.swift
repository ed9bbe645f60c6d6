// Each registry at scale: what the publisher's first read costs, and how long a change takes to
// reach the balancer, with 100, 1,000 and 10,000 instances registered.
//
//   swift run -c release registry-scale [all|etcd|zookeeper|consul|dns] [--sizes 100,1000,10000] [--changes 100]
//
// etcd and ZooKeeper: a real server on loopback per size (ports and a data directory of its own,
// removed at the end). The instances are registered through the project's client, 64 requests in
// flight. Then:
//   - one read of everything in a single request (etcd: one Range of the whole prefix, unpaged;
//     ZooKeeper: the list of children): its time;
//   - the publisher's first read (etcd: the prefix in pages of 1,000 at one revision; ZooKeeper:
//     the children, then each child's data): the time from its start to its first update with
//     every instance, and the growth of the process's resident set meanwhile (peak minus before);
//   - `changes` changes with the publisher feeding an EndpointCache, alternately the registration
//     of a new instance and the removal of the previous one, each timed from just before the write
//     to the cache publishing a set that holds it: p50, p99, max; and the process's CPU time per
//     change over them, next to that of the same writes under a path no publisher watches (the
//     writer's own share).
// Consul: the project's ConsulTestServer (in process) with n passing instances of one service; the
//   /v1/health/service answer: its bytes, the time of the raw HTTP fetch, the time of the client's
//   fetch and decode (ConsulClient.healthService), the difference (the decode), and the growth of
//   the resident set during the client's call.
// DNS: dnsmasq on loopback with k SRV records for one name, for growing k: whether the answer
//   holds all k records (over TCP, after a truncated UDP answer), its size, and the time to decode
//   it (DNSMessage.parse), up to the largest k dnsmasq serves whole.
//
// Memory figures are the resident set (VmHWM, reset through /proc/self/clear_refs) on Linux.
import AsyncHTTPClient
import CHeapInfo
import ConsulTestServer
import Foundation
import LoadBalancer
import LoadBalancerConsul
import LoadBalancerDNS
import LoadBalancerTestServers
import RegistryBenchSupport
import Synchronization

// MARK: - Arguments

/// What to run, from the command line.
struct Options: Sendable {
    var what = "all"
    var sizes = [100, 1_000, 10_000]
    var changes = 100

    static func parse() -> Options {
        var options = Options()
        var arguments = Array(CommandLine.arguments.dropFirst())[...]
        while let argument = arguments.popFirst() {
            switch argument {
            case "--sizes":
                options.sizes = (arguments.popFirst() ?? "").split(separator: ",").compactMap { Int($0) }
            case "--changes":
                options.changes = arguments.popFirst().flatMap(Int.init) ?? options.changes
            case "all", "etcd", "zookeeper", "consul", "dns":
                options.what = argument
            default:
                print("usage: registry-scale [all|etcd|zookeeper|consul|dns] [--sizes 100,1000,10000] [--changes 100]")
                exit(2)
            }
        }
        guard !options.sizes.isEmpty, options.sizes.allSatisfy({ $0 > 0 && $0 <= 50_000 }), options.changes >= 2 else {
            print("--sizes needs numbers in 1...50000, --changes at least 2")
            exit(2)
        }
        return options
    }
}

// MARK: - Memory

/// The resident set now and its peak since the last ``resetPeak()``, in KiB (0 where /proc is not there).
func resident() -> (now: Int, peak: Int) {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0) }
    func field(_ name: String) -> Int {
        for line in status.split(separator: "\n") where line.hasPrefix(name + ":") {
            return Int(line.dropFirst(name.count + 1).filter(\.isNumber)) ?? 0
        }
        return 0
    }
    return (field("VmRSS"), field("VmHWM"))
}

/// Gives malloc's free pages back, then resets the resident-set peak to the current resident set.
func resetPeak() {
    _ = lb_heap_trim()
    try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
}

/// Runs `body` and returns its result, its time, and how far the resident set rose above where it
/// was before (MiB).
func measured<T>(_ body: () async throws -> T, isolation: isolated (any Actor)? = #isolation) async rethrows -> (
    T, Duration, Double
) {
    resetPeak()
    let before = resident().now
    let start = ContinuousClock.now
    let result = try await body()
    let elapsed = ContinuousClock.now - start
    return (result, elapsed, Double(max(0, resident().peak - before)) / 1024)
}

func mib(_ value: Double) -> String { String(format: "%.1f MiB", value) }
func seconds(_ d: Duration) -> String { String(format: "%.2f s", milliseconds(d) / 1e3) }

/// Runs `count` operations, `width` at a time.
func concurrently(_ count: Int, width: Int = 64, _ operation: @escaping @Sendable (Int) async throws -> Void) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for i in 0..<count {
            if i >= width { try await group.next() }
            group.addTask { try await operation(i) }
        }
        try await group.waitForAll()
    }
}

// MARK: - etcd and ZooKeeper

/// A host and port to look for in a published set.
final class Probe: Sendable {
    private let target = Mutex<(host: String, port: Int)?>(nil)
    func set(_ host: String, _ port: Int) { target.withLock { $0 = (host, port) } }
    /// Whether `set` holds the target (an integer comparison first, so a scan of 10,000 is cheap).
    func isIn(_ set: EndpointSetView) -> Bool {
        guard let (host, port) = target.withLock({ $0 }) else { return false }
        return set.instances.contains { $0.port == port && $0.host == host }
    }
}

struct WatchedRegistryFigures {
    var n: Int
    var register: Duration
    var readAll: Duration
    var firstRead: Duration
    var firstReadMemory: Double
    /// ZooKeeper: the children and every child's data, one read at a time and 64 at a time.
    var everyChild: (oneByOne: Duration, pipelined: Duration)?
    var p50: Duration
    var p99: Duration
    var max: Duration
    /// The process's CPU time per change (the write, the publisher, the cache), and per write of
    /// the same kind where no publisher watches (the writer alone).
    var cpuPerChange: Duration
    var writerCPUPerChange: Duration
}

func measureWatched(_ name: String, n: Int, changes: Int) async throws -> WatchedRegistryFigures {
    let registry = try await makeRegistry(name)
    defer { registry.stop() }
    return try await withThrowingTaskGroup(of: Void.self) { group in
        defer { group.cancelAll() }
        group.addTask { await registry.clientService() }
        try await registry.ready()

        // Registration (not part of the figures the publisher is judged by, but reported).
        let registerStart = ContinuousClock.now
        try await concurrently(n) { i in try await registry.add(100_000 + i, "127.0.0.2:\(10_000 + i % 50_000)") }
        let register = ContinuousClock.now - registerStart

        // One request for everything (best of 3).
        var readAll = Duration.seconds(3600)
        for _ in 0..<3 {
            let start = ContinuousClock.now
            let count = try await registry.readAll()
            readAll = min(readAll, ContinuousClock.now - start)
            guard count == n else { throw ClusterError("read \(count) of \(n)") }
        }

        var everyChild: (Duration, Duration)?
        if let readEveryChild = registry.readEveryChild {
            // Best of 3 each, alternating.
            var oneByOne = Duration.seconds(3600)
            var pipelined = Duration.seconds(3600)
            for _ in 0..<3 {
                var start = ContinuousClock.now
                _ = try await readEveryChild(1)
                oneByOne = min(oneByOne, ContinuousClock.now - start)
                start = ContinuousClock.now
                _ = try await readEveryChild(64)
                pipelined = min(pipelined, ContinuousClock.now - start)
            }
            everyChild = (oneByOne, pipelined)
        }

        // The publisher's first read, subscribed before it starts.
        var updates = registry.publisher.updates().makeAsyncIterator()
        let (_, firstRead, firstReadMemory) = try await measured {
            group.addTask { await registry.publisherService() }
            while let update = await updates.next() {
                if update.instances.count == n { return }
                if let error = update.error, error.code != .invalidInstances { throw error }
            }
            throw ClusterError("the publisher stopped")
        }

        // Changes through an EndpointCache.
        let cache = EndpointCache(publisher: registry.publisher, factory: EndpointFactory<Int, Int>.calling { _, request in request })
        let probe = Probe()
        let watcher = SetWatcher { set in (count: set.count, holds: probe.isIn(set)) }
        cache.addObserver(watcher)
        group.addTask { try await cache.run() }
        await cache.waitUntilReady()
        var sets = watcher.sets.makeAsyncIterator()
        while let (_, summary) = await sets.next(), summary.count < n {}
        var samples: [Duration] = []
        let cpuStart = processCPUTime()
        for i in 0..<changes {
            if i % 2 == 0 {
                probe.set("127.0.0.1", 20_000 + i)
                samples.append(try await time(&sets, until: { $0.holds }) { try await registry.add(i, "127.0.0.1:\(20_000 + i)") })
            } else {
                // The probe still names the instance added last: wait until it is gone.
                samples.append(try await time(&sets, until: { !$0.holds }) { try await registry.remove(i - 1) })
            }
        }
        let cpu = processCPUTime() - cpuStart
        // The same writes where nothing watches: what the writer costs by itself.
        let writerStart = processCPUTime()
        for i in 0..<changes {
            if i % 2 == 0 {
                try await registry.addOutside(i, "127.0.0.1:\(20_000 + i)")
            } else {
                try await registry.removeOutside(i - 1)
            }
        }
        let writerCPU = processCPUTime() - writerStart
        samples.sort()
        return WatchedRegistryFigures(
            n: n, register: register, readAll: readAll, firstRead: firstRead, firstReadMemory: firstReadMemory,
            everyChild: everyChild, p50: percentile(samples, 0.5), p99: percentile(samples, 0.99), max: samples.last!,
            cpuPerChange: cpu / changes, writerCPUPerChange: writerCPU / changes
        )
    }
}

func reportWatched(
    _ name: String, _ title: String, firstReadLabel: String, readAllLabel: String, sizes: [Int], changes: Int
) async throws {
    print("\n## \(title)\n")
    print(
        "| n | register (64 in flight) | \(readAllLabel) | \(firstReadLabel) | its memory (RSS growth) | change p50 | change p99 | change max | CPU per change | writer's CPU per write |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    var everyChild: [(Int, Duration, Duration)] = []
    for n in sizes {
        let f = try await measureWatched(name, n: n, changes: changes)
        if let (oneByOne, pipelined) = f.everyChild { everyChild.append((n, oneByOne, pipelined)) }
        print(
            "| \(n) | \(seconds(f.register)) | \(ms(f.readAll)) | \(ms(f.firstRead)) | \(mib(f.firstReadMemory)) | \(ms(f.p50)) | \(ms(f.p99)) | \(ms(f.max)) | \(ms(f.cpuPerChange)) | \(ms(f.writerCPUPerChange)) |"
        )
    }
    print("(\(changes) changes per size, alternately a registration and a removal)")
    print(
        "(CPU per change: this process's CPU time, every thread, over the changes, divided by their number: the write, the"
            + " publisher and the cache; the writer's: the same writes under a path nothing watches)")
    if !everyChild.isEmpty {
        print("\n| n | children + every child's data, 1 read at a time | 64 reads in flight |")
        print("|---|---|---|")
        for (n, oneByOne, pipelined) in everyChild { print("| \(n) | \(ms(oneByOne)) | \(ms(pipelined)) |") }
    }
}

// MARK: - Consul

func reportConsul(sizes: [Int]) async throws {
    print("\n## Consul (ConsulTestServer, /v1/health/service/api?passing)\n")
    print("| n | answer bytes | raw fetch (AHC) | client fetch + decode | decode (difference) | client call's memory (RSS growth) |")
    print("|---|---|---|---|---|---|")
    for n in sizes {
        let server = try await ConsulTestServer.start()
        for i in 0..<n {
            server.addService(
                id: "api-\(i)", name: "api", address: "10.0.\(i / 250).\(i % 250 + 1)", port: 8000 + i % 1000,
                tags: ["v1", "http"], meta: ["zone": "zone-\(i % 3)", "version": "1.4.2"]
            )
        }
        let url = "http://127.0.0.1:\(server.port)/v1/health/service/api?passing"
        let client = ConsulClient(configuration: ConsulConfiguration(port: server.port))
        let figures = try await withThrowingTaskGroup(of: Void.self) { group in
            defer { group.cancelAll() }
            group.addTask { try await client.run() }
            // Best of 5 each; the first call of each warms the connection.
            var raw = Duration.seconds(3600)
            var bytes = 0
            for _ in 0..<5 {
                let start = ContinuousClock.now
                let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(30))
                let body = try await response.body.collect(upTo: 1 << 30)
                raw = min(raw, ContinuousClock.now - start)
                bytes = body.readableBytes
            }
            var decoded = Duration.seconds(3600)
            var memory = 0.0
            for _ in 0..<5 {
                let (result, elapsed, grown) = try await measured {
                    try await client.healthService("api", index: nil, wait: nil)
                }
                guard result.entries.count == n else { throw ClusterError("decoded \(result.entries.count) of \(n)") }
                decoded = min(decoded, elapsed)
                memory = max(memory, grown)
            }
            return (bytes, raw, decoded, memory)
        }
        await client.shutdown()
        await server.stop()
        let (bytes, raw, decoded, memory) = figures
        print(
            "| \(n) | \(bytes) (\(mib(Double(bytes) / 1_048_576))) | \(ms(raw)) | \(ms(decoded)) | \(ms(max(.zero, decoded - raw))) | \(mib(memory)) |"
        )
    }
    print("(best of 5 for the times, largest of 5 for the memory; ConsulConfiguration.maxResponseSize is 16 MiB by default)")
}

// MARK: - DNS

struct DNSFigures {
    var records: Int
    var served: Int
    var viaTCP: Bool
    var bytes: Int
    var decode: Duration
}

func measureDNS(_ server: Dnsmasq, records k: Int) async throws -> DNSFigures {
    let name = "_api._tcp.scale.lbtest"
    try await server.launch(
        (0..<k).map { i in "srv-host=\(name),h\(i).scale.lbtest,\(8000 + i % 1000),0,1" }
    )
    let client = DNSClient(configuration: .nameserver(server.nameserver, timeout: .seconds(5), attempts: 1))
    let answer: DNSAnswer
    do {
        answer = try await client.query(name, type: .srv)
    } catch {
        // Reported as a row (served -1), not fatal: the search goes on.
        print("the query with \(k) SRV records failed: \(error)")
        return DNSFigures(records: k, served: -1, viaTCP: true, bytes: 0, decode: .zero)
    }
    let bytes = answer.message.serialized()
    // The decode alone, best of 20 rounds of 10.
    var decode = Duration.seconds(3600)
    for _ in 0..<20 {
        let start = ContinuousClock.now
        for _ in 0..<10 { _ = try DNSMessage.parse(bytes) }
        decode = min(decode, (ContinuousClock.now - start) / 10)
    }
    return DNSFigures(records: k, served: answer.message.answers.count, viaTCP: answer.viaTCP, bytes: bytes.count, decode: decode)
}

func reportDNS() async throws {
    print("\n## DNS (dnsmasq, SRV records of one name)\n")
    let server = try await Dnsmasq.start([])
    do {
        try await reportDNS(on: server)
    } catch {
        await server.stop()
        throw error
    }
    await server.stop()
}

func reportDNS(on server: Dnsmasq) async throws {
    var rows: [DNSFigures] = []
    // Grow k until dnsmasq stops serving every record, then bisect for the largest k it serves whole.
    var good = 0
    var bad: Int?
    for k in [100, 1_000, 2_000, 4_000, 8_000, 16_000] {
        let figures = try await measureDNS(server, records: k)
        rows.append(figures)
        if figures.served == k {
            good = k
        } else {
            bad = k
            break
        }
    }
    if var high = bad {
        var low = good
        while high - low > 1 {
            let mid = (low + high) / 2
            let figures = try await measureDNS(server, records: mid)
            if figures.served == mid { low = mid } else { high = mid }
        }
        let largest = try await measureDNS(server, records: low)
        rows.append(largest)
        let first = try await measureDNS(server, records: high)
        rows.append(first)
        print("largest SRV answer served whole: \(low) records, \(largest.bytes) bytes over \(largest.viaTCP ? "TCP" : "UDP")\n")
    }
    print("| SRV records configured | records in the answer | transport | answer bytes | decode (DNSMessage.parse) |")
    print("|---|---|---|---|---|")
    for row in rows.sorted(by: { $0.records < $1.records }) {
        print(
            "| \(row.records) | \(row.served) | \(row.viaTCP ? "TCP" : "UDP") | \(row.bytes) | \(String(format: "%.1f µs", milliseconds(row.decode) * 1e3)) |"
        )
    }
}

// MARK: - Main

let options = Options.parse()
let startedAt = Date()
print(
    "registry-scale \(options.what), sizes \(options.sizes.map(String.init).joined(separator: ", ")), \(options.changes) changes; started \(startedAt)"
)
if options.what == "all" || options.what == "etcd" {
    try await reportWatched(
        "etcd", "etcd (one member; publisher pages of 1,000)", firstReadLabel: "publisher's first list (paged)",
        readAllLabel: "one unpaged Range", sizes: options.sizes, changes: options.changes)
}
if options.what == "all" || options.what == "zookeeper" {
    try await reportWatched(
        "zookeeper", "ZooKeeper (standalone)", firstReadLabel: "publisher's first read (children + each child's data)",
        readAllLabel: "getChildren", sizes: options.sizes, changes: options.changes)
}
if options.what == "all" || options.what == "consul" { try await reportConsul(sizes: options.sizes) }
if options.what == "all" || options.what == "dns" { try await reportDNS() }
print("\ndone in \(String(format: "%.0f", Date().timeIntervalSince(startedAt))) s")
