import NIOCore
import NIOPosix
import Synchronization

/// A server on 127.0.0.1 that takes what it is sent and never answers: a TCP listener that
/// accepts connections and holds them open, and a UDP socket that swallows datagrams, on one
/// port number. It stands for a registry that is up but hung, so a test can show a client gives
/// up after its timeout rather than waiting forever (a refused connection fails at once and never
/// tests a timeout).
public final class SilentServer: Sendable {
    /// The port of both the TCP listener and the UDP socket.
    public let port: Int
    private let listener: any Channel
    private let datagrams: any Channel
    private let connections = Mutex<[ObjectIdentifier: any Channel]>([:])

    /// Starts a silent server on a free port.
    public static func start() async throws -> SilentServer {
        // The TCP port is chosen by the system; the UDP socket takes the same number (retried
        // with a new TCP port in the rare case the UDP one is taken).
        var lastError: (any Error)?
        for _ in 0..<20 {
            do {
                return try await SilentServer()
            } catch {
                lastError = error
            }
        }
        throw lastError!
    }

    private init() async throws {
        let box = SilentBox()
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                box.server.withLock { $0 }?.hold(channel)
                // No handler reads the bytes: they are dropped at the pipeline's end.
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        let port = listener.localAddress?.port ?? 0
        do {
            datagrams = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(host: "127.0.0.1", port: port)
                .get()
        } catch {
            try? await listener.close()
            throw error
        }
        self.listener = listener
        self.port = port
        box.server.withLock { $0 = self }
    }

    /// How many TCP connections are held now.
    public var connectionCount: Int { connections.withLock { $0.count } }

    private func hold(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        connections.withLock { $0[key] = channel }
        channel.closeFuture.whenComplete { _ in
            _ = self.connections.withLock { $0.removeValue(forKey: key) }
        }
    }

    /// Closes the held connections and both sockets.
    public func stop() async {
        let held = connections.withLock { connections in
            defer { connections = [:] }
            return Array(connections.values)
        }
        for channel in held { try? await channel.close() }
        try? await listener.close()
        try? await datagrams.close()
    }
}

/// Lets the bootstrap's initializer reach the server being initialised.
private final class SilentBox: Sendable {
    let server = Mutex<SilentServer?>(nil)
}
