import LoadBalancer
import LoadBalancerTestKit
import LoadBalancerTestSupport
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import LoadBalancerZooKeeper

/// A ZooKeeper that speaks just enough of the protocol for a publisher (session, exists,
/// getChildren2, getData, addWatch, SetWatches / SetWatches2, removeWatches, ping), from nodes the
/// test sets, and records what it was asked. It grants the same session on every connection, so a
/// dropped connection is a reconnection within the session. With `addWatch: false` it answers
/// addWatch as a server before 3.6 does: UNIMPLEMENTED, then it closes the connection.
final class ScriptedZooKeeperServer: Sendable {
    struct Seen: Sendable {
        var connections: [any Channel] = []
        /// Each request: its op code and path (empty when it has none).
        var requests: [(op: Int32, path: String)] = []
        /// The watches each SetWatches or SetWatches2 listed: its op, then the lists.
        var setWatches: [(op: Int32, lists: [[String]])] = []
        /// addWatch requests: path and mode.
        var addWatches: [(path: String, mode: Int32)] = []
        /// removeWatches requests: path and type.
        var removeWatches: [(path: String, type: Int32)] = []
        var nodes: [String: [UInt8]] = [:]
    }

    let port: Int
    let supportsAddWatch: Bool
    private let server: any Channel
    let seen: Mutex<Seen>

    private init(server: any Channel, nodes: [String: String], supportsAddWatch: Bool) {
        self.server = server
        self.port = server.localAddress?.port ?? 0
        var seen = Seen()
        seen.nodes = nodes.mapValues { Array($0.utf8) }
        self.seen = Mutex(seen)
        self.supportsAddWatch = supportsAddWatch
    }

    static func start(addWatch: Bool, nodes: [String: String]) async throws -> ScriptedZooKeeperServer {
        let box = Box()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let scripted = box.server else { throw ChannelError.ioOnClosedChannel }
                    scripted.seen.withLock { $0.connections.append(channel) }
                    try channel.pipeline.syncOperations.addHandler(ScriptedHandler(server: scripted))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        let scripted = ScriptedZooKeeperServer(server: server, nodes: nodes, supportsAddWatch: addWatch)
        box.server = scripted
        return scripted
    }

    /// Holds the server for the channel initializer, which exists before it.
    private final class Box: Sendable {
        private let value = Mutex<ScriptedZooKeeperServer?>(nil)
        var server: ScriptedZooKeeperServer? {
            get { value.withLock { $0 } }
            set { value.withLock { $0 = newValue } }
        }
    }

    var configuration: ZooKeeperConfiguration {
        ZooKeeperConfiguration(servers: [.init(host: "127.0.0.1", port: port)])
    }

    func setNode(_ path: String, _ data: String?) {
        seen.withLock { $0.nodes[path] = data.map { Array($0.utf8) } }
    }

    var connectionCount: Int { seen.withLock { $0.connections.count } }
    func requests(_ op: ZooKeeperOp) -> [String] { seen.withLock { $0.requests.filter { $0.op == op.rawValue }.map(\.path) } }

    /// Sends a watch notification on the latest connection.
    func notify(_ type: Int32, _ path: String) async throws {
        var writer = JuteWriter()
        writer.int(-1)
        writer.long(-1)
        writer.int(0)
        writer.int(type)
        writer.int(3) // SyncConnected
        writer.string(path)
        try await send(writer.frame)
    }

    /// Sends `bytes` as they are on the latest connection.
    func send(_ bytes: [UInt8]) async throws {
        guard let channel = seen.withLock({ $0.connections.last }) else { return }
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    /// Closes every connection (the client reconnects, within the session).
    func dropConnections() async {
        for channel in seen.withLock({ $0.connections }) { try? await channel.close() }
    }

    func close() async {
        try? await server.close()
        await dropConnections()
    }
}

/// Answers one connection of a ``ScriptedZooKeeperServer``.
private final class ScriptedHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var decoder = ZooKeeperFrameDecoder()
    private var handshaken = false
    private let server: ScriptedZooKeeperServer

    init(server: ScriptedZooKeeperServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        decoder.append(unwrapInboundIn(data).readableBytesView)
        while let frame = try? decoder.next() {
            if !handshaken {
                handshaken = true
                var response = JuteWriter()
                response.int(0)
                response.int(30_000)
                response.long(0x5EED)
                response.buffer([UInt8](repeating: 7, count: 16))
                response.bool(false)
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: response.frame)), promise: nil)
                continue
            }
            guard let reply = answer(frame) else { continue }
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: reply.frame)), promise: nil)
            if reply.close { context.close(promise: nil) }
        }
    }

    private static let stat = [UInt8](repeating: 0, count: 68)

    /// The reply to one request (nil: none), and whether to close the connection after it.
    private func answer(_ frame: [UInt8]) -> (frame: [UInt8], close: Bool)? {
        var reader = JuteReader(frame)
        guard let xid = try? reader.int(), let op = try? reader.int() else { return nil }
        func reply(error: Int32 = 0, _ body: [UInt8] = []) -> (frame: [UInt8], close: Bool) {
            var writer = JuteWriter()
            writer.int(xid)
            writer.long(1)
            writer.int(error)
            var frame = writer.bytes + body
            var length = JuteWriter()
            length.int(Int32(frame.count))
            frame = length.bytes + frame
            return (frame, false)
        }
        if op == ZooKeeperOp.ping.rawValue { return reply() }
        if op == ZooKeeperOp.setWatches.rawValue || op == ZooKeeperOp.setWatches2.rawValue {
            _ = try? reader.long()
            var lists: [[String]] = []
            while reader.remaining > 0, let list = try? reader.strings() { lists.append(list) }
            server.seen.withLock { $0.setWatches.append((op, lists)) }
            return reply()
        }
        let path = (try? reader.string()) ?? ""
        server.seen.withLock { $0.requests.append((op, path)) }
        let nodes = server.seen.withLock { $0.nodes }
        switch op {
        case ZooKeeperOp.exists.rawValue:
            return nodes[path] != nil ? reply(Self.stat) : reply(error: -101)
        case ZooKeeperOp.getData.rawValue:
            guard let data = nodes[path] else { return reply(error: -101) }
            var writer = JuteWriter()
            writer.buffer(data)
            return reply(writer.bytes + Self.stat)
        case ZooKeeperOp.getChildren2.rawValue:
            guard nodes[path] != nil else { return reply(error: -101) }
            let prefix = path == "/" ? "/" : path + "/"
            let children = nodes.keys.filter { $0.hasPrefix(prefix) && !$0.dropFirst(prefix.count).contains("/") }
            var writer = JuteWriter()
            writer.strings(children.map { String($0.dropFirst(prefix.count)) }.sorted())
            return reply(writer.bytes + Self.stat)
        case ZooKeeperOp.addWatch.rawValue:
            guard server.supportsAddWatch else {
                var answer = reply(error: -6)
                answer.close = true
                return answer
            }
            let mode = (try? reader.int()) ?? -1
            server.seen.withLock { $0.addWatches.append((path, mode)) }
            return reply()
        case ZooKeeperOp.removeWatches.rawValue:
            let type = (try? reader.int()) ?? -1
            server.seen.withLock { $0.removeWatches.append((path, type)) }
            return reply()
        default:
            return reply(error: -6)
        }
    }
}

@Suite("ZooKeeper persistent watches: frames, and a scripted server", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct ZooKeeperPersistentWatchTests {
    @Test("addWatch, removeWatches and SetWatches2 are encoded as zookeeper.jute says")
    func encoding() throws {
        #expect(ZooKeeperRecords.addWatch("/svc", mode: .persistentRecursive) == [0, 0, 0, 4] + Array("/svc".utf8) + [0, 0, 0, 1])
        #expect(ZooKeeperRecords.addWatch("/svc", mode: .persistent) == [0, 0, 0, 4] + Array("/svc".utf8) + [0, 0, 0, 0])
        #expect(ZooKeeperRecords.removeWatches("/a", kind: .any) == [0, 0, 0, 2] + Array("/a".utf8) + [0, 0, 0, 3])
        #expect(ZooKeeperRecords.removeWatches("/a", kind: .children).suffix(4) == [0, 0, 0, 1])
        #expect(ZooKeeperRecords.removeWatches("/a", kind: .data).suffix(4) == [0, 0, 0, 2])

        let frame = ZooKeeperRecords.request(
            xid: ZooKeeperXid.setWatches, op: .setWatches2,
            body: ZooKeeperRecords.setWatches2(
                relativeZxid: 0x1_0000_0002, data: ["/d"], exist: [], child: ["/c1", "/c2"], persistent: ["/p"],
                persistentRecursive: ["/svc"]))
        var reader = JuteReader(frame)
        #expect(try reader.int() == Int32(frame.count - 4))
        #expect(try reader.int() == -8)
        #expect(try reader.int() == 105)
        #expect(try reader.long() == 0x1_0000_0002)
        #expect(try reader.strings() == ["/d"])
        #expect(try reader.strings() == [])
        #expect(try reader.strings() == ["/c1", "/c2"])
        #expect(try reader.strings() == ["/p"])
        #expect(try reader.strings() == ["/svc"])
        #expect(reader.remaining == 0)

        let add = ZooKeeperRecords.request(xid: 9, op: .addWatch, body: ZooKeeperRecords.addWatch("/x", mode: .persistentRecursive))
        #expect(Array(add.dropFirst(4).prefix(8)) == [0, 0, 0, 9, 0, 0, 0, 106])
        let remove = ZooKeeperRecords.request(xid: 9, op: .removeWatches, body: ZooKeeperRecords.removeWatches("/x", kind: .any))
        #expect(Array(remove.dropFirst(8).prefix(4)) == [0, 0, 0, 18])
        #expect(ZooKeeperError.Code.unimplemented.rawValue == -6 && ZooKeeperError.Code.unimplemented.description == "unimplemented")
        #expect(ZooKeeperError.Code.noWatcher.rawValue == -121)
    }

    @Test("the events of a persistent watch decode; malformed ones are typed errors")
    func decoding() throws {
        func notification(type: Int32, path: [UInt8], length: Int32? = nil) -> [UInt8] {
            var writer = JuteWriter()
            writer.int(-1)
            writer.long(-1)
            writer.int(0)
            writer.int(type)
            writer.int(3)
            writer.int(length ?? Int32(path.count))
            return writer.bytes + path
        }
        for type: Int32 in [1, 2, 3] {
            let (header, body) = try ZooKeeperRecords.reply(notification(type: type, path: Array("/svc/a".utf8)))
            var reader = body
            #expect(header.xid == -1)
            let event = try ZooKeeperRecords.watchEvent(&reader)
            #expect(event.type == type && event.path == "/svc/a")
            try ZooKeeperFrame.validate(notification(type: type, path: Array("/svc/a".utf8)))
        }
        // A path whose length runs past the end, a negative length, a cut header, a cut event.
        let malformed: [[UInt8]] = [
            notification(type: 1, path: Array("/svc".utf8), length: 40),
            notification(type: 2, path: [], length: -7),
            Array(notification(type: 3, path: Array("/a".utf8)).prefix(10)),
            Array(notification(type: 3, path: Array("/a".utf8)).prefix(20)),
        ]
        for frame in malformed {
            #expect(throws: ZooKeeperDecodingError.self) { try ZooKeeperFrame.validate(frame) }
        }
        // An addWatch reply is a header (a trailing ErrorResponse, as 3.6+ servers send, is fine).
        try ZooKeeperFrame.validate([0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(throws: ZooKeeperDecodingError.self) { try ZooKeeperFrame.validate([0, 0, 0, 5, 0, 0]) }
    }

    @Test("a server before 3.6: addWatch fails with unimplemented, and the publisher watches with child and data watches")
    func oldServer() async throws {
        let server = try await ScriptedZooKeeperServer.start(addWatch: false, nodes: ["/svc": "", "/svc/a": "127.0.0.1:8001"])
        let client = ZooKeeperClient(configuration: server.configuration)
        let publisher = ZooKeeperPublisher(path: "/svc", client: client)
        let recorder = Recorder()
        try await withRunning([{ try? await client.run() }, { try? await publisher.run() }, recorder.recording(publisher)]) {
            try await eventually("a") { recorder.ids == ["127.0.0.1:8001"] }
            #expect(!publisher.usesPersistentWatch)
            #expect(server.requests(.addWatch).count == 1, "asked once, then no more")
            #expect(client.dataReadCount >= 1)
            // The child watch's event: the children are listed again.
            server.setNode("/svc/b", "127.0.0.1:8002")
            let lists = server.requests(.getChildren2).count
            try await eventually("connected again") { client.isConnected }
            try await server.notify(4, "/svc")
            try await eventually("b") { recorder.ids == ["127.0.0.1:8001", "127.0.0.1:8002"] }
            #expect(server.requests(.getChildren2).count > lists)
            #expect(server.requests(.addWatch).count == 1)

            let error = await #expect(throws: ZooKeeperError.self) { try await client.addWatch("/svc", mode: .persistentRecursive) }
            #expect(error?.code == .unimplemented)
            #expect(error?.message.contains("ZooKeeper 3.6") == true, "\(String(describing: error))")
            #expect(!client.hasPersistentWatch("/svc"))
        }
        await server.close()
    }

    @Test(
        "a reconnection within the session sets the persistent watch again (SetWatches2); the publisher reads again, and removes it when it stops"
    )
    func setWatchesAgain() async throws {
        let server = try await ScriptedZooKeeperServer.start(addWatch: true, nodes: ["/svc": "", "/svc/a": "127.0.0.1:8001"])
        let client = ZooKeeperClient(configuration: server.configuration)
        let publisher = ZooKeeperPublisher(path: "/svc", client: client)
        let recorder = Recorder()
        try await withRunning([{ try? await client.run() }, recorder.recording(publisher)]) {
            try await withRunning([{ try? await publisher.run() }]) {
                try await eventually("a") { recorder.ids == ["127.0.0.1:8001"] }
                #expect(publisher.usesPersistentWatch)
                #expect(server.seen.withLock { $0.addWatches.map(\.path) } == ["/svc"])
                #expect(server.seen.withLock { $0.addWatches.map(\.mode) } == [1])
                #expect(client.hasPersistentWatch("/svc"))
                // Each child read once.
                #expect(server.requests(.getData) == ["/svc/a"])

                // An event of a child: only that child is read.
                server.setNode("/svc/b", "127.0.0.1:8002")
                try await server.notify(1, "/svc/b")
                try await eventually("b") { recorder.ids == ["127.0.0.1:8001", "127.0.0.1:8002"] }
                #expect(server.requests(.getChildren2).count == 1, "no listing for an event")
                // A deeper node's event is left alone.
                let reads = server.requests(.getData).count
                try await server.notify(1, "/svc/b/deeper")
                server.setNode("/svc/c", "127.0.0.1:8003")
                try await server.notify(1, "/svc/c")
                try await eventually("c") { recorder.ids.count == 3 }
                #expect(server.requests(.getData).count == reads + 1)

                // The connection drops: the client comes back in the same session, sets the
                // watch again with SetWatches2, and the publisher reads everything again.
                let lists = server.requests(.getChildren2).count
                server.setNode("/svc/a", nil)
                await server.dropConnections()
                try await eventually("set again") { server.seen.withLock { $0.setWatches.count } >= 1 }
                let setAgain = server.seen.withLock { $0.setWatches[0] }
                #expect(setAgain.op == 105)
                #expect(setAgain.lists.count == 5)
                #expect(setAgain.lists[2] == ["/svc"], "the child watch beside the persistent one")
                #expect(setAgain.lists.last == ["/svc"])
                try await eventually("read again without a") {
                    server.requests(.getChildren2).count > lists && recorder.ids == ["127.0.0.1:8002", "127.0.0.1:8003"]
                }
                #expect(recorder.neverEmptiedOnceFilled)
            }
            // The publisher stopped: its watch is removed (every kind on the path), and is no
            // longer set again.
            try await eventually("removed") { server.seen.withLock { $0.removeWatches.count } == 1 }
            #expect(server.seen.withLock { $0.removeWatches[0].path } == "/svc")
            #expect(server.seen.withLock { $0.removeWatches[0].type } == 3)
            #expect(!client.hasPersistentWatch("/svc"))
            // Its answer was taken in: the connection stays.
            let connections = server.connectionCount
            _ = try await client.exists("/svc")
            #expect(server.connectionCount == connections && client.isConnected)
        }
        await server.close()
    }

    @Test(
        "under the persistent watch, the child watch's event lists the children: a child no event named (one the session may not read) is found"
    )
    func childWatchBesideThePersistentOne() async throws {
        let server = try await ScriptedZooKeeperServer.start(addWatch: true, nodes: ["/svc": "", "/svc/a": "127.0.0.1:8001"])
        let client = ZooKeeperClient(configuration: server.configuration)
        let publisher = ZooKeeperPublisher(path: "/svc", client: client)
        let recorder = Recorder()
        try await withRunning([{ try? await client.run() }, { try? await publisher.run() }, recorder.recording(publisher)]) {
            try await eventually("a") { recorder.ids == ["127.0.0.1:8001"] }
            #expect(publisher.usesPersistentWatch)
            let lists = server.requests(.getChildren2).count
            // What a server with the fix of CVE-2024-23944 sends for a child this session may not
            // read: no event of the child, only the parent's child watch.
            server.setNode("/svc/b", "127.0.0.1:8002")
            try await server.notify(4, "/svc")
            try await eventually("b") { recorder.ids == ["127.0.0.1:8001", "127.0.0.1:8002"] }
            #expect(server.requests(.getChildren2).count == lists + 1)
            #expect(server.requests(.getData) == ["/svc/a", "/svc/b"], "only the new child read")
            #expect(recorder.latest?.changes?.upserted.map(\.id) == ["127.0.0.1:8002"])
        }
        await server.close()
    }

    @Test("a malformed event drops the connection, never crashes; the publisher reads again and keeps its set")
    func malformedEvent() async throws {
        let server = try await ScriptedZooKeeperServer.start(addWatch: true, nodes: ["/svc": "", "/svc/a": "127.0.0.1:8001"])
        let client = ZooKeeperClient(configuration: server.configuration)
        let publisher = ZooKeeperPublisher(path: "/svc", client: client)
        let recorder = Recorder()
        try await withRunning([{ try? await client.run() }, { try? await publisher.run() }, recorder.recording(publisher)]) {
            try await eventually("a") { recorder.ids == ["127.0.0.1:8001"] }
            let lists = server.requests(.getChildren2).count
            // A child the publisher has no event for: only a new listing finds it.
            server.setNode("/svc/b", "127.0.0.1:8002")
            // A notification whose path claims 4,000 bytes.
            var writer = JuteWriter()
            writer.int(-1)
            writer.long(-1)
            writer.int(0)
            writer.int(1)
            writer.int(3)
            writer.int(4_000)
            let payload = writer.bytes + Array("/svc/x".utf8)
            var length = JuteWriter()
            length.int(Int32(payload.count))
            try await server.send(length.bytes + payload)
            try await eventually("reconnected") { server.connectionCount >= 2 && client.isConnected }
            try await eventually("read again") {
                server.requests(.getChildren2).count > lists && recorder.ids == ["127.0.0.1:8001", "127.0.0.1:8002"]
            }
            #expect(recorder.neverEmptiedOnceFilled)
        }
        await server.close()
    }
}
