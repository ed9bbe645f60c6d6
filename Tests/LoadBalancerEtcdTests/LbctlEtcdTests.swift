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
    .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
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

    @Test("bench --slow-start: an instance registered in etcd mid-run ramps up, second by second, in the report")
    func benchSlowStartRamp() async throws {
        let cluster = try await EtcdCluster.start()
        var started: [LocalHTTPBackend] = []
        for _ in 0..<4 { started.append(try await LocalHTTPBackend.start(.init(latency: .milliseconds(1)))) }
        let backends = started
        let ids = backends.map { "127.0.0.1:\($0.port)" }
        defer { Task { for backend in backends { try? await backend.stop() } } }
        try await withClient(cluster) { client in
            for index in 0..<3 { _ = try await client.put("/svc/web/\(index)", value: ids[index]) }
        }
        // 3,200 requests at 200 per second: 16 s, a 6 s window. Round robin: once ramped, the
        // newcomer takes a quarter. (With a 4 s window a fresh-clone CI run saw the first whole
        // second after the newcomer's first attempt already 19% of the attempts: its first
        // attempt came late into the ramp, where its weight was still tiny.)
        let lbctl = try RunningLbctl([
            "bench", source(cluster, "/svc/web/"), "--balancer", "round-robin", "--slow-start", "6", "--requests", "3200",
            "--rate", "200", "--concurrency", "8", "/",
        ])
        let status: Int32
        do {
            // Register the fourth once the bench has made some requests.
            try await eventually("the bench's first 200 requests", timeout: .seconds(60)) {
                backends.prefix(3).map(\.served.total).reduce(0, +) >= 200
            }
            try await withClient(cluster) { client in _ = try await client.put("/svc/web/3", value: ids[3]) }
            status = try await lbctl.exitStatus(timeout: .seconds(120))
        } catch {
            try await lbctl.stop()
            throw error
        }
        print(lbctl.stdout)
        #expect(status == 0, "\(lbctl.stderr)")
        #expect(lbctl.stdout.contains("round-robin + slow start 6 s: 3200 requests"), "\(lbctl.stdout)")
        #expect(lbctl.stdout.contains("3200 succeeded, 0 failed"), "\(lbctl.stdout)")
        let table = try #require(PerSecondTable(lbctl.stdout), "\(lbctl.stdout)")
        // The three first take every attempt from the start; the fourth joins later.
        #expect(Set(table.ids.prefix(3)) == Set(ids.prefix(3)) && table.ids.last == ids[3], "\(lbctl.stdout)")
        #expect(table.rows.map(\.attempts).reduce(0, +) == 3200)
        let joined = try #require(table.rows.firstIndex { ($0.shares[ids[3]] ?? nil) != nil }, "\(lbctl.stdout)")
        #expect(joined >= 1, "the fourth took attempts in the first second: \(lbctl.stdout)")
        // Its first whole second in the set, against the last whole second of the run: it ramps
        // (in the first, within the window's first half, at most half its weight, at most 0.5 / 3.5
        // = 14% of the attempts; in the last, after the 6 s window, its full quarter). Generous margins: a loaded machine's
        // scheduling moves shares by a few percent, not by the ramp's factor of two and more.
        let firstWhole = try #require(table.rows.dropFirst(joined + 1).first { $0.isWhole }, "\(lbctl.stdout)")
        let lastWhole = try #require(table.rows.last { $0.isWhole }, "\(lbctl.stdout)")
        #expect(lastWhole.from >= firstWhole.from + 6, "the run ended before the ramp did: \(lbctl.stdout)")
        let early = table.share(ids[3], in: firstWhole)
        let late = table.share(ids[3], in: lastWhole)
        #expect(late > 0.18, "\(lbctl.stdout)")
        #expect(early < late * 0.75, "\(lbctl.stdout)")
        // The share of the joining second (a part of it) is about the lowest of all: within 5 points
        // of the first whole second's (a loaded machine's 80-odd requests a second put a few
        // attempts either side of a second's edge: a fresh-clone CI run saw 0.095 against a first whole second under 0.075).
        #expect(table.share(ids[3], in: table.rows[joined]) <= early + 0.05, "\(lbctl.stdout)")
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
