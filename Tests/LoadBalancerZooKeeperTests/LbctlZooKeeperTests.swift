import LoadBalancerLocalBackends
import LoadBalancerTestKit
import LoadBalancerTestServers
import LoadBalancerZooKeeper
import Testing

@Suite(
    "lbctl with zk sources against a real ZooKeeper", .enabled(if: ZooKeeperEnsemble.enabled), .serialized,
    .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct LbctlZooKeeperTests {
    /// Runs `body` with a connected client of `ensemble`.
    func withClient<T: Sendable>(_ ensemble: ZooKeeperEnsemble, _ body: (ZooKeeperClient) async throws -> T) async throws -> T {
        let client = ZooKeeperClient(configuration: ensemble.configuration())
        return try await withRunning([{ try? await client.run() }]) {
            try await connected(client)
            return try await body(client)
        }
    }

    @Test("resolve zk:// prints the instances under the path")
    func resolve() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        try await withClient(ensemble) { client in
            try await client.create("/svc/web/a", data: Array("127.0.0.1:8001".utf8), createParents: true)
            try await client.create("/svc/web/b", data: Array(#"{"host":"127.0.0.2","port":8002,"weight":4,"priority":1}"#.utf8))
        }
        let result = try await Lbctl.run(["resolve", "zk://\(ensemble.connectString)/svc/web"])
        #expect(result.status == 0, "\(result.stderr)")
        let rows = result.stdout.split(separator: "\n").dropFirst().map { $0.split(separator: " ").map(String.init) }
        #expect(
            rows.map { Array($0.prefix(5)) } == [
                ["127.0.0.1:8001", "127.0.0.1", "8001", "1", "0"],
                ["127.0.0.2:8002", "127.0.0.2", "8002", "4", "1"],
            ], "\(result.stdout)")
    }

    @Test("resolve zk://...?endpoint=NAME reads ServerSet members through their named additional endpoint")
    func serverSetEndpoint() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        try await withClient(ensemble) { client in
            let member =
                #"{"serviceEndpoint":{"host":"127.0.0.1","port":9001},"additionalEndpoints":{"http":{"host":"127.0.0.1","port":8001}},"status":"ALIVE"}"#
            try await client.create("/finagle/web/member_0000000000", data: Array(member.utf8), createParents: true)
        }
        for (source, expected) in [("/finagle/web?endpoint=http", "127.0.0.1:8001"), ("/finagle/web", "127.0.0.1:9001")] {
            let result = try await Lbctl.run(["resolve", "zk://\(ensemble.connectString)\(source)"])
            #expect(result.status == 0, "\(result.stderr)")
            let rows = result.stdout.split(separator: "\n").dropFirst().map { $0.split(separator: " ").map(String.init) }
            #expect(rows.map { $0.first } == [expected], "\(result.stdout)")
        }
    }

    @Test("resolve --watch prints each change as it happens")
    func watch() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        try await withClient(ensemble) { client in
            try await client.create("/svc/web/a", data: Array("127.0.0.1:8001".utf8), createParents: true)
            let lbctl = try RunningLbctl(["resolve", "--watch", "zk://\(ensemble.connectString)/svc/web"])
            do {
                try await eventually("the first table") { lbctl.stdout.contains("127.0.0.1:8001") }
                try await client.create("/svc/web/b", data: Array("127.0.0.1:8002".utf8))
                try await eventually("b added") { lbctl.stdout.contains("added   127.0.0.1:8002") }
                try await client.delete("/svc/web/a")
                try await eventually("a removed") { lbctl.stdout.contains("removed 127.0.0.1:8001") }
            } catch {
                try await lbctl.stop()
                throw error
            }
            try await lbctl.stop()
        }
    }

    @Test("bench zk:// balances real HTTP load over the registered backends")
    func bench() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        let first = try await LocalHTTPBackend.start(.init(latency: .milliseconds(1)))
        let second = try await LocalHTTPBackend.start(.init(latency: .milliseconds(1)))
        try await withClient(ensemble) { client in
            try await client.create("/svc/web/1", data: Array("127.0.0.1:\(first.port)".utf8), createParents: true)
            try await client.create("/svc/web/2", data: Array("127.0.0.1:\(second.port)".utf8))
        }
        let result = try await Lbctl.run([
            "bench", "zk://\(ensemble.connectString)/svc/web", "--balancer", "round-robin", "--requests", "200", "--concurrency", "2", "/",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("200 succeeded, 0 failed"), "\(result.stdout)")
        #expect(first.served.total == 100 && second.served.total == 100, "\(first.served) \(second.served)")
        try await first.stop()
        try await second.stop()
    }

    @Test("a malformed zk source is one line and exit status 2")
    func badSource() async throws {
        for source in ["zk://127.0.0.1:2181", "zk://127.0.0.1/svc", "zk://127.0.0.1:2181/svc/", "zk://127.0.0.1:2181//x"] {
            let result = try await Lbctl.run(["resolve", source])
            #expect(result.status == 2, "\(source): \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(source): \(result.stderr)")
        }
    }
}
