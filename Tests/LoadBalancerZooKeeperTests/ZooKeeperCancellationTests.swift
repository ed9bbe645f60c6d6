import InMemoryLogging
import LoadBalancer
import LoadBalancerTestKit
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import LoadBalancerZooKeeper

/// A server on 127.0.0.1 that grants a session and then answers nothing, unless told to: a
/// ZooKeeper that has gone silent, which a real one cannot be made into.
final class SilentZooKeeperServer: Sendable {
    let port: Int
    private let server: any Channel
    private let state: Seen

    /// What the server has seen: its connections, and the xids of requests.
    final class Seen: Sendable {
        private let value = Mutex<(connections: [any Channel], xids: [Int32])>(([], []))
        func withLock<R: Sendable>(_ body: (inout (connections: [any Channel], xids: [Int32])) -> R) -> R {
            value.withLock { body(&$0) }
        }
    }

    private init(server: any Channel, state: Seen) {
        self.server = server
        self.port = server.localAddress?.port ?? 0
        self.state = state
    }

    static func start() async throws -> SilentZooKeeperServer {
        let state = Seen()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                state.withLock { $0.connections.append(channel) }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        HandshakeOnlyHandler { xid in state.withLock { $0.xids.append(xid) } }
                    )
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return SilentZooKeeperServer(server: server, state: state)
    }

    /// The xids of the requests received (pings left out).
    var requestXids: [Int32] { state.withLock { $0.xids } }

    /// The connections accepted.
    var connectionCount: Int { state.withLock { $0.connections.count } }

    /// Answers request `xid` on the latest connection, late: a reply with no error and an empty
    /// body, or the body of a create that made `created`.
    func answer(xid: Int32, created: String? = nil) async throws {
        guard let channel = state.withLock({ $0.connections.last }) else { return }
        var reply = JuteWriter()
        reply.int(xid)
        reply.long(1)
        reply.int(0)
        if let created { reply.string(created) }
        try await channel.writeAndFlush(ByteBuffer(bytes: reply.frame))
    }

    func close() async {
        try? await server.close()
        for channel in state.withLock({ $0.connections }) { try? await channel.close() }
    }
}

/// Grants a session in answer to the connect request, then reads and ignores everything, noting
/// the xids of requests.
private final class HandshakeOnlyHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var decoder = ZooKeeperFrameDecoder()
    private var handshaken = false
    private let received: @Sendable (Int32) -> Void

    init(received: @escaping @Sendable (Int32) -> Void) { self.received = received }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        decoder.append(unwrapInboundIn(data).readableBytesView)
        while let frame = try? decoder.next() {
            if !handshaken {
                handshaken = true
                var response = JuteWriter()
                response.int(0) // protocol version
                response.int(30_000) // session timeout, ms: the client drops a quiet connection after 20 s
                response.long(0x5EED) // session id
                response.buffer([UInt8](repeating: 7, count: 16)) // password
                response.bool(false) // read-only
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: response.frame)), promise: nil)
            } else {
                var reader = JuteReader(frame)
                if let xid = try? reader.int(), xid > 0 { received(xid) }
            }
        }
    }
}

/// Whether a registrar's (or a publisher's) `run()` has returned.
final class Ended: Sendable {
    private let value = Atomic<Bool>(false)

    var isSet: Bool { value.load(ordering: .acquiring) }

    /// Runs `body` in a new task, noting when it has returned.
    static func running(_ body: @escaping @Sendable () async -> Void) -> (task: Task<Void, Never>, ended: Ended) {
        let ended = Ended()
        let task = Task {
            await body()
            ended.value.store(true, ordering: .releasing)
        }
        return (task, ended)
    }
}

/// A trace-level logger whose entries the returned handler keeps.
private func keptLogger() -> (log: InMemoryLogHandler, logger: Logger) {
    let log = InMemoryLogHandler()
    var logger = Logger(label: "test", factory: { _ in log })
    logger.logLevel = .trace
    return (log, logger)
}

/// The test kit's `pollUntil`, every 10 ms, 20 s by default (scaled by `TestTimeScale`). (This
/// file is also in the sanitizer runs' build, which leaves the test-server helpers out.)
private func waitFor(_ what: String, timeout: Duration = .seconds(20), _ condition: () -> Bool) async throws {
    try await pollUntil(what, timeout: timeout, interval: .milliseconds(10), condition)
}

@Suite("ZooKeeper requests honour cancellation", .serialized, .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct ZooKeeperCancellationTests {
    /// A silent server, and a client whose session on it is established (its first event is
    /// the new session), running until the returned task is cancelled.
    func connectedToSilentServer() async throws -> (SilentZooKeeperServer, ZooKeeperClient, Task<Void, Never>) {
        let server = try await SilentZooKeeperServer.start()
        let client = ZooKeeperClient(configuration: ZooKeeperConfiguration(servers: [.init(host: "127.0.0.1", port: server.port)]))
        let events = client.events()
        let run = Task { _ = try? await client.run() }
        var iterator = events.makeAsyncIterator()
        #expect(await iterator.next() == .connected(sessionID: 0x5EED, newSession: true))
        return (server, client, run)
    }

    /// Cancels the client's `run`, waits for the client to end, and closes `server`.
    func stop(_ run: Task<Void, Never>, _ server: SilentZooKeeperServer) async {
        run.cancel()
        await run.value
        await server.close()
    }

    @Test("a cancelled request returns within 100 ms while the server stays silent; its late reply is dropped, the connection kept")
    func cancelledRequestReturns() async throws {
        let (server, client, run) = try await connectedToSilentServer()

        for round in 1...2 {
            // Cancelled once the request has reached the server, which does not answer.
            let (result, elapsed) = try await timeToReturn(
                afterCancelling: { () async -> Result<[UInt8], ZooKeeperError> in
                    do throws(ZooKeeperError) {
                        return .success(try await client.getData("/silent").data)
                    } catch {
                        return .failure(error)
                    }
                },
                once: { client.pendingRequestCount == 1 && server.requestXids.count == round }
            )
            #expect(elapsed < callTimeLimit(.milliseconds(100)), "round \(round): \(elapsed)")
            if case .failure(let error) = result { #expect(error.code == .cancelled, "\(error)") } else { Issue.record("it succeeded") }
            #expect(client.pendingRequestCount == 0)
            // The reply comes after all: dropped, and the connection stays.
            try await server.answer(xid: try #require(server.requestXids.last))
        }
        // Still the first connection and the first session: no reply was taken for garbage.
        let probe = Task { try await client.getData("/after") }
        try await pollUntil("the probe's request at the server", timeout: .seconds(30), seen: { "requests \(server.requestXids)" }) {
            server.requestXids.count >= 3
        }
        #expect(client.isConnected)
        #expect(server.connectionCount == 1)
        probe.cancel()
        _ = await probe.result
        await stop(run, server)
    }

    @Test("a registrar cancelled while its create is in flight still deletes the node the create made")
    func registrarCancelledDuringCreate() async throws {
        let (server, client, run) = try await connectedToSilentServer()
        let registrar = ZooKeeperRegistrar(instance: try Instance(host: "127.0.0.1", port: 8001), path: "/svc", client: client)
        let (registration, ended) = Ended.running { try? await registrar.run() }
        // The parent's create (answered), then the node's (held while the registrar is cancelled).
        try await waitFor("the parent's create") { server.requestXids.count == 1 }
        try await server.answer(xid: server.requestXids[0], created: "/svc")
        try await waitFor("the node's create") { server.requestXids.count == 2 }
        registration.cancel()
        try await server.answer(xid: server.requestXids[1], created: "/svc/instance-0000000001")
        // What the create made is deleted: a third request, whose answer ends the registrar.
        try await waitFor("the node's delete") { server.requestXids.count == 3 }
        try await server.answer(xid: server.requestXids[2])
        try await waitFor("the registrar to end") { ended.isSet }
        #expect(registrar.registeredNode == nil)
        await stop(run, server)
    }

    /// Shuts `client` down once `server` has the first request of `what` (it answers none), then
    /// waits, up to 10 s, until `what` has ended.
    func shutDown(_ client: ZooKeeperClient, during what: String, on server: SilentZooKeeperServer, ended: Ended) async throws {
        try await waitFor("\(what)'s first request") { server.requestXids.count == 1 }
        await client.shutdown()
        try await waitFor("\(what) to end", timeout: .seconds(10)) { ended.isSet }
    }

    @Test("a registrar whose client shuts down during its create stops at once: no failure logged, no backoff")
    func registrarStopsWhenClientShutsDown() async throws {
        let (server, client, run) = try await connectedToSilentServer()
        let (log, logger) = keptLogger()
        // A backoff of a minute: a registrar that took the shutdown for a failure would sleep
        // (a random part of a minute) and log a warning before it noticed the client was gone.
        let registrar = ZooKeeperRegistrar(
            instance: try Instance(host: "127.0.0.1", port: 8001), path: "/svc", client: client,
            backoff: Backoff(base: .seconds(60), cap: .seconds(60)), logger: logger
        )
        let (registration, ended) = Ended.running { try? await registrar.run() }
        try await shutDown(client, during: "the registrar", on: server, ended: ended)
        let warnings = log.entries.filter { $0.level >= .warning }.map { "\($0.message) \($0.metadata)" }
        #expect(warnings.isEmpty, "\(warnings)")
        #expect(registrar.registeredNode == nil)
        registration.cancel()
        await stop(run, server)
    }

    @Test("a publisher whose client shuts down during its read ends with a closed error, reporting no lost connection")
    func publisherEndsWhenClientShutsDown() async throws {
        let (server, client, run) = try await connectedToSilentServer()
        let (log, logger) = keptLogger()
        // A backoff of a minute: a publisher that took the shutdown for a lost connection would
        // publish a registryUnavailable update and sleep before it noticed the client was gone.
        let publisher = ZooKeeperPublisher(
            path: "/svc", client: client, backoff: Backoff(base: .seconds(60), cap: .seconds(60)), logger: logger)
        let received = Mutex<[InstanceUpdate]>([])
        let updates = publisher.updates()
        let collecting = Task {
            for await update in updates { received.withLock { $0.append(update) } }
        }
        let (reading, ended) = Ended.running { try? await publisher.run() }
        try await shutDown(client, during: "the publisher", on: server, ended: ended)
        await collecting.value // the subscription ends with the publisher
        let all = received.withLock { $0 }
        #expect(all.count == 1, "\(all)")
        #expect(all.last?.error?.code == .closed, "\(all)")
        #expect((all.last?.error?.cause as? ZooKeeperError)?.code == .closed, "\(all)")
        // Its one warning says the client was closed; none says a read failed.
        let warnings = log.entries.filter { $0.level >= .warning }.map { "\($0.message)" }
        #expect(warnings == ["the registry client was closed; the publisher stops"], "\(warnings)")
        reading.cancel()
        await stop(run, server)
    }

    @Test("a client shut down before it ever ran ends its event streams")
    func shutDownBeforeRunning() async throws {
        let client = ZooKeeperClient(configuration: ZooKeeperConfiguration(servers: [.init(host: "127.0.0.1", port: 1)]))
        let events = client.events()
        await client.shutdown()
        // Bounded: a stream that never ended would be cut at the timeout, and the test fail.
        let ended = try await withTimeout(
            .seconds(10), onTimeout: { ZooKeeperError(code: .operationTimeout, message: "the stream did not end") }
        ) {
            for await _ in events {}
            return true
        }
        #expect(ended)
        #expect(client.isShutDown)
    }

    @Test("a request whose task is cancelled before it is sent fails at once and sends nothing")
    func cancelledBeforeSending() async throws {
        let (server, client, run) = try await connectedToSilentServer()
        let request = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await client.getData("/never")
        }
        let result = await request.result
        if case .failure(let error) = result {
            #expect((error as? ZooKeeperError)?.code == .cancelled, "\(error)")
        } else {
            Issue.record("it succeeded")
        }
        #expect(client.pendingRequestCount == 0)
        #expect(server.requestXids.isEmpty)
        await stop(run, server)
    }
}
