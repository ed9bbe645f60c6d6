import Foundation
import LoadBalancerTestKit
import LoadBalancerTestServers
import Testing

@Suite(
    "lbctl with DNS sources against a real dnsmasq", .enabled(if: DnsmasqEnvironment.enabled), .serialized,
    .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct LbctlDNSTests {
    func run(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        try await Lbctl.run(arguments)
    }

    @Test("resolve dns+srv:// and dns:// through a given nameserver")
    func resolve() async throws {
        let server = try await Dnsmasq.start([
            "srv-host=_http._tcp.svc.test,a.svc.test,8080,10,5",
            "srv-host=_http._tcp.svc.test,b.svc.test,8081,20,1",
            "host-record=a.svc.test,127.0.0.11",
            "host-record=b.svc.test,127.0.0.12",
            "local=/svc.test/",
        ])
        let srv = try await run(["resolve", "dns+srv://\(server.nameserver)/_http._tcp.svc.test"])
        #expect(srv.status == 0, "\(srv.stderr)")
        let rows = srv.stdout.split(separator: "\n").dropFirst().map {
            $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        }
        #expect(
            rows.map { Array($0.prefix(5)) } == [
                ["127.0.0.11:8080", "127.0.0.11", "8080", "5", "10"],
                ["127.0.0.12:8081", "127.0.0.12", "8081", "1", "20"],
            ], "\(srv.stdout)")

        let a = try await run(["resolve", "dns://\(server.nameserver)/a.svc.test:9000", "--json"])
        #expect(a.status == 0, "\(a.stderr)")
        #expect(a.stdout.contains("\"id\" : \"127.0.0.11:9000\""), "\(a.stdout)")
    }
}
