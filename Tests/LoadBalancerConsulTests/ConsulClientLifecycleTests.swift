import ConsulTestServer
import LoadBalancer
import LoadBalancerConsul
import LoadBalancerTestKit
import Testing

@Suite("ConsulClient's lifecycle", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct ConsulClientLifecycleTests {
    @Test("run() returns on shutdown(); every later request fails with shutDown")
    func shutdownEndsRun() async throws {
        let consul = ConsulClient(configuration: ConsulConfiguration(host: "127.0.0.1", port: 1))
        let running = Task { try await consul.run() }
        #expect(!consul.isShutDown)
        await consul.shutdown()
        try await running.value
        #expect(consul.isShutDown)
        let error = await #expect(throws: ConsulError.self) { try await consul.healthService("web", index: nil, wait: nil) }
        #expect(error?.code == .shutDown)
        await consul.shutdown() // a second time does nothing
    }

    @Test("run() returns when its task is cancelled, and the client is shut down")
    func cancellationEndsRun() async throws {
        let consul = ConsulClient(configuration: ConsulConfiguration(host: "127.0.0.1", port: 1))
        let running = Task { try await consul.run() }
        running.cancel()
        try await running.value
        #expect(consul.isShutDown)
        let error = await #expect(throws: ConsulError.self) { try await consul.passCheck("service:web-1") }
        #expect(error?.code == .shutDown)
    }

    @Test("a blocking query the agent holds is cut short by shutdown() with shutDown")
    func shutdownEndsHeldQueries() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80)
        let consul = client(server, requestTimeout: .seconds(60))
        let running = Task { try await consul.run() }
        let first = try await consul.healthService("web", index: nil, wait: nil)
        let held = Task { try await consul.healthService("web", index: first.index, wait: .seconds(300)) }
        try await waitUntil { server.heldQueries == 1 }
        await consul.shutdown()
        let error = await #expect(throws: ConsulError.self) { _ = try await held.value }
        #expect(error?.code == .shutDown, "\(String(describing: error))")
        try await running.value
    }
}
