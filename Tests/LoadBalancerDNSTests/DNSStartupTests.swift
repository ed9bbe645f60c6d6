import LoadBalancer
import LoadBalancerDNS
import LoadBalancerTestKit
import LoadBalancerTestServers
import Testing

@Suite(
    "DNS server down at start-up; bad records in band", .enabled(if: DnsmasqEnvironment.enabled), .serialized,
    .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct DNSStartupTests {
    let records = [
        "srv-host=_web._tcp.svc.test,a.svc.test,8080,1,1",
        "host-record=a.svc.test,127.0.0.21",
    ]

    /// A client and a publisher over it, to run together (the README's recipe).
    func publisher(_ server: Dnsmasq) -> (DNSClient, DNSSRVPublisher) {
        var refresh = DNSRefresh.every(.milliseconds(200))
        refresh.retryAfterFailure = .milliseconds(100)
        refresh.maximumRetryAfterFailure = .milliseconds(400)
        let client = DNSClient(configuration: .nameserver(server.nameserver, timeout: .milliseconds(300), attempts: 1))
        return (client, DNSSRVPublisher(name: "_web._tcp.svc.test", client: client, refresh: refresh))
    }

    @Test("started late: each failed lookup is an update with the error, the set comes once the server answers")
    func startedLate() async throws {
        let server = try await Dnsmasq.start(records)
        await server.stop()
        let (client, publisher) = publisher(server)
        let probe = DiscoveryProbe(publisher)
        try await withRunning([{ try? await client.run() }, { try? await publisher.run() }] + probe.services) {
            try await eventually("three failed lookups reported") { probe.errors.count >= 3 }
            let error = try #require(probe.errors.first)
            #expect(error.code == .registryUnavailable, "\(error)")
            #expect(error.cause != nil)
            #expect(probe.recorder.all.allSatisfy { $0.instances.isEmpty })
            #expect(probe.cache.discoveryStatus.isReady == false)
            #expect(probe.cache.discoveryStatus.isStale)
            let notReady = try #require(
                await #expect(throws: DiscoveryError.self) { try await probe.cache.waitUntilReady(timeout: .milliseconds(100)) }
            )
            #expect(notReady.code == .notReady)
            #expect((notReady.cause as? DiscoveryError)?.code == .registryUnavailable)

            try await server.launch(records)
            try await probe.cache.waitUntilReady(timeout: .seconds(30))
            #expect(probe.cache.snapshot.instances.map(\.id) == ["127.0.0.21:8080"])
            try await eventually("fresh") { !probe.cache.discoveryStatus.isStale }
            // The recorder is a subscriber of its own, which may lag behind the cache's.
            try await eventually("the recorder saw the answer") { probe.recorder.latest?.error == nil }
        }
    }

    @Test("a server that takes queries and never answers: the first error comes after the query timeout")
    func silentServer() async throws {
        let silent = try await SilentServer.start()
        defer { Task { await silent.stop() } }
        let client = DNSClient(configuration: .nameserver("127.0.0.1:\(silent.port)", timeout: .milliseconds(500), attempts: 1))
        let publisher = DNSSRVPublisher(name: "_web._tcp.svc.test", client: client)
        let (error, elapsed) = try await DiscoveryProbe(publisher).firstError(
            running: [{ try? await client.run() }, { try? await publisher.run() }]
        )
        #expect(error.code == .registryUnavailable, "\(error)")
        #expect((error.cause as? DNSLookupError)?.code == .timeout, "\(error)")
        // Not before the timeout (nothing refused the query), and not long after it.
        #expect(elapsed >= .milliseconds(450) && elapsed < TestTimeScale.scaled(.milliseconds(2500)), "\(elapsed)")
    }

    @Test("never started: errors keep coming and waiting for readiness says why")
    func neverStarted() async throws {
        let server = try await Dnsmasq.start(records)
        await server.stop()
        let (client, publisher) = publisher(server)
        let probe = DiscoveryProbe(publisher)
        try await withRunning([{ try? await client.run() }, { try? await publisher.run() }] + probe.services) {
            try await eventually("failed lookups reported") { probe.errors.count >= 3 }
            #expect(probe.errors.allSatisfy { $0.code == .registryUnavailable })
            let error = try #require(
                await #expect(throws: DiscoveryError.self) { try await probe.cache.waitUntilReady(timeout: .milliseconds(200)) }
            )
            #expect(error.code == .notReady)
            #expect(error.message.contains("the registry has failed"), "\(error)")
        }
    }

    @Test("failed lookups back off with full jitter: each pause is anywhere in its window, the window doubles up to the maximum")
    func backoffAfterFailures() {
        var refresh = DNSRefresh.ttl()
        refresh.retryAfterFailure = .seconds(1)
        refresh.maximumRetryAfterFailure = .seconds(30)
        // The whole window, for the smallest and the largest random draw, and half of it for the middle one.
        for (failures, window) in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (50, 30)] {
            let low = refresh.delay(afterFailures: failures, random: 0)
            let middle = refresh.delay(afterFailures: failures, random: 1 << 63)
            let high = refresh.delay(afterFailures: failures, random: .max)
            #expect(low == .zero, "\(failures) failures")
            #expect(middle == .seconds(window) / 2, "\(failures) failures: \(middle)")
            #expect(high <= .seconds(window) && high > .seconds(window) * 99 / 100, "\(failures) failures: \(high)")
        }
    }

    @Test("an SRV record that makes no instance is reported in band; the good ones are published")
    func badRecordInBand() async throws {
        let server = try await Dnsmasq.start([
            "srv-host=_mixed._tcp.svc.test,a.svc.test,8080,1,1",
            "srv-host=_mixed._tcp.svc.test,b.svc.test,0,1,1",
            "host-record=a.svc.test,127.0.0.31",
            "host-record=b.svc.test,127.0.0.32",
        ])
        let publisher = DNSSRVPublisher(
            name: "_mixed._tcp.svc.test",
            // This test is about the answer, not the wait: 2 s per query (stretched under a
            // sanitizer by TestTimeScale) and three attempts. A fresh-clone CI run's full suite once
            // kept dnsmasq from answering within 500 ms, and ThreadSanitizer did before.
            client: DNSClient(configuration: .nameserver(server.nameserver, timeout: TestTimeScale.scaled(.seconds(2)), attempts: 3))
        )
        await publisher.refreshOnce()
        var iterator = publisher.updates().makeAsyncIterator()
        let update = try #require(await iterator.next())
        #expect(update.instances.map(\.id) == ["127.0.0.31:8080"])
        #expect(update.error?.code == .invalidInstances, "\(update)")
        #expect(update.error?.message.contains("b.svc.test") == true, "\(update)")
        #expect(update.error?.message.contains("port 0") == true, "\(update)")
    }
}
