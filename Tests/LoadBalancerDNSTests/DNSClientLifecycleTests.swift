import LoadBalancer
import LoadBalancerDNS
import LoadBalancerTestKit
import NIOCore
import NIOPosix
import Synchronization
import Testing

@Suite("DNSClient's lifecycle", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct DNSClientLifecycleTests {
    @Test("run() returns on shutdown(); every later query fails with closed")
    func shutdownEndsRun() async throws {
        let client = DNSClient(configuration: .nameserver("127.0.0.1:53", timeout: .seconds(1), attempts: 1))
        let running = Task { try await client.run() }
        #expect(!client.isShutDown)
        await client.shutdown()
        try await running.value
        #expect(client.isShutDown)
        let error = await #expect(throws: DNSLookupError.self) { _ = try await client.query("svc.test", type: .a) }
        #expect(error?.code == .closed)
        // A second shutdown does nothing.
        await client.shutdown()
    }

    @Test("run() returns when its task is cancelled, and the client is shut down")
    func cancellationEndsRun() async throws {
        let client = DNSClient(configuration: .nameserver("127.0.0.1:53"))
        let running = Task { try await client.run() }
        running.cancel()
        try await running.value
        #expect(client.isShutDown)
    }

    @Test("a publisher over a shut-down client ends with a closed error, as every backend's does")
    func publisherOverShutDownClient() async throws {
        let client = DNSClient(configuration: .nameserver("127.0.0.1:53"))
        await client.shutdown()
        let publisher = DNSSRVPublisher(name: "_http._tcp.svc.test", client: client)
        var updates = publisher.updates().makeAsyncIterator()
        try await publisher.run() // ends by itself
        let only = try #require(await updates.next())
        #expect(only.error?.code == .closed, "\(only)")
        #expect((only.error?.cause as? DNSLookupError)?.code == .closed)
        #expect(await updates.next() == nil, "the subscription has ended")
    }

    @Test("a query in flight on a silent nameserver is cut short by shutdown() with closed")
    func shutdownClosesQueriesInFlight() async throws {
        // A UDP socket that takes the query and never answers.
        let silent = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
                }
            }
        let port = try #require(silent.channel.localAddress?.port)
        let received = Mutex(0)
        let reading = Task {
            try await silent.executeThenClose { inbound, _ in
                for try await _ in inbound { received.withLock { $0 += 1 } }
            }
        }
        defer { reading.cancel() }

        // A timeout far longer than the test may take: only shutdown() can end the query.
        let client = DNSClient(configuration: .nameserver("127.0.0.1:\(port)", timeout: .seconds(600), attempts: 1))
        let running = Task { try await client.run() }
        let query = Task { try await client.query("svc.test", type: .a) }
        try await pollUntil("the query at the silent nameserver", timeout: .seconds(30), interval: .milliseconds(10)) {
            received.withLock { $0 } > 0
        }
        #expect(received.withLock { $0 } == 1, "the query reached the silent nameserver")
        await client.shutdown()
        let error = await #expect(throws: DNSLookupError.self) { _ = try await query.value }
        #expect(error?.code == .closed, "\(String(describing: error))")
        try await running.value
    }
}
