import ConsulTestServer
import Foundation
import LoadBalancerLocalBackends
import LoadBalancerTestKit
import LoadBalancerTestServers
import Synchronization
import Testing

@Suite(
    "lbctl with consul:// sources against the Consul-API test server", .serialized, .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct LbctlConsulTests {
    @Test("resolve: the passing instances with every tag, as a table and as JSON; dc and token are used")
    func resolve() async throws {
        let server = try await ConsulTestServer.start(token: "t0ken")
        defer { Task { await server.stop() } }
        server.addNode("far-1", address: "10.9.0.1", datacenter: "dc2")
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 8080, tags: ["a", "b"], passingWeight: 4)
        server.addService(id: "b", name: "web", address: "10.0.0.2", port: 8080, tags: ["a"])
        server.addService(id: "c", name: "web", address: "10.0.0.3", port: 8080, tags: ["a", "b"], status: "critical")
        server.addService(id: "far", name: "web", node: "far-1", port: 9000, tags: ["a", "b"])
        let base = "consul://127.0.0.1:\(server.port)/web"

        let table = try await Lbctl.run(["resolve", base + "?tag=a&tag=b&token=t0ken"])
        #expect(table.status == 0, "\(table.stderr)")
        let rows = table.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(rows.first == ["ID", "HOST", "PORT", "WEIGHT", "PRIORITY", "METADATA"], "\(table.stdout)")
        #expect(rows.dropFirst().map { Array($0.prefix(5)) } == [["10.0.0.1:8080", "10.0.0.1", "8080", "4", "0"]], "\(table.stdout)")
        #expect(table.stdout.contains("tags=a,b"))

        let far = try await Lbctl.run(["resolve", base + "?dc=dc2&token=t0ken", "--json"])
        #expect(far.status == 0, "\(far.stderr)")
        struct Item: Decodable {
            var id: String
            var weight: Int
            var metadata: [String: String]
        }
        let items = try JSONDecoder().decode([Item].self, from: Data(far.stdout.utf8))
        #expect(items.map(\.id) == ["10.9.0.1:9000"])
        #expect(items.first?.metadata["consul.datacenter"] == "dc2")
        #expect(server.requests.allSatisfy { $0.token == "t0ken" })

        // Without a token the request is anonymous: a real agent answers `200 []` with
        // X-Consul-Results-Filtered-By-ACLs, which is reported, not taken for an empty service.
        let anonymous = try await Lbctl.run(["resolve", base])
        #expect(anonymous.stderr.contains("filteredByACLs"), "\(anonymous.stderr)")
        // An unknown token is refused: the error is reported, on one line.
        let refused = try await Lbctl.run(["resolve", base + "?token=wrong"])
        #expect(refused.stderr.contains("403"), "\(refused.stderr)")
    }

    @Test("resolve --watch prints each change as it happens")
    func watch() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 8080)
        let process = try LbctlProcess(["resolve", "consul://127.0.0.1:\(server.port)/web", "--watch"])
        try await waitUntil { process.stdout.contains("10.0.0.1:8080") }
        try await waitUntil { server.heldQueries == 1 }

        server.addService(id: "b", name: "web", address: "10.0.0.2", port: 8080, passingWeight: 2)
        try await waitUntil { process.stdout.contains("added   10.0.0.2:8080") }
        server.setServiceStatus(id: "a", "critical")
        try await waitUntil { process.stdout.contains("removed 10.0.0.1:8080") }
        try await process.stop()
        #expect(!process.stderr.contains("registry error"), "\(process.stderr)")
    }

    @Test("bench drives HTTP load through the instances Consul lists")
    func bench() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        let one = try await LocalHTTPBackend.start(.init(latency: .milliseconds(1)))
        let two = try await LocalHTTPBackend.start(.init(latency: .milliseconds(1)))
        defer { Task { for backend in [one, two] { try? await backend.stop() } } }
        server.addService(id: "one", name: "api", address: "127.0.0.1", port: one.port, tags: ["http"])
        server.addService(id: "two", name: "api", address: "127.0.0.1", port: two.port, tags: ["http"])
        server.addService(id: "down", name: "api", address: "127.0.0.1", port: 1, tags: ["http"], status: "critical")

        let result = try await Lbctl.run([
            "bench", "consul://127.0.0.1:\(server.port)/api?tag=http", "--balancer", "round-robin",
            "--requests", "200", "--concurrency", "2", "/",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("200 succeeded, 0 failed"), "\(result.stdout)")
        #expect(one.served.total == 100)
        #expect(two.served.total == 100)
        #expect(!result.stdout.contains("127.0.0.1:1 "))
    }

    @Test("a consul:// source with a bad query is a usage error")
    func badSource() async throws {
        let result = try await Lbctl.run(["resolve", "consul://127.0.0.1:8500/web?tag="])
        #expect(result.status == 2)
        #expect(result.stderr.contains("malformed query item"), "\(result.stderr)")
    }
}
