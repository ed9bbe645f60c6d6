#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import LoadBalancerEtcd
import LoadBalancerLocalBackends
import LoadBalancerTestServers
import Synchronization
import Testing

/// The built `lbctl`, run as a child process.
enum Lbctl {
    static var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("lbctl")
    }

    /// Runs lbctl to completion (bounded by the test's time limit) and returns its status and output.
    static func run(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        async let stdout = Task.detached { out.fileHandleForReading.readDataToEndOfFile() }.value
        async let stderr = Task.detached { err.fileHandleForReading.readDataToEndOfFile() }.value
        let output = String(decoding: await stdout, as: UTF8.self)
        let errors = String(decoding: await stderr, as: UTF8.self)
        return (try await reap(process), output, errors)
    }

    /// Waits (bounded) for an exiting process and returns its exit status.
    static func reap(_ process: Process) async throws -> Int32 {
        let pid = process.processIdentifier
        for _ in 0..<2_000 {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid { return (status >> 8) & 0xFF }
            if result == -1 { break }
            try await Task.sleep(for: .milliseconds(5))
        }
        for _ in 0..<200 where process.isRunning { try await Task.sleep(for: .milliseconds(10)) }
        return process.isRunning ? -1 : process.terminationStatus
    }
}

/// An lbctl that keeps running (`resolve --watch`), its output collected as it comes.
final class RunningLbctl: Sendable {
    let process: Process
    private let output = Mutex("")
    var stdout: String { output.withLock { $0 } }

    init(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = Lbctl.binary
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        self.process = process
        try process.run()
        let handle = out.fileHandleForReading
        Thread.detachNewThread { [self] in
            while true {
                let data = handle.availableData
                if data.isEmpty { return }  // end of file: lbctl exited
                output.withLock { $0 += String(decoding: data, as: UTF8.self) }
            }
        }
    }

    func stop() async throws {
        _ = kill(process.processIdentifier, SIGKILL)
        _ = try await Lbctl.reap(process)
    }
}

@Suite("lbctl with etcd sources against a real etcd", .enabled(if: EtcdCluster.enabled), .serialized, .timeLimit(.minutes(3)))
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
        #expect(rows.map { Array($0.prefix(5)) } == [
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
