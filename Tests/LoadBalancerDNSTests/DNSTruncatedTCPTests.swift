import LoadBalancer
import LoadBalancerDNS
import LoadBalancerTestKit
import LoadBalancerTestServers
import Testing

@Suite(
    "DNS: an SRV answer too large even for TCP, against a real dnsmasq", .enabled(if: DnsmasqEnvironment.enabled), .serialized,
    .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct DNSTruncatedTCPTests {
    @Test("more SRV records than a 65,535-byte TCP answer holds: the records that came are published, the truncation reported in band")
    func truncatedOverTCP() async throws {
        // Long targets (about 140 bytes each, never compressed in SRV data), so that some 400
        // records fill a TCP message.
        let pad = String(repeating: "a", count: 60)
        var records: [String] = []
        for i in 0..<600 {
            let target = "\(pad).\(pad).t\(i).svc.test"
            records.append("srv-host=_huge._tcp.svc.test,\(target),\(10_000 + i),1,1")
            records.append("host-record=\(target),127.0.\(i / 250 + 2).\(i % 250 + 1)")
        }
        let server = try await Dnsmasq.start(records)
        let client = DNSClient(configuration: .nameserver(server.nameserver, timeout: .seconds(3), attempts: 2))
        let answer = try await client.query("_huge._tcp.svc.test", type: .srv)
        #expect(answer.viaTCP)
        #expect(answer.message.isTruncated, "dnsmasq sets TC on a TCP answer it had to cut")
        let served = answer.message.answers.count
        #expect(served > 0 && served < 600, "\(served) records")

        let publisher = DNSSRVPublisher(name: "_huge._tcp.svc.test", client: client)
        await publisher.refreshOnce()
        var iterator = publisher.updates().makeAsyncIterator()
        let update = try #require(await iterator.next())
        await server.stop()
        #expect(update.instances.count == served, "every record that came is used")
        #expect(update.error?.code == .invalidInstances)
        #expect(update.error?.message.contains("truncated even over TCP") == true, "\(String(describing: update.error))")
        #expect(update.error?.message.contains("only its \(served) records are used") == true)
    }
}
