#if canImport(Glibc)
import Glibc
#endif
import ConsulTestServer
import Foundation
import LoadBalancerLocalBackends
import Synchronization
import Testing

/// The bytes of one pipe, appended as they come by Foundation's readability handler (on a thread
/// of its own: a blocking read must not hold one of the few threads of Swift's concurrency pool).
final class OutputBuffer: Sendable {
    private let state = Mutex((data: Data(), ended: false))

    init(_ pipe: Pipe) {
        pipe.fileHandleForReading.readabilityHandler = { [self] handle in
            let chunk = handle.availableData
            if chunk.isEmpty {
                handle.readabilityHandler = nil
                state.withLock { $0.ended = true }
            } else {
                state.withLock { $0.data.append(chunk) }
            }
        }
    }

    var text: String { state.withLock { String(decoding: $0.data, as: UTF8.self) } }
    var ended: Bool { state.withLock { $0.ended } }
}

/// The built `lbctl`, run as a process (it sits next to the test bundle).
final class LbctlProcess: Sendable {
    static var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("lbctl")
    }

    private let process: Process
    private let stdout: OutputBuffer
    private let stderr: OutputBuffer

    init(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        stdout = OutputBuffer(out)
        stderr = OutputBuffer(err)
        try process.run()
        self.process = process
    }

    var output: String { stdout.text }
    var errors: String { stderr.text }

    /// Waits (bounded) for the process to exit on its own; returns its status.
    func exitStatus(timeout: Duration = .seconds(60)) async throws -> Int32 {
        let pid = process.processIdentifier
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            // The output is complete once both pipes are at end of file.
            guard stdout.ended, stderr.ended else {
                try await Task.sleep(for: .milliseconds(5))
                continue
            }
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid { return (status >> 8) & 0xFF }
            if result == -1 { return process.isRunning ? -1 : process.terminationStatus }
            try await Task.sleep(for: .milliseconds(5))
        }
        Issue.record("lbctl did not exit within \(timeout)")
        return -1
    }

    /// Stops the process (SIGTERM) and reaps it, bounded.
    func terminate() async throws {
        process.terminate()
        _ = try await exitStatus(timeout: .seconds(10))
    }

    /// Runs lbctl to the end.
    static func run(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let process = try LbctlProcess(arguments)
        let status = try await process.exitStatus()
        return (status, process.output, process.errors)
    }
}

@Suite("lbctl with consul:// sources against the Consul-API test server", .serialized, .timeLimit(.minutes(2)))
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

        let table = try await LbctlProcess.run(["resolve", base + "?tag=a&tag=b&token=t0ken"])
        #expect(table.status == 0, "\(table.stderr)")
        let rows = table.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(rows.first == ["ID", "HOST", "PORT", "WEIGHT", "PRIORITY", "METADATA"], "\(table.stdout)")
        #expect(rows.dropFirst().map { Array($0.prefix(5)) } == [["10.0.0.1:8080", "10.0.0.1", "8080", "4", "0"]], "\(table.stdout)")
        #expect(table.stdout.contains("tags=a,b"))

        let far = try await LbctlProcess.run(["resolve", base + "?dc=dc2&token=t0ken", "--json"])
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

        // Without the token the agent refuses: the error is reported, on one line.
        let refused = try await LbctlProcess.run(["resolve", base])
        #expect(refused.stderr.contains("403"), "\(refused.stderr)")
    }

    @Test("resolve --watch prints each change as it happens")
    func watch() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 8080)
        let process = try LbctlProcess(["resolve", "consul://127.0.0.1:\(server.port)/web", "--watch"])
        try await waitUntil { process.output.contains("10.0.0.1:8080") }
        try await waitUntil { server.heldQueries == 1 }

        server.addService(id: "b", name: "web", address: "10.0.0.2", port: 8080, passingWeight: 2)
        try await waitUntil { process.output.contains("added   10.0.0.2:8080") }
        server.setServiceStatus(id: "a", "critical")
        try await waitUntil { process.output.contains("removed 10.0.0.1:8080") }
        try await process.terminate()
        #expect(!process.errors.contains("registry error"), "\(process.errors)")
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

        let result = try await LbctlProcess.run([
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
        let result = try await LbctlProcess.run(["resolve", "consul://127.0.0.1:8500/web?tag="])
        #expect(result.status == 2)
        #expect(result.stderr.contains("malformed query item"), "\(result.stderr)")
    }
}
