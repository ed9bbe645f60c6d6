import LoadBalancerZooKeeper
import NIOCore
import NIOPosix
import Testing

@Suite("ZooKeeper channels wrapped for async use")
struct AsyncChannelWrappingTests {
    @Test("a connected channel's wrapper let go of unconsumed, the channel still open, is not a crash")
    func droppedWrapper() async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0)
            .get()
        let port = try #require(server.localAddress?.port)
        let raw = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get()
        #expect(raw.isActive)
        // Wrapped in the bootstrap's initializer instead, the same wrapper let go of here stops the
        // process ("Deinited NIOAsyncWriter without calling finish()").
        do {
            // What a caller that throws between its connect and its exchange leaves behind.
            let wrapped = try await wrappedForAsync(raw)
            #expect(wrapped.channel === raw)
        }
        try await raw.close()
        try await server.close()
    }
}
