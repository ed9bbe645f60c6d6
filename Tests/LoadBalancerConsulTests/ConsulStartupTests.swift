import AsyncHTTPClient
import ConsulTestServer
import LoadBalancer
import LoadBalancerConsul
import LoadBalancerTestKit
import LoadBalancerTestServers
import Testing

@Suite("Consul agent down at start-up", .serialized, .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
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
            // The recorder is a subscriber of its own, which may lag behind the cache's.
            try await eventually("the recorder saw the answer") { probe.recorder.latest?.error == nil }
        }
    }

    @Test("an agent that accepts connections and never answers: the first error comes after the request timeout")
    func silentAgent() async throws {
        let silent = try await SilentServer.start()
        defer { Task { await silent.stop() } }
        let consul = ConsulClient(configuration: .init(host: "127.0.0.1", port: silent.port, requestTimeout: .milliseconds(500)))
        defer { Task { await consul.shutdown() } }
        let publisher = ConsulPublisher(service: "web", client: consul, configuration: fastConfiguration())
        let (error, elapsed) = try await DiscoveryProbe(publisher).firstError(running: [{ try? await publisher.run() }])
        #expect(error.code == .registryUnavailable, "\(error)")
        #expect((error.cause as? ConsulError)?.code == .timeout, "\(error)")
        // Not before the timeout (nothing refused the request), and not long after it.
        #expect(elapsed >= .milliseconds(450) && elapsed < TestTimeScale.scaled(.milliseconds(2500)), "\(elapsed)")
    }

    @Test(
        "a publisher over a shut-down client ends with a closed error, keeping its last good set",
        arguments: [false, true] // the client's own HTTPClient, or one it was given
    )
    func closedClient(givenHTTPClient: Bool) async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "web-1", name: "web", address: "10.0.0.1", port: 80)
        // A given HTTPClient is its owner's to shut down: the client's shutdown() must still end
        // the blocking query held on it.
        let given = givenHTTPClient ? HTTPClient(configuration: ConsulClient.httpClientConfiguration()) : nil
        defer { if let given { Task { try? await given.shutdown() } } }
        let consul = client(server, httpClient: given)
        let publisher = ConsulPublisher(service: "web", client: consul, configuration: fastConfiguration(wait: .seconds(30)))
        let probe = DiscoveryProbe(publisher)
        let ended = Flag()
        let running = Task {
            try await publisher.run()
            ended.set()
        }
        try await LoadBalancerTestServers.withRunning(probe.services) {
            try await probe.cache.waitUntilReady(timeout: .seconds(30))
            try await eventually("the publisher is held in a blocking query") { server.heldQueries == 1 }
            // Shutting the client down ends the blocking query (of up to 30 s) at once.
            await consul.shutdown()
            try await eventually("the publisher to end", timeout: .seconds(10)) { ended.isSet }
            try await running.value
            try await eventually("the closed error in band") { probe.recorder.latest?.error != nil }
            let last = try #require(probe.recorder.latest)
            #expect(last.error?.code == .closed, "\(last)")
            #expect((last.error?.cause as? ConsulError)?.code == .shutDown, "\(last)")
            #expect(last.instances.map(\.id) == ["10.0.0.1:80"], "the last good set stays")
            #expect(probe.errors.count == 1, "one closed error, no retries: \(probe.errors)")

            // A publisher started over the shut-down client says so at once, and ends.
            let late = ConsulPublisher(service: "web", client: consul, configuration: fastConfiguration())
            var updates = late.updates().makeAsyncIterator()
            try await late.run()
            let only = try #require(await updates.next())
            #expect(only.error?.code == .closed, "\(only)")
            #expect(await updates.next() == nil, "the subscription has ended")
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
