// gRPC balancing side by side in one run (issue 20): four loopback servers, the same closed-loop
// load through grpc-swift's round robin (fed by LoadBalancerGRPC's resolver) and through
// BalancingClientTransport with this library's balancers; then the transport's own cost per unary
// RPC against a plain HTTP2ClientTransport to one server.
//
//   swift run -c release grpc-compare [--requests N] [--concurrency C] [--base-ms MS]
//
// Everything runs in this process on 127.0.0.1: the servers' CPU is the client's CPU too (the
// CPU figures are of the whole process, servers included).

import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LoadBalancer
import LoadBalancerGRPC
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

// MARK: - Arguments

struct Options {
    var requests = 20_000
    var concurrency = 16
    var baseMilliseconds = 1
    var costRequests = 20_000
    var costRounds = 5
    var scenarios: Set<String> = ["slow", "failing", "cost"]

    init(_ arguments: [String]) {
        var iterator = arguments.makeIterator()
        while let argument = iterator.next() {
            let text = iterator.next()
            let value = text.flatMap { Int($0) }
            switch (argument, value) {
            case ("--scenario", _) where text.map({ ["slow", "failing", "cost", "all"].contains($0) }) == true:
                scenarios = text == "all" ? ["slow", "failing", "cost"] : [text!]
            case ("--requests", let value?) where value > 0: requests = value
            case ("--concurrency", let value?) where value > 0: concurrency = value
            case ("--base-ms", let value?) where value >= 0: baseMilliseconds = value
            case ("--cost-requests", let value?) where value > 0: costRequests = value
            case ("--cost-rounds", let value?) where value > 0: costRounds = value
            default:
                print(
                    "usage: grpc-compare [--scenario slow|failing|cost|all] [--requests N] [--concurrency C] [--base-ms MS] [--cost-requests N]"
                )
                exit(2)
            }
        }
    }
}

// MARK: - Servers

struct BytesSerializer: MessageSerializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
}

struct BytesDeserializer: MessageDeserializer {
    func deserialize<Bytes: GRPCContiguousBytes>(_ bytes: Bytes) throws -> [UInt8] { bytes.withUnsafeBytes { Array($0) } }
}

/// How a server answers: after `delay`, its name; every `failEvery`-th call (0: never) fails
/// with `unavailable`.
final class ServerBehaviour: Sendable {
    let name: String
    private let state = Mutex((delay: Duration.zero, failEvery: 0, calls: 0))

    init(name: String) { self.name = name }

    func set(delay: Duration, failEvery: Int) {
        state.withLock {
            $0.delay = delay
            $0.failEvery = failEvery
            $0.calls = 0
        }
    }

    func next() -> (delay: Duration, fail: Bool) {
        state.withLock { state in
            state.calls += 1
            return (state.delay, state.failEvery > 0 && state.calls % state.failEvery == 0)
        }
    }
}

struct EchoService: RegistrableRPCService {
    static let method = MethodDescriptor(fullyQualifiedService: "loadbalancer.bench.Echo", method: "Get")
    let behaviour: ServerBehaviour

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        let behaviour = self.behaviour
        let name = Array(behaviour.name.utf8)
        router.registerHandler(forMethod: Self.method, deserializer: BytesDeserializer(), serializer: BytesSerializer()) { request, _ in
            _ = try await ServerRequest(stream: request)
            let (delay, fail) = behaviour.next()
            if delay > .zero { try await Task.sleep(for: delay) }
            if fail { return StreamingServerResponse(error: RPCError(code: .unavailable, message: "\(behaviour.name) fails")) }
            return StreamingServerResponse(single: ServerResponse(message: name))
        }
    }
}

// MARK: - Load

struct Stats {
    var latencies: [Duration] = []
    var errors = 0
    var perServer: [String: Int] = [:]
    var wall: Duration = .zero
    var cpu: Duration = .zero

    func percentile(_ p: Double) -> Duration {
        guard !latencies.isEmpty else { return .zero }
        let index = min(latencies.count - 1, Int((Double(latencies.count) * p / 100).rounded(.up)) - 1)
        return latencies[max(0, index)]
    }
}

func hostCPUs() -> Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

func processCPU() -> Duration {
    var usage = rusage()
    #if canImport(Glibc)
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    #else
        getrusage(RUSAGE_SELF, &usage)
    #endif
    func duration(_ time: timeval) -> Duration { .seconds(Int64(time.tv_sec)) + .microseconds(Int64(time.tv_usec)) }
    return duration(usage.ru_utime) + duration(usage.ru_stime)
}

final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

/// `requests` unary calls through `client`, `concurrency` at a time (closed loop).
func load<Transport: ClientTransport>(_ client: GRPCClient<Transport>, requests: Int, concurrency: Int) async -> Stats {
    let next = Counter()
    let clock = ContinuousClock()
    let start = clock.now
    let cpuStart = processCPU()
    var stats = await withTaskGroup(of: Stats.self) { group in
        for _ in 0..<concurrency {
            group.addTask {
                var stats = Stats()
                stats.latencies.reserveCapacity(requests / concurrency + 1)
                var options = CallOptions.defaults
                if getenv("NO_TIMEOUT") == nil { options.timeout = .seconds(10) }
                while next.value.add(1, ordering: .relaxed).oldValue < requests {
                    let begin = clock.now
                    do {
                        let name = try await client.unary(
                            request: ClientRequest(message: [1, 2, 3, 4]),
                            descriptor: EchoService.method,
                            serializer: BytesSerializer(),
                            deserializer: BytesDeserializer(),
                            options: options
                        ) { try $0.message }
                        stats.latencies.append(begin.duration(to: clock.now))
                        stats.perServer[String(decoding: name, as: UTF8.self), default: 0] += 1
                    } catch {
                        stats.errors += 1
                    }
                }
                return stats
            }
        }
        var total = Stats()
        for await part in group {
            total.latencies += part.latencies
            total.errors += part.errors
            total.perServer.merge(part.perServer, uniquingKeysWith: +)
        }
        return total
    }
    stats.wall = start.duration(to: clock.now)
    stats.cpu = processCPU() - cpuStart
    stats.latencies.sort()
    return stats
}

// MARK: - Clients

enum ClientKind: CaseIterable {
    case grpcRoundRobin
    case p2c
    case p2cEjection
    case roundRobinEjection

    var label: String {
        switch self {
        case .grpcRoundRobin: "grpc-swift round robin (resolver)"
        case .p2c: "BalancingClientTransport P2C peak-EWMA"
        case .p2cEjection: "BalancingClientTransport P2C + ejection"
        case .roundRobinEjection: "BalancingClientTransport round robin + ejection"
        }
    }
}

/// Runs `body` with a client of `kind` over `instances`.
func withClient(
    _ kind: ClientKind,
    instances: [Instance],
    _ body: @Sendable (_ measure: (_ requests: Int, _ concurrency: Int) async -> Stats) async -> Stats
) async throws -> Stats {
    let publisher = FixedPublisher(instances)
    switch kind {
    case .grpcRoundRobin:
        var registry = NameResolverRegistry.defaults
        registry.registerFactory(NameResolvers.LoadBalancerPublisher())
        let transport = try HTTP2ClientTransport.Posix(
            target: .publisher(publisher), transportSecurity: .plaintext, resolverRegistry: registry
        )
        return try await withGRPCClient(transport: transport) { client in
            await body { await load(client, requests: $0, concurrency: $1) }
        }
    case .p2c, .p2cEjection, .roundRobinEjection:
        var configuration = BalancingClientTransport.Configuration(balancer: kind == .roundRobinEjection ? .roundRobin : .p2c())
        if kind != .p2c { configuration.outlierDetection = OutlierDetector.Configuration() }
        let transport = BalancingClientTransport(publisher: publisher, configuration: configuration)
        return try await withGRPCClient(transport: transport) { client in
            await body { await load(client, requests: $0, concurrency: $1) }
        }
    }
}

// MARK: - Report

func ms(_ duration: Duration) -> String {
    let value = Double(duration.components.seconds) * 1e3 + Double(duration.components.attoseconds) * 1e-15
    return value < 10 ? String(format3(value)) : String(Int(value.rounded()))
}

func format3(_ value: Double) -> String {
    let scaled = (value * 100).rounded() / 100
    return "\(scaled)"
}

func row(_ label: String, _ stats: Stats, servers: [ServerBehaviour]) -> String {
    let total = stats.latencies.count + stats.errors
    let errorRate = Double(stats.errors) / Double(max(1, total)) * 100
    let shares = servers.map { server in
        "\(Int((Double(stats.perServer[server.name, default: 0]) / Double(max(1, stats.latencies.count)) * 1000).rounded()) / 10)"
    }
    return "| \(label) | \(ms(stats.percentile(50))) | \(ms(stats.percentile(99))) | \(ms(stats.percentile(99.9))) | "
        + "\((errorRate * 100).rounded() / 100)% (\(stats.errors)) | \(Int((Double(total) / stats.wall.seconds).rounded())) | \(shares.joined(separator: " / ")) |"
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}

// MARK: - Main

let options = Options(Array(CommandLine.arguments.dropFirst()))
let behaviours = (0..<4).map { ServerBehaviour(name: "s\($0)") }
let servers = behaviours.map { behaviour in
    GRPCServer(
        transport: HTTP2ServerTransport.Posix(address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext),
        services: [EchoService(behaviour: behaviour)]
    )
}

try await withThrowingTaskGroup(of: Void.self) { group in
    for server in servers { group.addTask { try await server.serve() } }
    var instances: [Instance] = []
    for server in servers {
        let address = try await server.listeningAddress
        instances.append(try Instance(host: "127.0.0.1", port: address!.ipv4!.port))
    }
    let base = Duration.milliseconds(options.baseMilliseconds)
    print(
        "grpc-compare: \(options.requests) unary RPCs per client, \(options.concurrency) in flight, after 1000 warm-up RPCs (\(hostCPUs()) CPUs)"
    )
    print("")

    let scenarios: [(name: String, title: String, setup: @Sendable () -> Void, kinds: [ClientKind])] = [
        (
            "slow",
            "one server 10x slower (s3: \(options.baseMilliseconds * 10) ms, others \(options.baseMilliseconds) ms)",
            {
                for behaviour in behaviours.dropLast() { behaviour.set(delay: base, failEvery: 0) }
                behaviours[3].set(delay: base * 10, failEvery: 0)
            },
            [.grpcRoundRobin, .p2c, .p2cEjection]
        ),
        (
            "failing",
            "one server failing 20% with unavailable (s3; every server \(options.baseMilliseconds) ms)",
            {
                for behaviour in behaviours.dropLast() { behaviour.set(delay: base, failEvery: 0) }
                behaviours[3].set(delay: base, failEvery: 5)
            },
            [.grpcRoundRobin, .p2c, .p2cEjection, .roundRobinEjection]
        ),
    ]
    for scenario in scenarios where options.scenarios.contains(scenario.name) {
        print("### \(scenario.title)")
        print("")
        print("| client | p50 ms | p99 ms | p99.9 ms | errors | RPC/s | share s0 / s1 / s2 / s3 % |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for kind in scenario.kinds {
            let setup = scenario.setup
            setup()
            let stats = try await withClient(kind, instances: instances) { measure in
                _ = await measure(1000, options.concurrency)
                setup() // the failure counts start again after the warm-up
                return await measure(options.requests, options.concurrency)
            }
            print(row(kind.label, stats, servers: behaviours))
        }
        print("")
    }

    // The transport's own cost: one server answering at once.
    for behaviour in behaviours { behaviour.set(delay: .zero, failEvery: 0) }
    if options.scenarios.contains("cost") {
        print(
            "### cost per unary RPC, one server answering at once (\(options.costRequests) RPCs per round, after 2000 warm-up; median of \(options.costRounds) rounds, range)"
        )
        print("")
        print("| client | in flight | µs per RPC, wall (range) | CPU µs per RPC (process) | RPC/s |")
        print("|---|---:|---:|---:|---:|")
    }
    let one = [instances[0]]
    // Rounds alternate which transport runs first; each row is the median of its rounds.
    for concurrency in options.scenarios.contains("cost") ? [1, options.concurrency] : [] {
        var plainRounds: [Stats] = []
        var balancedRounds: [Stats] = []
        for round in 0..<options.costRounds {
            for plain in round % 2 == 0 ? [true, false] : [false, true] {
                if plain {
                    let transport = try HTTP2ClientTransport.Posix(
                        target: .ipv4(address: "127.0.0.1", port: one[0].port), transportSecurity: .plaintext)
                    plainRounds.append(
                        try await withGRPCClient(transport: transport) { client in
                            _ = await load(client, requests: 2000, concurrency: concurrency)
                            return await load(client, requests: options.costRequests, concurrency: concurrency)
                        }
                    )
                } else {
                    let transport = BalancingClientTransport(publisher: FixedPublisher(one), configuration: .init(balancer: .p2c()))
                    balancedRounds.append(
                        try await withGRPCClient(transport: transport) { client in
                            _ = await load(client, requests: 2000, concurrency: concurrency)
                            return await load(client, requests: options.costRequests, concurrency: concurrency)
                        }
                    )
                }
            }
        }
        for (label, rounds) in [
            ("HTTP2ClientTransport (one server)", plainRounds), ("BalancingClientTransport P2C (one instance)", balancedRounds),
        ] {
            let count = Double(options.costRequests)
            let walls = rounds.map { $0.wall.seconds * 1e6 / count }.sorted()
            let cpus = rounds.map { $0.cpu.seconds * 1e6 / count }.sorted()
            let median = walls[walls.count / 2]
            print(
                "| \(label) | \(concurrency) | \(format3(median)) (\(format3(walls.first!))-\(format3(walls.last!))) | "
                    + "\(format3(cpus[cpus.count / 2])) | \(Int((1e6 / median).rounded())) |"
            )
        }
    }
    for server in servers { server.beginGracefulShutdown() }
    try await group.waitForAll()
}
