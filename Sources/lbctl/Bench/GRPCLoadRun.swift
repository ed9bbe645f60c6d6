import GRPCCore
import LoadBalancer
import LoadBalancerGRPC
import LoadBalancerGRPCHealth
import ServiceLifecycle
import Synchronization

/// Drives gRPC load through a ``BalancingClientTransport``: each request is a
/// `grpc.health.v1.Health/Check` unary RPC made with a `GRPCClient`. The engine of
/// `lbctl bench --protocol grpc`; its report is ``LoadRun``'s.
///
/// A request succeeds when the RPC ends with `ok` and the answer is `SERVING`; any other status
/// (`NOT_SERVING`, `UNKNOWN`...) or RPC error is a failure. Retries are grpc-swift's retry policy
/// (retryable: `unavailable`), set in the transport's service config; the time limit is the RPC's
/// timeout (retries included).
///
/// **Attempts per instance.** Each attempt is one stream the transport opens: the transport is
/// wrapped (``ObservedTransport``) to see, per attempt, the peer its stream went to, and an
/// attempt is attributed to the instance of that address (an instance whose host is that IP
/// address and whose port is that port; else the only instance with that port; else the address
/// itself). Retries happen only after a failed attempt, so every attempt but a request's last
/// failed, and the last one has the request's outcome. An attempt that opened no stream (its
/// instance could not be reached) is counted under `(no stream)`.
struct GRPCLoadRun {
    /// The row of the attempts that opened no stream.
    static let noStream = "(no stream)"

    /// Runs the load and returns the report. `progress` is called about every `interval` with the
    /// number of finished requests.
    ///
    /// - Parameters:
    ///   - service: The service name each `Check` asks about (`""`: the server as a whole).
    static func run(
        publisher: any InstancePublisher,
        options: LoadRun.Options,
        service: String,
        interval: Duration = .milliseconds(200),
        progress: @escaping @Sendable (_ done: Int, _ elapsed: Duration) -> Void = { _, _ in }
    ) async throws -> LoadRun.Report {
        guard let choice = options.balancer.grpcChoice else {
            throw LbctlError.usage(BalancerName.noGRPCEquivalent(options.balancer))
        }
        if options.slowStart != nil { throw LbctlError.usage(BenchCommand.noGRPCSlowStart) }
        // With health checks, the transport's detector is the one the checker feeds.
        var configuration = BalancingClientTransport.Configuration(
            balancer: choice,
            outlierDetection: options.detectorConfiguration
        )
        let method = Grpc_Health_V1_Health.Method.Check.descriptor
        if options.retries > 0 {
            let policy = RetryPolicy(
                maxAttempts: options.retries + 1,
                initialBackoff: .milliseconds(10),
                maxBackoff: .seconds(1),
                backoffMultiplier: 2,
                retryableStatusCodes: [.unavailable]
            )
            configuration.serviceConfig = ServiceConfig(methodConfig: [
                MethodConfig(
                    names: [MethodConfig.Name(service: method.service.fullyQualifiedService, method: method.method)],
                    executionPolicy: .retry(policy)
                )
            ])
        }
        var callOptions = CallOptions.defaults
        callOptions.timeout = options.timeout
        let callOptionsForRequests = callOptions

        var requestMessage = Grpc_Health_V1_HealthCheckRequest()
        requestMessage.service = service
        let request = requestMessage

        let stats = LoadRun.Stats()
        let addresses = InstanceAddresses()
        let base = BalancingClientTransport(publisher: publisher, configuration: configuration)
        let transport = ObservedTransport(base: base)
        let outcome = try await withThrowingTaskGroup(of: Void.self, returning: ActiveHealthChecks.Outcome?.self) { group in
            if let service = publisher as? any Service { group.addTask { try await service.run() } }
            // The instances ever seen, to name the peers; the first set says whether there is any.
            let (firstSet, firstSetSink) = AsyncStream.makeStream(of: [Instance].self, bufferingPolicy: .bufferingNewest(1))
            group.addTask {
                for await update in publisher.updates() {
                    addresses.add(update.instances)
                    options.recorder?.set(update.instances)
                    firstSetSink.yield(update.instances)
                }
                firstSetSink.finish()
            }
            var firstSets = firstSet.makeAsyncIterator()
            guard let first = await firstSets.next(), !first.isEmpty else {
                group.cancelAll()
                throw LbctlError.run("the source has no instances")
            }
            defer { group.cancelAll() }
            return try await withGRPCClient(transport: transport) { client in
                let health = Grpc_Health_V1_Health.Client(wrapping: client)
                let send: @Sendable () async -> String? = {
                    let log = AttemptLog()
                    var failure: String?
                    var cancelled = false
                    do {
                        let response = try await AttemptLog.$current.withValue(log) {
                            try await health.check(request, options: callOptionsForRequests)
                        }
                        if response.status != .serving { failure = "status \(Self.name(of: response.status))" }
                    } catch {
                        cancelled = error is CancellationError || (error as? RPCError)?.code == .cancelled
                        failure = Self.kind(of: error)
                    }
                    let attempts = log.attempts
                    for (index, attempt) in attempts.enumerated() {
                        let last = index == attempts.count - 1
                        let id = attempt.peer.map(addresses.id(ofPeer:))
                        let failed = last ? failure != nil && !cancelled : true
                        stats.attempt(id ?? Self.noStream, failed: failed)
                        // An attempt that opened no stream reached no instance: not recorded.
                        if let recorder = options.recorder, let id, let ended = attempt.ended {
                            let outcome: Recording.Outcome = last && cancelled ? .cancelled : failed ? .failure : .success
                            recorder.call(
                                id, began: attempt.began, ended: ended, outcome: outcome,
                                error: outcome != .failure ? nil : last ? failure : "retried")
                        }
                    }
                    return failure
                }
                guard let checks = options.healthChecks, let detector = base.outlierDetector else {
                    stats.restart()
                    options.recorder?.begin(at: stats.start, set: first)
                    await LoadRun.drive(
                        stats: stats, options: options, start: stats.start, interval: interval, progress: progress, request: send)
                    return nil
                }
                return try await checks.withChecker(detector) { checker in
                    try await withThrowingTaskGroup(of: Void.self, returning: ActiveHealthChecks.Outcome.self) { checking in
                        checking.addTask { try await checker.run() }
                        let start = await ActiveHealthChecks.waitForFirstChecks(checker, ids: first.map(\.id), detector: detector)
                        stats.restart()
                        options.recorder?.begin(at: stats.start, set: first)
                        await LoadRun.drive(
                            stats: stats, options: options, start: stats.start, interval: interval, progress: progress, request: send)
                        let outcome = checks.outcome(checker, detector, start: start)
                        checking.cancelAll()
                        try await checking.waitForAll()
                        return outcome
                    }
                }
            }
        }
        var report = stats.report(requests: options.requests, wall: ContinuousClock.now - stats.start)
        report.healthChecks = outcome
        return report
    }

    /// A short name for the kind of an error, for the "errors by kind" table: `gRPC` and the status
    /// code for an RPC error.
    static func kind(of error: any Error) -> String {
        switch error {
        case let error as RPCError:
            return "gRPC \(error.code)"
        default:
            return LoadRun.kind(of: error)
        }
    }

    /// The health-checking protocol's name of a serving status.
    static func name(of status: Grpc_Health_V1_HealthCheckResponse.ServingStatus) -> String {
        switch status {
        case .unknown: "UNKNOWN"
        case .serving: "SERVING"
        case .notServing: "NOT_SERVING"
        case .serviceUnknown: "SERVICE_UNKNOWN"
        case .UNRECOGNIZED(let value): "\(value)"
        }
    }
}

/// The attempts of one request: per stream the transport was asked for, when it began and ended
/// and the peer it reached (nil when no stream opened).
final class AttemptLog: Sendable {
    /// The log of the request made in this task (and its child tasks: grpc-swift's attempts).
    @TaskLocal static var current: AttemptLog?

    /// One attempt.
    struct Attempt: Sendable {
        var began: ContinuousClock.Instant
        var ended: ContinuousClock.Instant?
        var peer: String?
    }

    private let state = Mutex<[Attempt]>([])

    /// An attempt begins; returns its index.
    func began() -> Int {
        state.withLock { attempts in
            attempts.append(Attempt(began: .now))
            return attempts.count - 1
        }
    }

    /// Attempt `index` opened a stream to `peer`.
    func opened(_ index: Int, peer: String) {
        state.withLock { $0[index].peer = peer }
    }

    /// Attempt `index` is over.
    func ended(_ index: Int) {
        let now = ContinuousClock.now
        state.withLock { $0[index].ended = now }
    }

    /// Each attempt, in order.
    var attempts: [Attempt] { state.withLock { $0 } }
}

/// A ``BalancingClientTransport`` whose streams are noted in the current ``AttemptLog``.
struct ObservedTransport: ClientTransport {
    typealias Bytes = BalancingClientTransport.Bytes

    let base: BalancingClientTransport

    var retryThrottle: RetryThrottle? { base.retryThrottle }

    func connect() async throws { try await base.connect() }

    func beginGracefulShutdown() { base.beginGracefulShutdown() }

    func config(forMethod descriptor: MethodDescriptor) -> MethodConfig? { base.config(forMethod: descriptor) }

    func withStream<T: Sendable>(
        descriptor: MethodDescriptor,
        options: CallOptions,
        _ closure: (_ stream: RPCStream<Inbound, Outbound>, _ context: ClientContext) async throws -> T
    ) async throws -> T {
        let log = AttemptLog.current
        let index = log?.began()
        defer { if let log, let index { log.ended(index) } }
        return try await base.withStream(descriptor: descriptor, options: options) { stream, context in
            if let log, let index { log.opened(index, peer: context.remotePeer) }
            return try await closure(stream, context)
        }
    }
}

/// The instances seen, by address, to name the peer of a stream (`ipv4:127.0.0.1:8080`).
final class InstanceAddresses: Sendable {
    private struct State {
        /// Instance ids by `host:port` (IPv6 hosts in brackets).
        var byAddress: [String: String] = [:]
        /// Instance ids by port.
        var byPort: [Int: Set<String>] = [:]
    }
    private let state = Mutex(State())

    func add(_ instances: [Instance]) {
        state.withLock { state in
            for instance in instances {
                state.byAddress[Self.address(host: instance.host, port: instance.port)] = instance.id
                state.byPort[instance.port, default: []].insert(instance.id)
            }
        }
    }

    /// The id of the instance at `peer`: the instance with that address, else the only instance
    /// with that port (a host name resolved to it: the transport connects to instances only), else
    /// the address.
    func id(ofPeer peer: String) -> String {
        var address = Substring(peer)
        for prefix in ["ipv4:", "ipv6:"] where address.hasPrefix(prefix) {
            address = address.dropFirst(prefix.count)
        }
        return state.withLock { state in
            if let id = state.byAddress[String(address)] { return id }
            if let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
                let ids = state.byPort[port], ids.count == 1, let id = ids.first
            {
                return id
            }
            return String(address)
        }
    }

    private static func address(host: String, port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}
