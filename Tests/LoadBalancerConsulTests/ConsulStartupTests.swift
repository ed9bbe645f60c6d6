import ConsulTestServer
import LoadBalancer
import LoadBalancerConsul
import LoadBalancerTestServers
import Testing

@Suite("Consul agent down at start-up", .serialized, .timeLimit(.minutes(2)))
struct ConsulStartupTests {
    @Test("started late: each failed query is an update with the error, the set comes once the agent answers")
    func startedLate() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "web-1", name: "web", address: "10.0.0.1", port: 80)
        await server.stop()

        let publisher = ConsulPublisher(service: "web", client: client(server), configuration: fastConfiguration())
        let probe = DiscoveryProbe(publisher)
        try await LoadBalancerTestServers.withRunning([{ try? await publisher.run() }] + probe.services) {
            try await eventually("three failed queries reported") { probe.errors.count >= 3 }
            let error = try #require(probe.errors.first)
            #expect(error.code == .registryUnavailable, "\(error)")
            #expect((error.cause as? ConsulError)?.code == .unavailable, "\(error)")
            #expect(probe.recorder.all.allSatisfy { $0.instances.isEmpty })
            #expect(probe.cache.discoveryStatus.isReady == false)
            #expect(probe.cache.discoveryStatus.isStale)
            let notReady = try #require(
                await #expect(throws: DiscoveryError.self) { try await probe.cache.waitUntilReady(timeout: .milliseconds(100)) }
            )
            #expect(notReady.code == .notReady)
            #expect((notReady.cause as? DiscoveryError)?.code == .registryUnavailable)

            try await server.restart()
            try await probe.cache.waitUntilReady(timeout: .seconds(30))
            #expect(probe.cache.snapshot.instances.map(\.id) == ["10.0.0.1:80"])
            try await eventually("fresh") { !probe.cache.discoveryStatus.isStale }
            #expect(probe.recorder.latest?.error == nil)
        }
    }

    @Test("never started: errors keep coming and waiting for readiness says why")
    func neverStarted() async throws {
        let server = try await ConsulTestServer.start()
        await server.stop()
        let publisher = ConsulPublisher(service: "web", client: client(server), configuration: fastConfiguration())
        let probe = DiscoveryProbe(publisher)
        try await LoadBalancerTestServers.withRunning([{ try? await publisher.run() }] + probe.services) {
            try await eventually("failed queries reported") { probe.errors.count >= 3 }
            #expect(probe.errors.allSatisfy { $0.code == .registryUnavailable })
            let error = try #require(
                await #expect(throws: DiscoveryError.self) { try await probe.cache.waitUntilReady(timeout: .milliseconds(200)) }
            )
            #expect(error.code == .notReady)
            #expect(error.message.contains("the registry has failed"), "\(error)")
        }
    }
}
