import NIOCore
import NIOPosix
import Synchronization

/// A TCP relay on 127.0.0.1 in front of one server, which a test can cut: while it is down it
/// drops every relayed connection and refuses new ones (accepts and closes them at once), so a
/// client sees its server go away, deterministically, while others still reach the server.
public final class TCPProxy: Sendable {
    /// The port clients connect to.
    public let port: Int
    private let upstreamPort: Int
    private let server: any Channel
    private let state = Mutex<(up: Bool, connections: [ObjectIdentifier: any Channel])>((true, [:]))

    /// Starts a relay to `127.0.0.1:upstreamPort`.
    public static func start(upstreamPort: Int) async throws -> TCPProxy {
        try await TCPProxy(upstreamPort: upstreamPort)
    }

    private init(upstreamPort: Int) async throws {
        self.upstreamPort = upstreamPort
        let box = ProxyBox()
        server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                box.proxy?.accept(channel) ?? channel.close()
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        port = server.localAddress?.port ?? 0
        box.proxy = self
    }

    /// Whether connections are relayed now.
    public var isUp: Bool { state.withLock { $0.up } }

    /// Drops every relayed connection and refuses new ones until ``restore()``.
    public func cut() {
        let connections = state.withLock { state in
            state.up = false
            defer { state.connections = [:] }
            return Array(state.connections.values)
        }
        for connection in connections { connection.close(promise: nil) }
    }

    /// Relays new connections again.
    public func restore() { state.withLock { $0.up = true } }

    /// Stops the relay.
    public func stop() async throws {
        cut()
        try await server.close()
    }

    private func accept(_ inbound: any Channel) -> EventLoopFuture<Void> {
        guard isUp else { return inbound.close() }
        let upstreamPort = self.upstreamPort
        // The inbound side reads once the initializer's future completes; the outbound side's relay
        // is in place before it connects. Neither loses a byte.
        return ClientBootstrap(group: inbound.eventLoop)
            .channelInitializer { outbound in outbound.pipeline.addHandler(Relay(peer: inbound)) }
            .connect(host: "127.0.0.1", port: upstreamPort)
            .flatMap { outbound in
                self.track(inbound)
                self.track(outbound)
                return inbound.pipeline.addHandler(Relay(peer: outbound))
            }
            .flatMapError { _ in inbound.close() }
    }

    private func track(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        let keep = state.withLock { state -> Bool in
            guard state.up else { return false }
            state.connections[key] = channel
            return true
        }
        if !keep { channel.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in
            _ = self.state.withLock { $0.connections.removeValue(forKey: key) }
        }
    }
}

/// Lets the bootstrap's initializer reach the proxy being initialised.
private final class ProxyBox: @unchecked Sendable {
    var proxy: TCPProxy?
}

/// Forwards what one side reads to the other; closing one side closes the other.
private final class Relay: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let peer: any Channel

    init(peer: any Channel) { self.peer = peer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let channel = context.channel
        peer.writeAndFlush(buffer).whenFailure { _ in channel.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        peer.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
