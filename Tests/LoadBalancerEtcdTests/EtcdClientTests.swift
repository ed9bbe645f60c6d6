import LoadBalancerEtcd
import LoadBalancerTestKit
import NIOEmbedded
import NIOPosix
import Testing

@Suite("EtcdClient without a server", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct EtcdClientTests {
    @Test("an event loop group gRPC's transport cannot use is a typed error, not a crash")
    func unsupportedEventLoopGroup() throws {
        let configuration = try EtcdConfiguration(members: "127.0.0.1:2379")
        let error = #expect(throws: EtcdError.self) {
            _ = try EtcdClient(configuration: configuration, eventLoopGroup: EmbeddedEventLoop())
        }
        #expect(error?.code == .invalidArgument)
        #expect(throws: Never.self) {
            _ = try EtcdClient(configuration: configuration, eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        }
    }

    @Test("shutdown() before run(): every request fails with closed, and run() returns at once")
    func shutdownBeforeRun() async throws {
        let client = try EtcdClient(configuration: try EtcdConfiguration(members: "127.0.0.1:1"))
        await client.shutdown()
        #expect(client.isShutDown)
        let error = await #expect(throws: EtcdError.self) { _ = try await client.get("/k") }
        #expect(error?.code == .closed)
        try await client.run()
    }
}
