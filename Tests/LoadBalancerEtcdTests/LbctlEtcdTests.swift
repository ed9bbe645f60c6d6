import Foundation
import LoadBalancerEtcd
import LoadBalancerLocalBackends
import LoadBalancerTestKit
import LoadBalancerTestServers
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

@Suite(
    "lbctl with etcd sources against a real etcd", .enabled(if: EtcdCluster.enabled), .serialized,
    .timeLimit(.minutes(TestTimeScale.scaled(minutes: 3))))
struct LbctlEtcdTests {
    /// Runs `body` with a client of `cluster`.
    func withClient<T: Sendable>(_ cluster: EtcdCluster, _ body: (EtcdClient) async throws -> T) async throws -> T {
        let client = try EtcdClient(configuration: cluster.configuration)
        return try await withRunning(client) { try await body(client) }
    }

    func source(_ cluster: EtcdCluster, _ prefix: String) -> String {
        "etcd://" + cluster.members.map { "127.0.0.1:\($0.clientPort)" }.joined(separator: ",") + prefix
    }

    @Test("resolve etcd:// prints the instances under the prefix")
    func resolve() async throws {
        let cluster = try await EtcdCluster.start()
        try await withClient(cluster) { client in
            try await client.put("/svc/web/a", value: "127.0.0.1:8001")
            try await client.put("/svc/web/b", value: #"{"host":"127.0.0.2","port":8002,"weight":4,"priority":1}"#)
            try await client.put("/svc/api/c", value: "127.0.0.3:8003")
        }
        let result = try await Lbctl.run(["resolve", source(cluster, "/svc/web/")])
        #expect(result.status == 0, "\(result.stderr)")
        let rows = result.stdout.split(separator: "\n").dropFirst().map { $0.split(separator: " ").map(String.init) }
        #expect(
            rows.map { Array($0.prefix(5)) } == [
                ["127.0.0.1:8001", "127.0.0.1", "8001", "1", "0"],
                ["127.0.0.2:8002", "127.0.0.2", "8002", "4", "1"],
            ], "\(result.stdout)")
    }

    @Test("resolve --watch prints each change as it happens")
    func watch() async throws {
        let cluster = try await EtcdCluster.start()
        try await withClient(cluster) { client in
            try await client.put("/svc/web/a", value: "127.0.0.1:8001")
            let lbctl = try RunningLbctl(["resolve", "--watch", source(cluster, "/svc/web/")])
            do {
                try await eventually("the first table") { lbctl.stdout.contains("127.0.0.1:8001") }
                try await client.put("/svc/web/b", value: "127.0.0.1:8002")
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

    @Test("bench etcd:// balances real HTTP load over the registered backends")
    func bench() async throws {
        let cluster = try await EtcdCluster.start()
        let first = try await LocalHTTPBackend.start(.init(latency: .milliseconds(1)))
        let second = try await LocalHTTPBackend.start(.init(latency: .milliseconds(1)))
        try await withClient(cluster) { client in
            try await client.put("/svc/web/1", value: "127.0.0.1:\(first.port)")
            try await client.put("/svc/web/2", value: "127.0.0.1:\(second.port)")
        }
        let result = try await Lbctl.run([
            "bench", source(cluster, "/svc/web/"), "--balancer", "round-robin", "--requests", "200", "--concurrency", "2", "/",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("200 succeeded, 0 failed"), "\(result.stdout)")
        #expect(first.served.total == 100 && second.served.total == 100, "\(first.served) \(second.served)")
        try await first.stop()
        try await second.stop()
    }

    @Test("a malformed etcd source is one line and exit status 2")
    func badSource() async throws {
        for source in ["etcd://127.0.0.1:2379", "etcd://127.0.0.1/svc", "etcd://127.0.0.1:2379,:1/svc", "etcd://127.0.0.1:2379/"] {
            let result = try await Lbctl.run(["resolve", source])
            #expect(result.status == 2, "\(source): \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(source): \(result.stderr)")
        }
    }
}
