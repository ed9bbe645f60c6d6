import LoadBalancer
import LoadBalancerEtcd
import LoadBalancerTestKit
import LoadBalancerTestServers
import Testing

@Suite("etcd down at start-up", .enabled(if: EtcdCluster.enabled), .serialized, .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct EtcdStartupTests {
    /// A publisher with a short backoff, so a test sees several retries.
    func publisher(_ prefix: String, _ client: EtcdClient) -> EtcdPublisher {
        EtcdPublisher(prefix: prefix, client: client, backoff: Backoff(base: .milliseconds(100), cap: .milliseconds(500)))
    }

    @Test("started late: each failed attempt is an update with the error, the set comes once etcd is up")
    func startedLate() async throws {
        let cluster = try await EtcdCluster.start()
        let member = cluster.members[0]
        let writer = try EtcdClient(configuration: cluster.configuration)
        try await withRunning(writer) {
            try await writer.put("/svc/late/a", value: "127.0.0.1:8001")
        }
        await cluster.kill(member)

        var configuration = cluster.configuration
        configuration.requestTimeout = .seconds(1)
        let client = try EtcdClient(configuration: configuration)
        let publisher = publisher("/svc/late/", client)
        let probe = DiscoveryProbe(publisher)
        try await withRunning(client, [{ try? await publisher.run() }] + probe.services) {
            try await eventually("three failed attempts reported") { probe.errors.count >= 3 }
            let error = try #require(probe.errors.first)
            #expect(error.code == .registryUnavailable, "\(error)")
            #expect((error.cause as? EtcdError)?.code == .unavailable)
            #expect(probe.recorder.all.allSatisfy { $0.instances.isEmpty })
            #expect(probe.cache.discoveryStatus.isReady == false)
            #expect(probe.cache.discoveryStatus.isStale)
            let notReady = try #require(
                await #expect(throws: DiscoveryError.self) { try await probe.cache.waitUntilReady(timeout: .milliseconds(100)) }
            )
            #expect(notReady.code == .notReady)
            #expect((notReady.cause as? DiscoveryError)?.code == .registryUnavailable, "\(notReady)")

            try await cluster.restart(member)
            try await probe.cache.waitUntilReady(timeout: .seconds(60))
            #expect(probe.cache.snapshot.instances.map(\.id) == ["127.0.0.1:8001"])
            try await eventually("fresh") { !probe.cache.discoveryStatus.isStale }
            // The recorder is a subscriber of its own, which may lag behind the cache's.
            try await eventually("the recorder saw the answer") { probe.recorder.latest?.error == nil }
            #expect(probe.recorder.ids == ["127.0.0.1:8001"])
        }
    }

    @Test("never started: errors keep coming and waiting for readiness says why")
    func neverStarted() async throws {
        let cluster = try await EtcdCluster.start()
        await cluster.kill(cluster.members[0])
        var configuration = cluster.configuration
        configuration.requestTimeout = .seconds(1)
        let client = try EtcdClient(configuration: configuration)
        let publisher = publisher("/svc/never/", client)
        let probe = DiscoveryProbe(publisher)
        try await withRunning(client, [{ try? await publisher.run() }] + probe.services) {
            try await eventually("failed attempts reported") { probe.errors.count >= 3 }
            #expect(probe.errors.allSatisfy { $0.code == .registryUnavailable })
            let error = try #require(
                await #expect(throws: DiscoveryError.self) { try await probe.cache.waitUntilReady(timeout: .milliseconds(200)) }
            )
            #expect(error.code == .notReady)
            #expect(error.message.contains("the registry has failed"), "\(error)")
            #expect(probe.cache.discoveryStatus.lastError?.code == .registryUnavailable)

            // The retries back off: ten pauses between failures take at least 200 ms together
            // (this backoff's windows add up to 4.2 s; a dead port refuses within a millisecond).
            let span = try await probe.retrySpan()
            #expect(span >= .milliseconds(200), "ten retries in \(span)")
        }
    }

    @Test("a registry that accepts connections and never answers: the first error comes after the request timeout")
    func silentRegistry() async throws {
        let silent = try await SilentServer.start()
        defer { Task { await silent.stop() } }
        var configuration = EtcdConfiguration(members: [.init(host: "127.0.0.1", port: silent.port)])
        configuration.requestTimeout = .milliseconds(500)
        let client = try EtcdClient(configuration: configuration)
        let publisher = publisher("/svc/silent/", client)
        let (error, elapsed) = try await withRunning(client) {
            try await DiscoveryProbe(publisher).firstError(running: [{ try? await publisher.run() }])
        }
        #expect(error.code == .registryUnavailable, "\(error)")
        // Not before the timeout (nothing refused the request), and not long after it.
        #expect(elapsed >= .milliseconds(450) && elapsed < TestTimeScale.scaled(.milliseconds(2500)), "\(elapsed)")
    }

    @Test("shut down while a publisher watches and a registrar keeps its lease: both end, and so does run()")
    func shutDownWhileWatching() async throws {
        let cluster = try await EtcdCluster.start()
        let client = try EtcdClient(configuration: cluster.configuration)
        let instance = try Instance(host: "127.0.0.1", port: 8001)
        let registrar = EtcdRegistrar(instance: instance, prefix: "/svc/watching/", client: client)
        let publisher = publisher("/svc/watching/", client)
        let recorder = Recorder()
        let (clientEnded, registrarEnded, publisherEnded) = (Flag(), Flag(), Flag())
        let tasks = [
            Task {
                try? await client.run()
                clientEnded.set()
            },
            Task {
                try? await registrar.run()
                registrarEnded.set()
            },
            Task {
                try? await publisher.run()
                publisherEnded.set()
            },
            Task { await recording(publisher, into: recorder)() },
        ]
        defer { for task in tasks { task.cancel() } }
        try await eventually("the registered instance is watched") { recorder.ids == [instance.id] }
        // The publisher may see the key before the registrar has noted its lease.
        try await eventually("the registrar holds its lease") { registrar.currentLease != nil }

        // The watch and the keep-alive never end by themselves: shutdown() must end them.
        await client.shutdown()
        try await eventually("the publisher to end", timeout: .seconds(10)) { publisherEnded.isSet }
        try await eventually("the registrar to end", timeout: .seconds(10)) { registrarEnded.isSet }
        try await eventually("the client's run() returned", timeout: .seconds(10)) { clientEnded.isSet }
        // The recorder takes the publisher's updates on its own task: the last one may arrive
        // after the publisher has ended.
        try await eventually("the error recorded") { recorder.latest?.error != nil }
        let last = try #require(recorder.latest)
        #expect(last.error?.code == .closed, "\(last)")
        #expect(last.instances.map(\.id) == [instance.id], "the last good set stays")
    }

    @Test("a publisher over a shut-down client ends with a closed error")
    func closedClient() async throws {
        let cluster = try await EtcdCluster.start()
        let client = try EtcdClient(configuration: cluster.configuration)
        let clientRun = Task { try? await client.run() }
        try await client.put("/svc/closed/a", value: "127.0.0.1:8001")
        await client.shutdown()
        await clientRun.value
        #expect(client.isShutDown)
        let afterShutdown = await #expect(throws: EtcdError.self) { try await client.put("/svc/closed/b", value: "127.0.0.1:8002") }
        #expect(afterShutdown?.code == .closed)

        let publisher = publisher("/svc/closed/", client)
        var updates = publisher.updates().makeAsyncIterator()
        try await publisher.run() // ends by itself
        let only = try #require(await updates.next())
        #expect(only.error?.code == .closed, "\(only)")
        #expect(only.error?.cause is EtcdError)
        #expect(await updates.next() == nil, "the subscription has ended")
    }
}
