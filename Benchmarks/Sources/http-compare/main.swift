// Real HTTP, same run, same server: the HTTP clients of issue 16's last target side by side.
//
//   Benchmarks/scripts/http-compare.sh [--rounds 2] [--seconds 6] [--concurrency 16]   # starts nginx, builds, runs this
//   http-compare --port P --hey PATH|--wrk PATH --lbctl PATH [--rounds 2] [--seconds 6] [--concurrency 16]
//
// Against one HTTP server on 127.0.0.1:P that answers `GET /` with 200 "ok" (the script starts nginx),
// each round runs, one after another, C requests in flight for S seconds each:
//   1. hey -c C -z S (or wrk -t1 -c C -d S), a child process;
//   2. plain AsyncHTTPClient, a pool of C connections: C tasks in a loop, each doing GET /;
//   3. the library's HTTP factory (LoadBalancerHTTP) + RoundRobinBalancer `call` over the one instance,
//      pool C (HTTPEndpointFactory.clientConfiguration(concurrency: C));
//   4. the same through Retry(maxAttempts: 1, timeout: 2 s), and 5. Retry(maxAttempts: 3, timeout: 2 s);
//   6. lbctl bench static://127.0.0.1:P --concurrency C --retries 0, and 7. --retries 2 --timeout 2,
//      child processes (lbctl has no duration option: --requests is S x this round's rate of 3., resp. 5.).
// Each in-process client has its own HTTPClient, shut down after it. Per client: requests per second
// (successful requests / wall time), p99 latency, client CPU per request (getrusage of this process
// around the loop for 2-5; the child's rusage from wait4 for 1, 6, 7, its whole life), and the
// connections to the server (the most ESTABLISHED client sockets to port P in /proc/net/tcp at 1/4,
// 1/2 and 3/4 of the run). Then the ratios of issue 16's targets, per round, as markdown.
import AsyncHTTPClient
import LoadBalancer
import LoadBalancerHTTP

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

// MARK: - Options

struct Options {
    var host = "127.0.0.1"
    var port = 0
    var rounds = 2
    var seconds = 6.0
    var concurrency = 16
    /// The external load generator: hey, or wrk where hey is not available.
    var hey: String?
    var wrk: String?
    var lbctl: String?
    /// Where the children's output goes.
    var workDirectory = "/tmp"

    static let usage = """
        usage: http-compare --port P (--hey PATH | --wrk PATH) [--lbctl PATH] [--rounds N (2)] [--seconds S (6)]
                            [--concurrency C (16)] [--work-dir DIR (/tmp)]
        The server on 127.0.0.1:P must answer GET / with 200 "ok" (Benchmarks/scripts/http-compare.sh starts one).
        """

    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var iterator = arguments.makeIterator()
        func value(_ name: String) -> String {
            guard let text = iterator.next() else { fail("\(name) needs a value") }
            return text
        }
        func positive(_ name: String) -> Int {
            guard let number = Int(value(name)), number > 0 else { fail("\(name) needs a positive whole number") }
            return number
        }
        while let argument = iterator.next() {
            switch argument {
            case "--port": options.port = positive(argument)
            case "--rounds": options.rounds = positive(argument)
            case "--seconds":
                guard let seconds = Double(value(argument)), seconds >= 1, seconds <= 600 else {
                    fail("--seconds needs a number from 1 to 600")
                }
                options.seconds = seconds
            case "--concurrency": options.concurrency = positive(argument)
            case "--hey": options.hey = value(argument)
            case "--wrk": options.wrk = value(argument)
            case "--lbctl": options.lbctl = value(argument)
            case "--work-dir": options.workDirectory = value(argument)
            case "--help", "-h":
                print(usage)
                exit(0)
            default: fail("unknown argument '\(argument)'\n\(usage)")
            }
        }
        guard options.port > 0, options.port < 65536 else { fail("--port is required (1-65535)\n\(usage)") }
        guard (options.hey == nil) != (options.wrk == nil) else { fail("give exactly one of --hey and --wrk\n\(usage)") }
        guard options.rounds <= 100, options.concurrency <= 4096 else { fail("at most 100 rounds and a concurrency of 4096") }
        return options
    }
}

func fail(_ message: String) -> Never {
    printError(message)
    exit(2)
}

/// Writes `http-compare: MESSAGE` to standard error.
func printError(_ message: String) {
    var line = "http-compare: \(message)\n"
    line.withUTF8 { bytes in _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count) }
}

// MARK: - Measurements

/// One client's run in one round.
struct Measurement {
    /// Successful requests (status 200).
    var requests = 0
    /// Failed requests (errors and other statuses).
    var errors = 0
    /// Wall time of the run, seconds.
    var wall = 0.0
    /// The 99th percentile latency of the successful requests, seconds.
    var p99: Double?
    /// Client CPU time, user + system, seconds.
    var cpu = 0.0
    /// The most client connections seen open to the server.
    var connections: Int?
    /// Why there is no figure, when the run failed.
    var failure: String?

    var rate: Double { wall > 0 ? Double(requests) / wall : 0 }
    var cpuPerRequest: Double? { requests > 0 ? cpu / Double(requests) : nil }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    static func seconds(_ value: Double) -> Duration { .nanoseconds(Int64(value * 1e9)) }
}

/// This process's CPU time (user + system, all threads), seconds.
func processCPUSeconds() -> Double {
    var usage = rusage()
    #if canImport(Glibc)
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    #else
        getrusage(RUSAGE_SELF, &usage)
    #endif
    return cpuSeconds(usage)
}

func cpuSeconds(_ usage: rusage) -> Double {
    Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec)
        + Double(usage.ru_stime.tv_usec) / 1e6
}

/// A whole (small) file, or nil.
func readFile(_ path: String) -> String? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = fread(&buffer, 1, buffer.count, file)
        if count <= 0 { break }
        bytes.append(contentsOf: buffer[0..<count])
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Client sockets ESTABLISHED to `port` on IPv4 loopback (from /proc/net/tcp), whichever process holds them.
func clientConnections(to port: Int) -> Int? {
    guard let table = readFile("/proc/net/tcp") else { return nil }
    // "sl local_address rem_address st ...", addresses as HEXIP:HEXPORT, state 01 = ESTABLISHED.
    var count = 0
    for line in table.split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ")
        guard fields.count > 3, fields[3] == "01" else { continue }
        let remote = fields[2].split(separator: ":")
        if remote.count == 2, Int(remote[1], radix: 16) == port { count += 1 }
    }
    return count
}

/// Waits (at most 3 s) until no client connection to `port` is left from the previous client.
func waitForNoConnections(to port: Int) async {
    let deadline = ContinuousClock.now + .seconds(3)
    while let open = clientConnections(to: port), open > 0, ContinuousClock.now < deadline {
        try? await Task.sleep(for: .milliseconds(20))
    }
}

/// The 99th percentile of `values` (nearest rank), or nil when there are none.
func percentile99(_ values: [Int64]) -> Double? {
    guard !values.isEmpty else { return nil }
    let sorted = values.sorted()
    let rank = Int((0.99 * Double(sorted.count)).rounded(.up)) - 1
    return Double(sorted[max(0, min(sorted.count - 1, rank))]) / 1e9
}

// MARK: - In-process clients

/// What one worker did.
struct WorkerResult: Sendable {
    var latencies: [Int64] = []
    var errors = 0
}

/// Runs `concurrency` tasks, each calling `request` in a loop for `seconds`, and measures them.
/// `request` returns whether the answer was a 200.
func measureInProcess(
    concurrency: Int,
    seconds: Double,
    port: Int,
    _ request: @escaping @Sendable () async throws -> Bool
) async -> Measurement {
    enum Part: Sendable {
        case worker(WorkerResult)
        case connections(Int?)
    }
    let cpuBefore = processCPUSeconds()
    let start = ContinuousClock.now
    let end = start + .seconds(seconds)
    var measurement = Measurement()
    var latencies: [Int64] = []
    await withTaskGroup(of: Part.self) { group in
        for _ in 0..<concurrency {
            group.addTask {
                var result = WorkerResult()
                result.latencies.reserveCapacity(4096)
                while ContinuousClock.now < end {
                    let began = ContinuousClock.now
                    do {
                        if try await request() {
                            let (whole, atto) = (ContinuousClock.now - began).components
                            result.latencies.append(whole * 1_000_000_000 + atto / 1_000_000_000)
                        } else {
                            result.errors += 1
                        }
                    } catch {
                        result.errors += 1
                    }
                }
                return .worker(result)
            }
        }
        group.addTask {
            var most: Int?
            for quarter in 1...3 {
                try? await Task.sleep(until: start + .seconds(seconds * Double(quarter) / 4), clock: .continuous)
                if let open = clientConnections(to: port) { most = max(most ?? 0, open) }
            }
            return .connections(most)
        }
        for await part in group {
            switch part {
            case .worker(let result):
                latencies.append(contentsOf: result.latencies)
                measurement.errors += result.errors
            case .connections(let most):
                measurement.connections = most
            }
        }
    }
    measurement.wall = (ContinuousClock.now - start).seconds
    measurement.cpu = processCPUSeconds() - cpuBefore
    measurement.requests = latencies.count
    measurement.p99 = percentile99(latencies)
    return measurement
}

/// AsyncHTTPClient's default configuration with `concurrency` connections per host.
func plainClientConfiguration(concurrency: Int) -> HTTPClient.Configuration {
    var configuration = HTTPClient.Configuration()
    configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = concurrency
    return configuration
}

/// The plain AsyncHTTPClient client: GET / with the same 10 s timeout as the HTTP factory's default.
func runPlainAHC(_ options: Options) async -> Measurement {
    let client = HTTPClient(
        eventLoopGroupProvider: .singleton,
        configuration: plainClientConfiguration(concurrency: options.concurrency)
    )
    let request = HTTPClientRequest(url: "http://\(options.host):\(options.port)/")
    let measurement = await measureInProcess(concurrency: options.concurrency, seconds: options.seconds, port: options.port) {
        let response = try await client.execute(request, timeout: .seconds(10))
        _ = try await response.body.collect(upTo: 4 * 1024 * 1024)
        return response.status.code == 200
    }
    try? await client.shutdown()
    return measurement
}

/// How a library client calls through the balancer.
enum LibraryPath {
    case call
    case retry(maxAttempts: Int)
}

/// The library's HTTP factory + a round-robin balancer over the one instance, called directly or through `Retry`.
func runLibrary(_ options: Options, _ path: LibraryPath) async -> Measurement {
    let client = HTTPClient(
        eventLoopGroupProvider: .singleton,
        configuration: HTTPEndpointFactory.clientConfiguration(concurrency: options.concurrency)
    )
    let cache = EndpointCache(factory: HTTPEndpointFactory.make(client: client))
    let instance: Instance
    do {
        instance = try Instance(host: options.host, port: options.port)
    } catch {
        try? await client.shutdown()
        return Measurement(failure: "bad instance: \(error)")
    }
    await cache.update(with: [instance])
    let endpoints = cache.snapshot.endpoints
    // Retry's inline path (no child task, no timer per call) needs endpoints that enforce deadlines.
    guard endpoints.count == 1, endpoints.allSatisfy(\.enforcesDeadline) else {
        await cache.shutdown()
        try? await client.shutdown()
        return Measurement(
            failure: "the factory made \(endpoints.count) endpoints, enforcing deadlines: \(endpoints.map(\.enforcesDeadline))")
    }
    let balancer = RoundRobinBalancer(cache)
    let call = HTTPCall(path: "/")
    let measurement: Measurement
    switch path {
    case .call:
        measurement = await measureInProcess(concurrency: options.concurrency, seconds: options.seconds, port: options.port) {
            try await balancer.call(call).status.code == 200
        }
    case .retry(let maxAttempts):
        let retry = Retry(balancer, maxAttempts: maxAttempts, timeout: .seconds(2))
        measurement = await measureInProcess(concurrency: options.concurrency, seconds: options.seconds, port: options.port) {
            try await retry(call).status.code == 200
        }
    }
    await cache.shutdown()
    try? await client.shutdown()
    return measurement
}

// MARK: - Child processes

/// How a child process ended.
struct ChildRun {
    var status: Int32
    var output: String
    var wall: Double
    var cpu: Double
    var connections: Int?
    var killed: Bool
}

/// Runs `arguments` (the first is the program) with stdout and stderr to `outputPath`; kills it after
/// `limit` seconds. The CPU time is the child's own, from wait4.
func runChild(_ arguments: [String], outputPath: String, expected: Double, limit: Double, port: Int) async -> ChildRun? {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid: pid_t = 0
    let start = ContinuousClock.now
    let spawned = posix_spawnp(&pid, arguments[0], &actions, nil, &argv, environ)
    guard spawned == 0 else {
        printError("cannot start \(arguments[0]): \(String(cString: strerror(spawned)))")
        return nil
    }
    var status: Int32 = 0
    var usage = rusage()
    var connections: Int?
    var sampled = 0
    var killed = false
    // Bounded: the child is killed at `limit`, then reaped.
    while true {
        let reaped = wait4(pid, &status, WNOHANG, &usage)
        if reaped == pid { break }
        if reaped < 0 && errno != EINTR { break }
        let elapsed = (ContinuousClock.now - start).seconds
        if sampled < 3, elapsed >= expected * Double(sampled + 1) / 4 {
            sampled += 1
            if let open = clientConnections(to: port) { connections = max(connections ?? 0, open) }
        }
        if elapsed > limit, !killed {
            kill(pid, SIGKILL)
            killed = true
        }
        try? await Task.sleep(for: .milliseconds(10))
    }
    let wall = (ContinuousClock.now - start).seconds
    let exitCode: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return ChildRun(
        status: exitCode,
        output: readFile(outputPath) ?? "",
        wall: wall,
        cpu: cpuSeconds(usage),
        connections: connections,
        killed: killed
    )
}

/// The lines of `text` with their fields split on white space.
func fieldLines(_ text: String) -> [[Substring]] {
    text.split(separator: "\n").map { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }) }
}

/// hey's summary: `Total: X secs`, `99% in X secs`, `[200] N responses`, `[N] error...`.
func parseHey(_ run: ChildRun) -> Measurement {
    var measurement = Measurement(cpu: run.cpu, connections: run.connections)
    var inErrors = false
    var total: Double?
    for fields in fieldLines(run.output) {
        guard let first = fields.first else { continue }
        if first == "Total:", fields.count >= 2 { total = Double(fields[1]) }
        if first == "99%", fields.count >= 3, fields[1] == "in" { measurement.p99 = Double(fields[2]) }
        if first == "Error" { inErrors = true }
        if first.hasPrefix("["), first.hasSuffix("]"), fields.count >= 2, let count = Int(fields[1]) {
            if !inErrors && first == "[200]" {
                measurement.requests += count
            } else {
                measurement.errors += count
            }
        }
    }
    guard let total, total > 0, run.status == 0, !run.killed else {
        measurement.failure = "hey exited with \(run.status)\(run.killed ? " (killed)" : ""): \(run.output.suffix(300))"
        return measurement
    }
    measurement.wall = total
    return measurement
}

/// A wrk duration (`1.23ms`, `850.00us`, `1.02s`) in seconds.
func wrkSeconds(_ text: Substring) -> Double? {
    for (unit, scale) in [("us", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0)] where text.hasSuffix(unit) {
        return Double(text.dropLast(unit.count)).map { $0 * scale }
    }
    return nil
}

/// wrk's summary with --latency: `99% 1.23ms`, `N requests in 3.00s, ...`, `Non-2xx or 3xx responses: N`,
/// `Socket errors: connect N, read N, write N, timeout N`.
func parseWrk(_ run: ChildRun) -> Measurement {
    var measurement = Measurement(cpu: run.cpu, connections: run.connections)
    var all = 0
    var wall: Double?
    var failed = 0
    for fields in fieldLines(run.output) {
        guard let first = fields.first else { continue }
        if first == "99%", fields.count >= 2 { measurement.p99 = wrkSeconds(fields[1]) }
        if fields.count >= 4, fields[1] == "requests", fields[2] == "in", let count = Int(first) {
            all = count
            wall = wrkSeconds(fields[3].hasSuffix(",") ? fields[3].dropLast() : fields[3])
        }
        if first == "Non-2xx", let count = fields.last.flatMap({ Int($0) }) { failed += count }
        if first == "Socket", fields.count > 2, fields[1] == "errors:" {
            // connect N, read N, write N, timeout N
            failed += fields.compactMap { Int($0.hasSuffix(",") ? $0.dropLast() : $0) }.reduce(0, +)
        }
    }
    guard let wall, wall > 0, run.status == 0, !run.killed else {
        measurement.failure = "wrk exited with \(run.status)\(run.killed ? " (killed)" : ""): \(run.output.suffix(300))"
        return measurement
    }
    measurement.wall = wall
    measurement.errors = failed
    measurement.requests = max(0, all - failed)
    return measurement
}

/// lbctl bench's report: `NAME: N requests in X s (R req/s): A succeeded, B failed, C retries`, then
/// the latency table `p50 p90 p99 p99.9 max` / `0.4 ms ...`.
func parseLbctl(_ run: ChildRun) -> Measurement {
    var measurement = Measurement(cpu: run.cpu, connections: run.connections)
    let lines = fieldLines(run.output)
    var found = false
    for (index, fields) in lines.enumerated() {
        if let position = fields.firstIndex(of: "requests"), position >= 1, position + 4 < fields.count, fields[position + 1] == "in",
            let total = Int(fields[position - 1]), let seconds = Double(fields[position + 2]),
            let succeeded = fields.firstIndex(of: "succeeded,"), succeeded >= 1,
            let failed = fields.firstIndex(of: "failed,"), failed >= 1
        {
            // "(R req/s)" is total / wall, finer than the wall's 10 ms steps.
            let rate = Double(fields[position + 4].drop(while: { $0 == "(" })) ?? 0
            measurement.wall = rate > 0 ? Double(total) / rate : seconds
            measurement.requests = Int(fields[succeeded - 1]) ?? 0
            measurement.errors = Int(fields[failed - 1]) ?? 0
            found = true
        }
        // The header "p50 p90 p99 p99.9 max", then values "0.4 ms 0.9 ms 1.8 ms 4.2 ms 12 ms".
        if fields.first == "p50", fields.count >= 3, fields[2] == "p99", index + 1 < lines.count {
            let values = lines[index + 1]
            if values.count >= 6, let value = Double(values[4]) {
                measurement.p99 = values[5] == "ms" ? value / 1e3 : nil
            }
        }
    }
    guard found, run.status == 0, !run.killed else {
        measurement.failure = "lbctl exited with \(run.status)\(run.killed ? " (killed)" : ""): \(run.output.suffix(300))"
        return measurement
    }
    return measurement
}

// MARK: - The run

enum Client: Int, CaseIterable {
    case loadGenerator, plainAHC, libraryCall, retry1, retry3, lbctl, lbctlRetries
}

func label(_ client: Client, _ options: Options) -> String {
    let c = options.concurrency
    switch client {
    case .loadGenerator: return options.hey != nil ? "hey -c \(c)" : "wrk -t1 -c\(c) (hey not available)"
    case .plainAHC: return "plain AsyncHTTPClient, pool \(c)"
    case .libraryCall: return "HTTP factory + round robin `call`, pool \(c)"
    case .retry1: return "the same through `Retry(maxAttempts: 1, timeout: 2 s)`"
    case .retry3: return "the same through `Retry(maxAttempts: 3, timeout: 2 s)`"
    case .lbctl: return "`lbctl bench --concurrency \(c) --retries 0`"
    case .lbctlRetries: return "`lbctl bench --concurrency \(c) --retries 2 --timeout 2`"
    }
}

/// Checks that `url` is the server we mean: GET / answers 200 "ok".
func checkServer(_ url: String) async {
    let client = HTTPClient(eventLoopGroupProvider: .singleton)
    let check: Result<(UInt, String), any Error>
    do {
        let response = try await client.execute(HTTPClientRequest(url: url), timeout: .seconds(5))
        let body = try await response.body.collect(upTo: 1024)
        check = .success((response.status.code, String(buffer: body)))
    } catch {
        check = .failure(error)
    }
    try? await client.shutdown()
    switch check {
    case .success(let (status, body)) where status == 200 && body == "ok": break
    case .success(let (status, body)): fail("\(url) answered \(status) \"\(body.prefix(40))\", expected 200 \"ok\"")
    case .failure(let error): fail("\(url) did not answer: \(error)")
    }
}

/// Every client once per round, one after another; prints each result as it comes.
func runRounds(_ options: Options) async -> [Client: [Measurement]] {
    let url = "http://\(options.host):\(options.port)/"
    var results: [Client: [Measurement]] = [:]
    for round in 1...options.rounds {
        for client in Client.allCases {
            await waitForNoConnections(to: options.port)
            let measurement: Measurement
            let output = "\(options.workDirectory)/http-compare-\(client)-\(round).txt"
            let limit = max(options.seconds * 5, options.seconds + 30)
            switch client {
            case .loadGenerator:
                let seconds = Int(options.seconds.rounded(.up))
                let arguments =
                    if let hey = options.hey {
                        [hey, "-c", "\(options.concurrency)", "-z", "\(seconds)s", "-t", "10", url]
                    } else {
                        [options.wrk ?? "wrk", "-t1", "-c\(options.concurrency)", "-d\(seconds)s", "--latency", url]
                    }
                if let run = await runChild(arguments, outputPath: output, expected: Double(seconds), limit: limit, port: options.port) {
                    measurement = options.hey != nil ? parseHey(run) : parseWrk(run)
                } else {
                    measurement = Measurement(failure: "could not start \(arguments[0])")
                }
            case .plainAHC:
                measurement = await runPlainAHC(options)
            case .libraryCall:
                measurement = await runLibrary(options, .call)
            case .retry1:
                measurement = await runLibrary(options, .retry(maxAttempts: 1))
            case .retry3:
                measurement = await runLibrary(options, .retry(maxAttempts: 3))
            case .lbctl, .lbctlRetries:
                guard let lbctl = options.lbctl else {
                    measurement = Measurement(failure: "no --lbctl given")
                    break
                }
                // lbctl bench runs a number of requests: as many as this round's matching in-process client made in S.
                let reference = results[client == .lbctl ? .libraryCall : .retry3]?.last?.rate ?? 0
                let requests = max(options.concurrency, Int((reference > 0 ? reference : 10_000) * options.seconds))
                var arguments = [
                    lbctl, "bench", "static://\(options.host):\(options.port)", "/", "--concurrency", "\(options.concurrency)",
                    "--requests", "\(requests)",
                ]
                arguments += client == .lbctl ? ["--retries", "0"] : ["--retries", "2", "--timeout", "2"]
                if let run = await runChild(arguments, outputPath: output, expected: options.seconds, limit: limit, port: options.port) {
                    measurement = parseLbctl(run)
                } else {
                    measurement = Measurement(failure: "could not start \(lbctl)")
                }
            }
            results[client, default: []].append(measurement)
            if let failure = measurement.failure {
                print("  round \(round), \(label(client, options)): FAILED: \(failure)")
            } else {
                print(
                    "  round \(round), \(label(client, options)): \(measurement.requests) requests in \(format(measurement.wall, 2)) s = \(thousands(measurement.rate)) req/s, p99 \(milliseconds(measurement.p99)), \(microseconds(measurement.cpuPerRequest)) CPU per request, \(measurement.connections.map(String.init) ?? "?") connections, \(measurement.errors) errors"
                )
            }
        }
    }
    return results
}

// MARK: - The report

func format(_ value: Double, _ decimals: Int) -> String {
    var scale = 1
    for _ in 0..<decimals { scale *= 10 }
    let scaled = Int((value * Double(scale)).rounded())
    guard decimals > 0 else { return "\(scaled)" }
    let fraction = String(abs(scaled) % scale)
    let sign = scaled < 0 ? "-" : ""
    return "\(sign)\(abs(scaled) / scale).\(String(repeating: "0", count: decimals - fraction.count))\(fraction)"
}

func thousands(_ rate: Double) -> String { format(rate / 1000, 1) + "k" }
func milliseconds(_ seconds: Double?) -> String { seconds.map { format($0 * 1000, 2) + " ms" } ?? "?" }
func microseconds(_ seconds: Double?) -> String { seconds.map { format($0 * 1e6, 0) + " µs" } ?? "?" }

/// `a` when all values format alike, else `min - max`.
func range(_ values: [Double?], _ show: (Double) -> String) -> String {
    let known = values.compactMap { $0 }
    guard let low = known.min(), let high = known.max() else { return "-" }
    let (a, b) = (show(low), show(high))
    return a == b ? a : "\(a) - \(b)"
}

/// The markdown tables: the clients, then the ratios issue 16's targets name.
func report(_ results: [Client: [Measurement]], _ options: Options) {
    func rows(_ client: Client) -> [Measurement] { results[client] ?? [] }
    print("")
    print("| client | requests/s | p99 | client CPU per request | connections | errors |")
    print("|---|---|---|---|---|---|")
    for client in Client.allCases {
        let runs = rows(client).filter { $0.failure == nil }
        if runs.isEmpty {
            print("| \(label(client, options)) | failed | | | | |")
            continue
        }
        let connections = runs.compactMap(\.connections).map(Double.init)
        let connectionText = connections.isEmpty ? "?" : range(connections) { format($0, 0) }
        print(
            "| \(label(client, options)) | \(range(runs.map(\.rate), thousands)) | \(range(runs.map(\.p99), milliseconds)) | \(range(runs.map(\.cpuPerRequest), microseconds)) | \(connectionText) | \(runs.map(\.errors).reduce(0, +)) |"
        )
    }

    /// Per round, `a`'s rate / `b`'s; nil where either failed.
    func ratios(_ a: Client, _ b: Client) -> [Double?] {
        zip(rows(a), rows(b)).map { x, y in
            x.failure == nil && y.failure == nil && y.rate > 0 ? x.rate / y.rate : nil
        }
    }
    let generator = options.hey != nil ? "hey" : "wrk"
    let ratioRows: [(name: String, a: Client, b: Client, target: Double?)] = [
        ("library `call` / plain AsyncHTTPClient", .libraryCall, .plainAHC, 0.95),
        ("`Retry` (1 attempt) / library `call`", .retry1, .libraryCall, 0.85),
        ("`Retry` (3 attempts) / library `call`", .retry3, .libraryCall, 0.85),
        // The 0.4 target is against hey; wrk makes about 3x hey's requests per second here.
        ("`lbctl bench --retries 0` / \(generator)", .lbctl, .loadGenerator, options.hey != nil ? 0.4 : nil),
        ("`lbctl bench --retries 2` / \(generator)", .lbctlRetries, .loadGenerator, nil),
        ("plain AsyncHTTPClient / \(generator) (the ceiling)", .plainAHC, .loadGenerator, nil),
    ]
    print("")
    print("| ratio of requests/s, same round | per round | target | met |")
    print("|---|---|---|---|")
    for row in ratioRows {
        let values = ratios(row.a, row.b)
        let known = values.compactMap { $0 }
        let perRound = values.map { $0.map { format($0, 2) } ?? "-" }.joined(separator: ", ")
        var met = ""
        if let target = row.target {
            let below = known.count(where: { $0 < target })
            met = known.isEmpty ? "?" : below == 0 ? "yes" : "no (\(below) of \(known.count) rounds below)"
        }
        print("| \(row.name) | \(perRound) | \(row.target.map { "≥ \(format($0, 2))" } ?? "") | \(met) |")
    }
    // The pool follows the concurrency: the factory's clients and lbctl hold as many connections as requests in flight.
    let poolClients: [Client] = [.libraryCall, .retry1, .retry3, .lbctl, .lbctlRetries]
    let pools = poolClients.flatMap { rows($0).filter { $0.failure == nil }.compactMap(\.connections) }
    let poolMet = pools.isEmpty ? "?" : pools.allSatisfy { $0 == options.concurrency } ? "yes" : "no"
    print(
        "| connections of the HTTP factory's clients and lbctl | \(pools.map(String.init).joined(separator: ", ")) | = \(options.concurrency) | \(poolMet) |"
    )
    print("")
    print(
        "requests/s: successful requests / wall time; p99: of the successful requests; CPU: user + system time of the client process (in process: getrusage around the loop; \(generator) and lbctl: their rusage from wait4, whole process, start-up included); connections: the most ESTABLISHED client sockets to the server at 1/4, 1/2 and 3/4 of each run. lbctl has no duration option: it runs --requests = S x the same round's rate of the matching in-process client."
    )
}

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
await checkServer("http://\(options.host):\(options.port)/")
print(
    "http-compare: http://\(options.host):\(options.port)/, \(options.rounds) round(s) x \(format(options.seconds, 1)) s per client, \(options.concurrency) in flight, \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) cores"
)
report(await runRounds(options), options)
