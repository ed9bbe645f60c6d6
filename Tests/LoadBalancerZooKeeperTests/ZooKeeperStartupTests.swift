import LoadBalancer
import LoadBalancerTestKit
import LoadBalancerTestServers
import LoadBalancerZooKeeper
import Testing

@Suite(
    "ZooKeeper down at start-up, and a closed client", .enabled(if: ZooKeeperEnsemble.enabled), .serialized,
    .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct ZooKeeperStartupTests {
    /// A client of `ensemble` with a short connect timeout.
    func client(_ ensemble: ZooKeeperEnsemble) -> ZooKeeperClient {
        var configuration = ensemble.configuration()
        configuration.connectTimeout = .seconds(1)
        return ZooKeeperClient(configuration: configuration)
    }

    @Test("started late: each failed connection is an update with the error, the set comes once ZooKeeper is up")
    func startedLate() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        let server = ensemble.servers[0]
        // The instance is registered before the outage; the data survives the restart.
        let writer = ZooKeeperClient(configuration: ensemble.configuration())
        try await withRunning([{ try? await writer.run() }]) {
            try await eventually("writer connected") { writer.isConnected }
            try await writer.create("/svc/late/a", data: Array("127.0.0.1:8001".utf8), createParents: true)
        }
        await ensemble.kill(server)

        let client = client(ensemble)
        let publisher = ZooKeeperPublisher(path: "/svc/late", client: client)
        let probe = DiscoveryProbe(publisher)
        try await withRunning([{ try? await client.run() }, { try? await publisher.run() }] + probe.services) {
            // Errors in band, again and again while the client retries.
            try await eventually("three failed connections reported") { probe.errors.count >= 3 }
            let error = try #require(probe.errors.first)
            #expect(error.code == .registryUnavailable, "\(error)")
            let cause = try #require(error.cause as? ZooKeeperError)
            #expect(cause.code == .connectionLoss)
            #expect(cause.message.contains("cannot connect to 127.0.0.1:\(server.clientPort)"), "\(cause)")
            #expect(probe.recorder.all.allSatisfy { $0.instances.isEmpty })

            let status = probe.cache.discoveryStatus
            #expect(status.isReady == false)
            #expect(status.isStale)
            #expect(status.lastError?.code == .registryUnavailable)
            let notReady = try #require(
                await #expect(throws: DiscoveryError.self) { try await probe.cache.waitUntilReady(timeout: .milliseconds(100)) }
            )
            #expect(notReady.code == .notReady)
            #expect((notReady.cause as? DiscoveryError)?.code == .registryUnavailable, "\(notReady)")

            try await ensemble.restart(server)
            try await probe.cache.waitUntilReady(timeout: .seconds(60))
            #expect(probe.cache.snapshot.instances.map(\.id) == ["127.0.0.1:8001"])
            try await eventually("fresh") { !probe.cache.discoveryStatus.isStale }
            // The recorder is a subscriber of its own, which may lag behind the cache's.
            try await eventually("the recorder saw the answer") { probe.recorder.latest?.error == nil }
            #expect(probe.recorder.ids == ["127.0.0.1:8001"])
        }
    }

    @Test("never started: errors keep coming, waiting for readiness says why, and cancellation ends the wait")
    func neverStarted() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        await ensemble.kill(ensemble.servers[0])
        let client = client(ensemble)
        let publisher = ZooKeeperPublisher(path: "/svc/never", client: client)
        let probe = DiscoveryProbe(publisher)
        try await withRunning([{ try? await client.run() }, { try? await publisher.run() }] + probe.services) {
            try await eventually("failed connections reported") { probe.errors.count >= 2 }
            #expect(probe.errors.allSatisfy { $0.code == .registryUnavailable })
            let error = try #require(
                await #expect(throws: DiscoveryError.self) { try await probe.cache.waitUntilReady(timeout: .milliseconds(200)) }
            )
            #expect(error.code == .notReady)
            #expect(error.message.contains("the registry has failed"), "\(error)")

            // withLoadBalancer waits for a set; cancelling it ends it (it used to hang).
            let other = ZooKeeperPublisher(path: "/svc/never", client: client)
            let blocked = Task {
                try await withLoadBalancer(
                    publisher: other,
                    factory: EndpointFactory<Int, String> { instance in ManagedEndpoint(Endpoint(instance: instance) { _ in instance.id })
                    },
                    balancer: { RoundRobinBalancer($0) }
                ) { _ in "ran" }
            }
            try await eventually("a few more failures") { probe.errors.count >= 4 }
            blocked.cancel()
            let outcome = await blocked.result
            #expect((try? outcome.get()) == nil, "the body never ran")

            // The reconnections back off: ten pauses between failures take at least 200 ms
            // together (a dead port refuses within a millisecond).
            let span = try await probe.retrySpan()
            #expect(span >= .milliseconds(200), "ten reconnections in \(span)")
        }
    }

    @Test("a server that accepts connections and never answers: the first error comes after the connect timeout")
    func silentServer() async throws {
        let silent = try await SilentServer.start()
        defer { Task { await silent.stop() } }
        var configuration = ZooKeeperConfiguration(servers: [.init(host: "127.0.0.1", port: silent.port)])
        configuration.connectTimeout = .milliseconds(500)
        let client = ZooKeeperClient(configuration: configuration)
        let publisher = ZooKeeperPublisher(path: "/svc/silent", client: client)
        let (error, elapsed) = try await DiscoveryProbe(publisher).firstError(running: [
            { try? await client.run() }, { try? await publisher.run() },
        ])
        #expect(error.code == .registryUnavailable, "\(error)")
        #expect((error.cause as? ZooKeeperError)?.code == .connectionLoss, "\(error)")
        // Not before the timeout (nothing refused the connection), and not long after it.
        #expect(elapsed >= .milliseconds(450) && elapsed < TestTimeScale.scaled(.milliseconds(2500)), "\(elapsed)")
    }

    @Test("a publisher over a closed client ends with a closed error, keeping its last good set")
    func closedClient() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        let client = client(ensemble)
        let publisher = ZooKeeperPublisher(path: "/svc/closed", client: client)
        let probe = DiscoveryProbe(publisher)
        let clientRun = Task { try? await client.run() }
        try await withRunning(probe.services) {
            try await eventually("connected") { client.isConnected }
            try await client.create("/svc/closed/a", data: Array("127.0.0.1:8001".utf8), createParents: true)
            let run = Task { try? await publisher.run() }
            try await eventually("a") { probe.recorder.ids == ["127.0.0.1:8001"] }
            await client.shutdown()
            await clientRun.value
            #expect(client.isShutDown)
            let afterShutdown = await #expect(throws: ZooKeeperError.self) { _ = try await client.getChildren("/svc/closed") }
            #expect(afterShutdown?.code == .closed)
            await run.value // ends by itself
            // The probe records the publisher's updates on its own task: the last one may arrive
            // after run() has returned.
            try await eventually("the error recorded") { probe.recorder.latest?.error != nil }
            let last = try #require(probe.recorder.latest)
            #expect(last.error?.code == .closed, "\(last)")
            #expect((last.error?.cause as? ZooKeeperError)?.code == .closed)
            #expect(last.instances.map(\.id) == ["127.0.0.1:8001"])

            // A publisher started over the closed client says so at once, and ends.
            let late = ZooKeeperPublisher(path: "/svc/closed", client: client)
            var updates = late.updates().makeAsyncIterator()
            try await late.run()
            let only = try #require(await updates.next())
            #expect(only.error?.code == .closed, "\(only)")
            #expect(await updates.next() == nil, "the subscription has ended")
        }
    }
}
