#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

@Suite("lbctl with DNS sources against a real dnsmasq", .enabled(if: DnsmasqEnvironment.enabled), .serialized, .timeLimit(.minutes(2)))
struct LbctlDNSTests {
    static var lbctl: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("lbctl")
    }

    func run(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = Self.lbctl
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
        // The pipes are closed: the process is exiting. Reap it (bounded), or read Foundation's status.
        let pid = process.processIdentifier
        for _ in 0..<2_000 {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid { return ((status >> 8) & 0xFF, output, errors) }
            if result == -1 { break }
            try await Task.sleep(for: .milliseconds(5))
        }
        try await Task.sleep(for: .milliseconds(50))
        return (process.isRunning ? -1 : process.terminationStatus, output, errors)
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
        let rows = srv.stdout.split(separator: "\n").dropFirst().map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(rows.map { Array($0.prefix(5)) } == [
            ["127.0.0.11:8080", "127.0.0.11", "8080", "5", "10"],
            ["127.0.0.12:8081", "127.0.0.12", "8081", "1", "20"],
        ], "\(srv.stdout)")

        let a = try await run(["resolve", "dns://\(server.nameserver)/a.svc.test:9000", "--json"])
        #expect(a.status == 0, "\(a.stderr)")
        #expect(a.stdout.contains("\"id\" : \"127.0.0.11:9000\""), "\(a.stdout)")
    }
}
