import LoadBalancerTestKit
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import LoadBalancerZooKeeper

@Suite("ZooKeeper wire protocol")
struct ZooKeeperProtocolTests {
    @Test("jute values round-trip, big-endian, with -1 for null")
    func juteRoundTrip() throws {
        var writer = JuteWriter()
        writer.int(-2)
        writer.long(0x0102_0304_0506_0708)
        writer.bool(true)
        writer.buffer(nil)
        writer.string("é/x")
        writer.strings(["a", "bc"])
        #expect(Array(writer.bytes.prefix(12)) == [0xFF, 0xFF, 0xFF, 0xFE, 1, 2, 3, 4, 5, 6, 7, 8])
        var reader = JuteReader(writer.bytes)
        #expect(try reader.int() == -2)
        #expect(try reader.long() == 0x0102_0304_0506_0708)
        #expect(try reader.bool())
        #expect(try reader.buffer() == nil)
        #expect(try reader.string() == "é/x")
        #expect(try reader.strings() == ["a", "bc"])
        #expect(reader.remaining == 0)
        #expect(throws: ZooKeeperDecodingError.self) { try reader.int() }
    }

    @Test("lengths and counts that lie are typed errors")
    func lyingLengths() {
        for bytes: [UInt8] in [[0, 0, 0, 9, 1, 2], [0xFF, 0xFF, 0xFF, 0xF0], [0x7F, 0xFF, 0xFF, 0xFF]] {
            var reader = JuteReader(bytes)
            #expect(throws: ZooKeeperDecodingError.self) { try reader.buffer() }
            var counts = JuteReader(bytes)
            #expect(throws: ZooKeeperDecodingError.self) { try counts.strings() }
        }
    }

    @Test("decoding errors carry a code: truncated data, lying lengths, frames too large")
    func decodingErrorCodes() {
        var empty = JuteReader([])
        #expect(throws: ZooKeeperDecodingError(code: .truncated, message: "expected 4 bytes at 0, 0 left")) { try empty.int() }
        var negative = JuteReader([0xFF, 0xFF, 0xFF, 0xF0])
        let lie = #expect(throws: ZooKeeperDecodingError.self) { try negative.buffer() }
        #expect(lie?.code == .badLength)
        var decoder = ZooKeeperFrameDecoder()
        decoder.append([0x10, 0, 0, 0])
        let large = #expect(throws: ZooKeeperDecodingError.self) { try decoder.next() }
        #expect(large?.code == .frameTooLarge)
        #expect(large?.cause == nil)
    }

    @Test("the frame decoder splits a stream delivered in any chunks, and rejects bad lengths")
    func frames() throws {
        var stream: [UInt8] = []
        for payload in [[UInt8](), [1], [UInt8](repeating: 7, count: 300)] {
            var writer = JuteWriter()
            writer.int(Int32(payload.count))
            stream += writer.bytes + payload
        }
        for chunk in [1, 3, 64, 1000] {
            var decoder = ZooKeeperFrameDecoder()
            var frames: [[UInt8]] = []
            var offset = 0
            while offset < stream.count {
                decoder.append(stream[offset..<min(stream.count, offset + chunk)])
                offset += chunk
                while let frame = try decoder.next() { frames.append(frame) }
            }
            #expect(frames.map(\.count) == [0, 1, 300], "chunk \(chunk)")
        }
        for header: [UInt8] in [[0xFF, 0xFF, 0xFF, 0xFF], [0x10, 0, 0, 0]] {
            var decoder = ZooKeeperFrameDecoder()
            decoder.append(header)
            #expect(throws: ZooKeeperDecodingError.self) { try decoder.next() }
        }
    }

    @Test("requests are framed as the server expects: length, xid, op, body")
    func requestFrames() throws {
        let frame = ZooKeeperRecords.request(xid: 7, op: .getData, body: ZooKeeperRecords.pathAndWatch("/a", watch: true))
        var reader = JuteReader(frame)
        #expect(try reader.int() == Int32(frame.count - 4))
        #expect(try reader.int() == 7)
        #expect(try reader.int() == 4)
        #expect(try reader.string() == "/a")
        #expect(try reader.bool())
        let connect = ZooKeeperRecords.connectRequest(
            lastZxid: 5, timeoutMilliseconds: 4000, sessionID: 9, password: [UInt8](repeating: 1, count: 16))
        #expect(connect.count == 4 + 4 + 8 + 4 + 8 + 4 + 16 + 1)
    }

    @Test("a server that sends garbage gets its connection dropped, and the client tries again, without crashing")
    func garbageServer() async throws {
        let accepted = AcceptCounter()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                accepted.increment(channel)
                // A frame header with a negative length, in answer to anything.
                return channel.writeAndFlush(ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFB, 1, 2, 3]))
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        let port = try #require(server.localAddress?.port)
        let client = ZooKeeperClient(configuration: ZooKeeperConfiguration(servers: [.init(host: "127.0.0.1", port: port)]))
        let run = Task { try? await client.run() }
        // Bounded polling (each reconnection after a full round of failed servers pauses up to
        // 2 s), stretched under a sanitizer by the test kit's time scale.
        try await pollUntil("the client reconnected after each broken frame", timeout: .seconds(90), interval: .milliseconds(10)) {
            accepted.count >= 3
        }
        #expect(!client.isConnected)
        do {
            _ = try await client.getData("/x")
            Issue.record("a request succeeded without a session")
        } catch {
            #expect(error.code == .connectionLoss)
        }
        run.cancel()
        await run.value
        try await server.close()
        for channel in accepted.channels { try? await channel.close() }
    }
}

/// The connections a test server accepted, so the test can count and close them.
final class AcceptCounter: Sendable {
    private let value = Mutex<[any Channel]>([])
    var count: Int { value.withLock { $0.count } }
    var channels: [any Channel] { value.withLock { $0 } }
    func increment(_ channel: any Channel) { value.withLock { $0.append(channel) } }
}

extension ZooKeeperProtocolTests {
    @Test("SHA-1 and base64 match their test vectors; digest ids are ZooKeeper's")
    func digestIDs() {
        let hex = { (bytes: [UInt8]) in
            bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
        }
        #expect(hex(ZooKeeperDigest.sha1(Array("abc".utf8))) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(hex(ZooKeeperDigest.sha1([])) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        // Two blocks (56 bytes of message push the length into a second one).
        #expect(
            hex(ZooKeeperDigest.sha1(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)))
                == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
        #expect(ZooKeeperDigest.base64(Array("f".utf8)) == "Zg==")
        #expect(ZooKeeperDigest.base64(Array("fo".utf8)) == "Zm8=")
        #expect(ZooKeeperDigest.base64(Array("foobar".utf8)) == "Zm9vYmFy")
        // `echo -n alice:secret | openssl sha1 -binary | base64`
        #expect(
            ZooKeeperACL.Id.digest(username: "alice", password: "secret")
                == .init(scheme: "digest", id: "alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E="))
    }

    @Test("the auth packet, ACLs on create, and the auth reply")
    func authAndACLRecords() throws {
        let packet = ZooKeeperRecords.auth(scheme: "digest", credentials: Array("u:p".utf8))
        var frame = JuteReader(packet)
        #expect(try frame.int() == Int32(packet.count - 4))
        #expect(try frame.int() == -4) // xid
        #expect(try frame.int() == 100) // OpCode.auth
        #expect(try frame.int() == 0) // type
        #expect(try frame.string() == "digest")
        #expect(try frame.buffer() == Array("u:p".utf8))
        #expect(frame.remaining == 0)

        let acl: [ZooKeeperACL] = .creatorAllAnyoneRead
        var create = JuteReader(ZooKeeperRecords.create("/a", data: [1], mode: .ephemeral, acl: acl))
        #expect(try create.string() == "/a")
        #expect(try create.buffer() == [1])
        #expect(try ZooKeeperRecords.readACL(&create) == acl)
        #expect(try create.int() == 1)
        #expect(acl.map(\.description) == ["auth::cdrwa", "world:anyone:r"])
        #expect(ZooKeeperACL.Permissions.all.rawValue == 31)

        let header = { (error: Int32) in ZooKeeperRecords.ReplyHeader(xid: -4, zxid: 0, error: error) }
        #expect(ZooKeeperRecords.authOutcome(header(0)) == .accepted)
        #expect(ZooKeeperRecords.authOutcome(header(-115)) == .refused(-115))
        var reply = JuteWriter()
        reply.int(-4)
        reply.long(0)
        reply.int(-115)
        #expect(throws: Never.self) { try ZooKeeperFrame.validate(reply.bytes) }
        let error = ZooKeeperClient.authFailed(.init(username: "alice", password: "hunter2"), code: -115)
        #expect(error.code == .authFailed)
        #expect(error.description.contains(#"authentication failed for scheme digest, user "alice""#), "\(error)")
        #expect(!error.description.contains("hunter2"))
    }

    @Test("an ACL vector that lies about its count is a typed error")
    func lyingACLs() {
        var writer = JuteWriter()
        writer.int(1_000)
        writer.int(31)
        var reader = JuteReader(writer.bytes)
        let lie = #expect(throws: ZooKeeperDecodingError.self) { try ZooKeeperRecords.readACL(&reader) }
        #expect(lie?.code == .badLength)
        var truncated = JuteWriter()
        truncated.int(1)
        truncated.int(31)
        truncated.int(5)
        truncated.int(0)
        var short = JuteReader(truncated.bytes)
        #expect(throws: ZooKeeperDecodingError.self) { try ZooKeeperRecords.readACL(&short) }
    }

    @Test("the configuration never shows the password; the default ACL follows the credentials")
    func credentialsRedacted() {
        var configuration = ZooKeeperConfiguration(servers: [.init(host: "127.0.0.1", port: 2181)])
        #expect(configuration.defaultACL == .openUnsafe)
        configuration.credentials = .init(username: "alice", password: "hunter2")
        #expect(configuration.defaultACL == .creatorAllAnyoneRead)
        configuration.tls = .init(trustRootsPath: "/ca.pem")
        var dumped = ""
        dump(configuration, to: &dumped)
        for text in [configuration.description, String(reflecting: configuration), "\(configuration)", dumped] {
            #expect(!text.contains("hunter2"), "\(text)")
        }
        #expect(configuration.description.contains(#"digest user "alice""#))
        #expect(configuration.description.contains("tls: on (hostname verification on)"))
        configuration.acl = .creatorAll
        #expect(configuration.defaultACL == .creatorAll)
    }

    @Test("configurations that cannot work fail run() at once with invalidArgument")
    func unusableConfigurations() async {
        let server = ZooKeeperConfiguration.Server(host: "127.0.0.1", port: 1)
        var colon = ZooKeeperConfiguration(servers: [server])
        colon.credentials = .init(username: "a:b", password: "p")
        var missing = ZooKeeperConfiguration(servers: [server])
        missing.tls = .init(trustRootsPath: "/nonexistent/ca.pem")
        var keyless = ZooKeeperConfiguration(servers: [server])
        keyless.tls = .init(clientCertificatePath: "/nonexistent/client.pem")
        var address = ZooKeeperConfiguration(servers: [server])
        address.tls = .init(serverHostname: "10.0.0.1")
        for configuration in [colon, missing, keyless, address] {
            let client = ZooKeeperClient(configuration: configuration)
            do {
                try await client.run()
                Issue.record("run() returned for \(configuration)")
            } catch let error as ZooKeeperError {
                #expect(error.code == .invalidArgument, "\(error)")
            } catch {
                Issue.record("\(error)")
            }
            #expect(client.isShutDown)
        }
    }
}
