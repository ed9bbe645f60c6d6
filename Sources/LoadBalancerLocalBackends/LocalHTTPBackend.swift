import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A small HTTP server on 127.0.0.1 for demos and tests: it answers every request after a fixed
/// latency, with 200, or with 500 for a given share of requests (decided by a seeded generator, so
/// runs repeat). It counts what it served.
///
/// `GET /health` answers at once, 200 while ``isHealthy`` and 503 after ``setHealthy(_:)`` with
/// `false`; health checks are counted apart (``healthChecksServed``).
public final class LocalHTTPBackend: Sendable {
    /// How a backend behaves.
    public struct Behaviour: Sendable {
        /// How long before answering.
        public var latency: Duration
        /// The share of requests answered with 500, in `0...1`.
        public var failureRate: Double
        /// Seed of the failure draws.
        public var seed: UInt64

        public init(latency: Duration, failureRate: Double = 0, seed: UInt64 = 1) {
            self.latency = latency
            self.failureRate = failureRate
            self.seed = seed
        }
    }

    /// The port it listens on (on 127.0.0.1).
    public let port: Int
    private let channel: any Channel
    private let counters: Counters
    private let connections: Connections

    /// Requests answered so far, and how many of them with 500 (health checks not counted).
    public var served: (total: Int, failed: Int) { counters.state.withLockedValue { ($0.total, $0.failed) } }

    /// `GET /health` requests answered so far.
    public var healthChecksServed: Int { counters.state.withLockedValue { $0.healthChecks } }

    /// Whether `GET /health` answers 200 (else 503). `true` at the start.
    public var isHealthy: Bool { counters.state.withLockedValue { $0.healthy } }

    /// Sets what `GET /health` answers from now on: 200 when `healthy`, else 503.
    public func setHealthy(_ healthy: Bool) { counters.state.withLockedValue { $0.healthy = healthy } }

    private init(port: Int, channel: any Channel, counters: Counters, connections: Connections) {
        self.port = port
        self.channel = channel
        self.counters = counters
        self.connections = connections
    }

    /// Starts a backend on 127.0.0.1 at a free port (or at `port`).
    public static func start(_ behaviour: Behaviour, port: Int = 0) async throws -> LocalHTTPBackend {
        let counters = Counters(seed: behaviour.seed)
        let connections = Connections()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                connections.add(channel)
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(behaviour: behaviour, counters: counters))
                }
            }
            .bind(host: "127.0.0.1", port: port)
            .get()
        return LocalHTTPBackend(
            port: channel.localAddress?.port ?? port, channel: channel, counters: counters, connections: connections
        )
    }

    /// The connections open to this backend now.
    public var openConnections: Int { connections.count }

    /// Stops listening. Open connections are closed by their clients or when the process ends.
    public func stop() async throws {
        try await channel.close()
    }

    /// Dies as a crashed process would: stops listening and drops every open connection, with
    /// requests in flight unanswered.
    public func kill() async {
        try? await channel.close()
        for connection in connections.all() { try? await connection.close() }
    }

    /// The open connections.
    final class Connections: Sendable {
        private let channels = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])

        func add(_ channel: any Channel) {
            let id = ObjectIdentifier(channel)
            channels.withLockedValue { $0[id] = channel }
            channel.closeFuture.whenComplete { _ in
                _ = self.channels.withLockedValue { $0.removeValue(forKey: id) }
            }
        }

        func all() -> [any Channel] { channels.withLockedValue { Array($0.values) } }

        var count: Int { channels.withLockedValue { $0.count } }
    }

    final class Counters: Sendable {
        struct State {
            var total = 0
            var failed = 0
            var random: UInt64
            var healthy = true
            var healthChecks = 0
        }
        let state: NIOLockedValueBox<State>
        init(seed: UInt64) { state = NIOLockedValueBox(State(random: seed)) }

        /// Counts a health check and says whether it passes.
        func nextHealthCheck() -> Bool {
            state.withLockedValue { state in
                state.healthChecks += 1
                return state.healthy
            }
        }

        /// Counts a request and says whether it fails.
        func next(failureRate: Double) -> Bool {
            state.withLockedValue { state in
                state.total += 1
                // SplitMix64.
                state.random &+= 0x9E37_79B9_7F4A_7C15
                var z = state.random
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                z ^= z >> 31
                let fails = Double(z >> 11) * 0x1.0p-53 < failureRate
                if fails { state.failed += 1 }
                return fails
            }
        }
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let behaviour: Behaviour
        let counters: Counters
        var keepAlive = true
        var isHealthCheck = false

        init(behaviour: Behaviour, counters: Counters) {
            self.behaviour = behaviour
            self.counters = counters
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                keepAlive = head.isKeepAlive
                isHealthCheck = head.method == .GET && head.uri == "/health"
            case .body:
                break
            case .end:
                if isHealthCheck {
                    let healthy = counters.nextHealthCheck()
                    respond(
                        context: context, status: healthy ? .ok : .serviceUnavailable, body: healthy ? "healthy\n" : "unhealthy\n",
                        keepAlive: keepAlive)
                    return
                }
                let fails = counters.next(failureRate: behaviour.failureRate)
                let keepAlive = self.keepAlive
                let delay = TimeAmount(behaviour.latency)
                let loopBound = NIOLoopBound((context: context, handler: self), eventLoop: context.eventLoop)
                context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
                    let (context, handler) = loopBound.value
                    handler.respond(context: context, failed: fails, keepAlive: keepAlive)
                }
            }
        }

        func respond(context: ChannelHandlerContext, failed: Bool, keepAlive: Bool) {
            let body = failed ? "failed\n" : "ok \(context.localAddress?.port ?? 0)\n"
            respond(context: context, status: failed ? .internalServerError : .ok, body: body, keepAlive: keepAlive)
        }

        func respond(context: ChannelHandlerContext, status: HTTPResponseStatus, body: String, keepAlive: Bool) {
            var headers = HTTPHeaders([("content-length", "\(body.utf8.count)"), ("content-type", "text/plain")])
            if !keepAlive { headers.add(name: "connection", value: "close") }
            let head = HTTPResponseHead(version: .http1_1, status: status, headers: headers)
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive {
                let channel = context.channel
                done.whenComplete { _ in channel.close(promise: nil) }
            }
        }
    }
}
