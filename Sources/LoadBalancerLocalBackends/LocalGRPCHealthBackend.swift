import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LoadBalancerGRPCHealth
import NIOConcurrencyHelpers

/// A small gRPC server on 127.0.0.1 for demos and tests: it serves the standard health-checking
/// service (`grpc.health.v1.Health`) and answers every `Check` after a fixed latency, with its
/// serving status (``status``, `SERVING` at the start), or with the status code `unavailable` for a
/// given share of calls (decided by a seeded generator, so runs repeat). It counts what it served.
///
/// It knows the whole server (the service name `""`) and the names in ``Behaviour/services``;
/// `Check` for any other name ends with `notFound`, and `Watch` answers `SERVICE_UNKNOWN`, as the
/// health-checking specification says.
///
/// ```swift
/// try await LocalGRPCHealthBackend.withBackends([.init(latency: .milliseconds(1)), .init(latency: .milliseconds(10))]) { backends in
///     let source = "static://" + backends.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
///     ...
/// }
/// ```
public final class LocalGRPCHealthBackend: Sendable {
    /// How a backend behaves.
    public struct Behaviour: Sendable {
        /// How long before answering a `Check`.
        public var latency: Duration
        /// The share of `Check` calls ended with `unavailable`, in `0...1`.
        public var failureRate: Double
        /// Seed of the failure draws.
        public var seed: UInt64
        /// The service names the server knows, besides `""` (the whole server).
        public var services: Set<String>

        public init(latency: Duration, failureRate: Double = 0, seed: UInt64 = 1, services: Set<String> = []) {
            self.latency = latency
            self.failureRate = failureRate
            self.seed = seed
            self.services = services
        }
    }

    /// The serving status a backend reports (the health-checking protocol's `ServingStatus`, less
    /// `SERVICE_UNKNOWN`, which depends on the name asked for).
    public enum ServingStatus: Sendable, Hashable {
        case unknown
        case serving
        case notServing
    }

    /// How it behaves.
    public let behaviour: Behaviour
    /// The port it listens on (on 127.0.0.1).
    public let port: Int
    private let health: HealthState
    private let counters: LocalHTTPBackend.Counters

    /// `Check` calls answered so far (a status or `notFound`), and how many of them with
    /// `unavailable`.
    public var served: (total: Int, failed: Int) { counters.state.withLockedValue { ($0.total, $0.failed) } }

    /// The status `Check` and `Watch` answer now.
    public var status: ServingStatus { health.status }

    /// Sets the status `Check` answers from now on; every `Watch` stream gets it.
    public func setStatus(_ status: ServingStatus) { health.setStatus(status) }

    private init(behaviour: Behaviour, port: Int, health: HealthState, counters: LocalHTTPBackend.Counters) {
        self.behaviour = behaviour
        self.port = port
        self.health = health
        self.counters = counters
    }

    /// Runs a backend for each of `behaviours` on 127.0.0.1 (each at a free port) while `body`
    /// runs, then stops them: `Watch` streams end, and the servers stop once their open calls have.
    ///
    /// - Throws: What starting a server or `body` throws.
    public static func withBackends<Result: Sendable>(
        _ behaviours: [Behaviour],
        _ body: ([LocalGRPCHealthBackend]) async throws -> Result
    ) async throws -> Result {
        let made = behaviours.map { behaviour in
            let health = HealthState()
            let counters = LocalHTTPBackend.Counters(seed: behaviour.seed)
            let server = GRPCServer(
                transport: HTTP2ServerTransport.Posix(address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext),
                services: [HealthService(behaviour: behaviour, health: health, counters: counters)]
            )
            return (behaviour, health, counters, server)
        }
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for (_, _, _, server) in made {
                group.addTask { try await server.serve() }
            }
            func stop() {
                for (_, health, _, server) in made {
                    health.finishWatches()
                    server.beginGracefulShutdown()
                }
            }
            let result: Result
            do {
                var backends: [LocalGRPCHealthBackend] = []
                for (behaviour, health, counters, server) in made {
                    // Waits until the server listens (or throws when it could not bind).
                    let address = try await server.transport.listeningAddress
                    guard let port = address.ipv4?.port else {
                        throw RPCError(code: .internalError, message: "the health server listens at \(address), not on IPv4")
                    }
                    backends.append(LocalGRPCHealthBackend(behaviour: behaviour, port: port, health: health, counters: counters))
                }
                result = try await body(backends)
            } catch {
                stop()
                group.cancelAll()
                throw error
            }
            stop()
            try await group.waitForAll()
            return result
        }
    }

    /// Runs one backend while `body` runs; see ``withBackends(_:_:)``.
    public static func withBackend<Result: Sendable>(
        _ behaviour: Behaviour,
        _ body: (LocalGRPCHealthBackend) async throws -> Result
    ) async throws -> Result {
        try await withBackends([behaviour]) { try await body($0[0]) }
    }
}

/// The serving status and the `Watch` streams that follow it.
final class HealthState: Sendable {
    private struct State {
        var status: LocalGRPCHealthBackend.ServingStatus = .serving
        var watchers: [UInt64: AsyncStream<LocalGRPCHealthBackend.ServingStatus>.Continuation] = [:]
        var nextWatcher: UInt64 = 0
        var finished = false
    }
    private let state = NIOLockedValueBox(State())

    var status: LocalGRPCHealthBackend.ServingStatus { state.withLockedValue { $0.status } }

    func setStatus(_ status: LocalGRPCHealthBackend.ServingStatus) {
        let watchers = state.withLockedValue { state in
            state.status = status
            return Array(state.watchers.values)
        }
        for watcher in watchers { watcher.yield(status) }
    }

    /// The current status, then each change, until ``finishWatches()`` or the reader stops.
    func watch() -> AsyncStream<LocalGRPCHealthBackend.ServingStatus> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: LocalGRPCHealthBackend.ServingStatus.self,
            bufferingPolicy: .bufferingNewest(1)
        )
        let id = state.withLockedValue { state -> UInt64? in
            if state.finished { return nil }
            defer { state.nextWatcher += 1 }
            state.watchers[state.nextWatcher] = continuation
            continuation.yield(state.status)
            return state.nextWatcher
        }
        if let id {
            continuation.onTermination = { [weak self] _ in
                _ = self?.state.withLockedValue { $0.watchers.removeValue(forKey: id) }
            }
        } else {
            continuation.finish()
        }
        return stream
    }

    /// Ends every `Watch` stream, now and to come (the server is stopping).
    func finishWatches() {
        let watchers = state.withLockedValue { state in
            state.finished = true
            defer { state.watchers = [:] }
            return Array(state.watchers.values)
        }
        for watcher in watchers { watcher.finish() }
    }
}

/// The health service of one backend.
struct HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol {
    let behaviour: LocalGRPCHealthBackend.Behaviour
    let health: HealthState
    let counters: LocalHTTPBackend.Counters

    func check(
        request: Grpc_Health_V1_HealthCheckRequest,
        context: ServerContext
    ) async throws -> Grpc_Health_V1_HealthCheckResponse {
        let fails = counters.next(failureRate: behaviour.failureRate)
        try await Task.sleep(for: behaviour.latency)
        if fails {
            throw RPCError(code: .unavailable, message: "this backend fails a share of its calls (\(behaviour.failureRate))")
        }
        guard knows(request.service) else {
            throw RPCError(code: .notFound, message: "unknown service '\(request.service)'")
        }
        return Self.response(Self.wire(health.status))
    }

    func watch(
        request: Grpc_Health_V1_HealthCheckRequest,
        response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>,
        context: ServerContext
    ) async throws {
        let known = knows(request.service)
        for await status in health.watch() {
            try await response.write(Self.response(known ? Self.wire(status) : .serviceUnknown))
        }
    }

    private func knows(_ service: String) -> Bool {
        service.isEmpty || behaviour.services.contains(service)
    }

    private static func response(_ status: Grpc_Health_V1_HealthCheckResponse.ServingStatus) -> Grpc_Health_V1_HealthCheckResponse {
        var response = Grpc_Health_V1_HealthCheckResponse()
        response.status = status
        return response
    }

    private static func wire(_ status: LocalGRPCHealthBackend.ServingStatus) -> Grpc_Health_V1_HealthCheckResponse.ServingStatus {
        switch status {
        case .unknown: .unknown
        case .serving: .serving
        case .notServing: .notServing
        }
    }
}
