import ConsulTestServer
import LoadBalancerTestKit
import LoadBalancerTestServers
import Testing

@Suite("lbctl resolve --watch shows the discovery state", .serialized, .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct LbctlDiscoveryStatusTests {
    @Test("not ready and stale while the agent is down, with the last error; ready and fresh once it answers")
    func statusLines() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 8080)
        await server.stop()
        let process = try LbctlProcess(["resolve", "consul://127.0.0.1:\(server.port)/web", "--watch"])
        do {
            try await waitUntil { process.stdout.contains("discovery: not ready, stale since") }
            try await waitUntil { process.stdout.contains("(2 failures), last error at") }
            #expect(process.stdout.contains("registryUnavailable: Consul query of web failed"), "\(process.stdout)")
            try await server.restart()
            try await waitUntil { process.stdout.contains("added   10.0.0.1:8080") }
            try await waitUntil { process.stdout.contains("discovery: ready, fresh, last error at") }
        } catch {
            try await process.stop()
            throw error
        }
        try await process.stop()
    }
}
