import LoadBalancer
import LoadBalancerDNS
import LoadBalancerTestKit
import LoadBalancerTestServers
import Synchronization
import Testing

/// The latest update of a publisher, kept current by a background reader.
final class Latest: Sendable {
    let update = Mutex<InstanceUpdate?>(nil)
    var instances: [Instance] { update.withLock { $0?.instances ?? [] } }
    var error: DiscoveryError? { update.withLock { $0?.error } }
}

@Suite(
    "DNS against a real dnsmasq", .enabled(if: DnsmasqEnvironment.enabled), .serialized,
    .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct DNSIntegrationTests {
    func client(_ server: Dnsmasq) -> DNSClient {
        // Generous: nothing in this suite waits on a timeout (a stopped server refuses at once), and
        // a loaded CI machine has taken more than 500 ms to answer.
        DNSClient(configuration: .nameserver(server.nameserver, timeout: .seconds(3), attempts: 2))
    }

    @Test("SRV priorities and weights come through, one instance per address of each target")
    func prioritiesAndWeights() async throws {
        let server = try await Dnsmasq.start([
            "srv-host=_http._tcp.svc.test,a.svc.test,8080,10,5",
            "srv-host=_http._tcp.svc.test,b.svc.test,8081,20,1",
            "srv-host=_http._tcp.svc.test,.,0,30,1",
            "host-record=a.svc.test,127.0.0.11",
            "host-record=b.svc.test,127.0.0.12,fd00::12",
        ])
        let publisher = DNSSRVPublisher(name: "_http._tcp.svc.test", client: client(server))
        await publisher.refreshOnce()
        var iterator = publisher.updates().makeAsyncIterator()
        let update = try #require(await iterator.next())
        #expect(update.error == nil)
        let summary = update.instances.map { "\($0.id) p\($0.priority) w\($0.weight) \($0.metadata["target"] ?? "")" }
        #expect(
            summary == [
                "127.0.0.11:8080 p10 w5 a.svc.test",
                "127.0.0.12:8081 p20 w1 b.svc.test",
                "[fd00::12]:8081 p20 w1 b.svc.test",
            ], "\(summary)")
    }

    @Test("40 SRV records: the UDP answer is truncated and the TCP fallback gets them all")
    func truncation() async throws {
        var records: [String] = []
        for i in 0..<40 {
            records.append("srv-host=_big._tcp.svc.test,t\(i).svc.test,\(9000 + i),1,1")
            records.append("host-record=t\(i).svc.test,127.0.1.\(i + 1)")
        }
        let server = try await Dnsmasq.start(records)
        let client = client(server)
        let answer = try await client.query("_big._tcp.svc.test", type: .srv)
        #expect(answer.viaTCP, "a 40-record SRV answer does not fit a UDP datagram")
        #expect(answer.message.answers.count == 40)

        let publisher = DNSSRVPublisher(name: "_big._tcp.svc.test", client: client)
        await publisher.refreshOnce()
        var iterator = publisher.updates().makeAsyncIterator()
        let update = try #require(await iterator.next())
        #expect(update.error == nil)
        #expect(update.instances.count == 40)
        #expect(Set(update.instances.map(\.port)) == Set(9000..<9040))
        #expect(Set(update.instances.map(\.host)) == Set((1...40).map { "127.0.1.\($0)" }))
    }

    @Test("a changed record set is seen after the TTL; with the server down the last good set stays; after a restart changes flow again")
    func changesOutageRestart() async throws {
        let server = try await Dnsmasq.start([
            "srv-host=_web._tcp.svc.test,a.svc.test,8080,1,1",
            "host-record=a.svc.test,127.0.0.21",
        ])
        var refresh = DNSRefresh.ttl(minimum: .milliseconds(200), maximum: .seconds(1))
        refresh.retryAfterFailure = .milliseconds(200)
        let publisher = DNSSRVPublisher(name: "_web._tcp.svc.test", client: client(server), refresh: refresh)
        let latest = Latest()
        let reader = Task {
            for await update in publisher.updates() { latest.update.withLock { $0 = update } }
        }
        let run = Task { try await publisher.run() }
        defer {
            run.cancel()
            reader.cancel()
        }
        try await pollUntil("the first set", timeout: .seconds(15), interval: .milliseconds(20)) {
            latest.instances.map(\.id) == ["127.0.0.21:8080"]
        }

        // dnsmasq reads SRV records only at start: restart it with a new set.
        try await server.launch([
            "srv-host=_web._tcp.svc.test,a.svc.test,8080,1,1",
            "srv-host=_web._tcp.svc.test,b.svc.test,8081,1,1",
            "host-record=a.svc.test,127.0.0.21",
            "host-record=b.svc.test,127.0.0.22",
        ])
        try await pollUntil("the set after the restart", timeout: .seconds(15), interval: .milliseconds(20)) {
            latest.instances.map(\.id) == ["127.0.0.21:8080", "127.0.0.22:8081"]
        }

        // Down: lookups fail, the last good set stays and the updates say why.
        await server.stop()
        try await pollUntil("a failed lookup reported", timeout: .seconds(15), interval: .milliseconds(20)) { latest.error != nil }
        #expect(latest.instances.map(\.id) == ["127.0.0.21:8080", "127.0.0.22:8081"])
        #expect(latest.error?.code == .registryUnavailable)

        // Back, with a change: it flows again.
        try await server.launch([
            "srv-host=_web._tcp.svc.test,b.svc.test,8081,1,1",
            "host-record=b.svc.test,127.0.0.22",
        ])
        try await pollUntil("the set once the server is back", timeout: .seconds(15), interval: .milliseconds(20)) {
            latest.error == nil && latest.instances.map(\.id) == ["127.0.0.22:8081"]
        }
    }

    @Test("NXDOMAIN is authoritative: the empty set is published")
    func nxdomain() async throws {
        // Authoritative for svc.test, so unknown names get NXDOMAIN (not REFUSED).
        let server = try await Dnsmasq.start(["local=/svc.test/", "host-record=other.svc.test,127.0.0.5"])
        let publisher = DNSSRVPublisher(name: "_none._tcp.svc.test", client: client(server))
        await publisher.refreshOnce()
        var iterator = publisher.updates().makeAsyncIterator()
        let update = try #require(await iterator.next())
        #expect(update.error == nil)
        #expect(update.instances.isEmpty)
    }

    @Test("A/AAAA: one instance per address")
    func addresses() async throws {
        let server = try await Dnsmasq.start(["host-record=web.svc.test,127.0.0.31", "host-record=web.svc.test,127.0.0.32,fd00::33"])
        let publisher = DNSAddressPublisher(name: "web.svc.test", port: 8443, client: client(server))
        await publisher.refreshOnce()
        var iterator = publisher.updates().makeAsyncIterator()
        let update = try #require(await iterator.next())
        #expect(update.instances.map(\.id) == ["127.0.0.31:8443", "127.0.0.32:8443", "[fd00::33]:8443"])
    }
}
