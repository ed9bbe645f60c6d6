import LoadBalancerDNS
import NIOCore
import NIOPosix
import Testing

@Suite("DNS channels wrapped for async use")
struct DNSAsyncChannelWrappingTests {
    @Test("a bound UDP channel's wrapper let go of unconsumed, the channel still open, is not a crash")
    func droppedUDPWrapper() async throws {
        let raw = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        #expect(raw.isActive)
        // Wrapped in the bootstrap's initializer instead, the same wrapper let go of here stops the
        // process ("Deinited NIOAsyncWriter without calling finish()"): what a query that met a
        // shutdown between its bind and its exchange did.
        do {
            let wrapped: NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>> =
                try await DNSClient.wrappedForAsync(raw)
            #expect(wrapped.channel === raw)
        }
        try await raw.close()
    }
}
