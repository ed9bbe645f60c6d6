import Foundation
import LoadBalancerDNS
import LoadBalancerTestKit

/// Whether the dnsmasq integration suite runs: when dnsmasq is installed, or when the test script
/// says it must (then a missing dnsmasq fails the suite instead of skipping it).
public enum DnsmasqEnvironment {
    /// The dnsmasq binary, when installed.
    public static let binary = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/usr/local/sbin/dnsmasq"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
    /// Whether `LB_DNS_INTEGRATION=1` says the suites must run.
    public static let required = ProcessInfo.processInfo.environment["LB_DNS_INTEGRATION"] == "1"
    /// Whether the dnsmasq suites run.
    public static var enabled: Bool { (binary != nil && !TestTier.isFast) || required }
}

/// A real dnsmasq on 127.0.0.1 at a port of its own, with its own configuration directory.
/// Not part of the library's API. Not safe for concurrent use: one test drives it.
public final class Dnsmasq: @unchecked Sendable {
    /// The UDP and TCP port it serves on.
    public let port: Int
    /// Its configuration, pid and log files.
    public let directory: URL
    private var process: Process?

    /// Starts dnsmasq serving `records` (dnsmasq configuration lines such as `srv-host=...`).
    public static func start(_ records: [String]) async throws -> Dnsmasq {
        guard DnsmasqEnvironment.binary != nil else {
            throw DnsmasqError(code: .notInstalled, message: "dnsmasq is not installed (apt-get install dnsmasq-base)")
        }
        return try await startOnFreePorts(what: "dnsmasq") { port in
            // A directory per attempt: a failed attempt's server removes its own when it ends.
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lb-dnsmasq-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let server = Dnsmasq(port: port, directory: directory)
            do {
                try await server.launch(records)
                return server
            } catch {
                await server.stop()
                throw error
            }
        }
    }

    private init(port: Int, directory: URL) {
        self.port = port
        self.directory = directory
    }

    /// `127.0.0.1:PORT`.
    public var nameserver: String { "127.0.0.1:\(port)" }

    /// (Re)starts dnsmasq on the same port with `records`, and waits until it answers.
    public func launch(_ records: [String]) async throws {
        await stop()
        let conf = directory.appendingPathComponent("dnsmasq.conf")
        // A record of our own to probe readiness with.
        let lines = records + ["host-record=ready.lbtest,127.0.0.1"]
        try lines.joined(separator: "\n").appending("\n").write(to: conf, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: DnsmasqEnvironment.binary!)
        process.arguments = [
            "--keep-in-foreground", "--port=\(port)", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--no-resolv", "--no-hosts", "--no-poll", "--conf-file=\(conf.path)",
            "--pid-file=\(directory.appendingPathComponent("pid").path)", "--user=root", "--local-ttl=1",
            "--log-facility=\(directory.appendingPathComponent("log").path)",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        // Ready when it answers a query (bounded polling).
        let client = DNSClient(configuration: .nameserver(nameserver, timeout: .milliseconds(200), attempts: 1))
        let timeout = TestTimeScale.scaled(.seconds(60))
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard process.isRunning else { throw DnsmasqError(message: "dnsmasq exited (port \(port) taken?)") }
            if let answer = try? await client.query("ready.lbtest", type: .a), !answer.message.answers.isEmpty { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw DnsmasqError(message: "dnsmasq did not answer on port \(port) within \(timeout)")
    }

    /// Stops dnsmasq and waits (bounded, without blocking a thread) until it has exited.
    public func stop() async {
        guard let process else { return }
        self.process = nil
        await killAndReap(process.processIdentifier)
    }

    deinit {
        if let process { killAndReapInBackground(process.processIdentifier) }
        try? FileManager.default.removeItem(at: directory)
    }
}

/// dnsmasq could not be started.
public struct DnsmasqError: Error, CustomStringConvertible {
    /// What kind of failure it is. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable { case notInstalled, notStarted }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// No dnsmasq binary on this machine.
        public static let notInstalled = Code(.notInstalled)
        /// dnsmasq exited, or did not answer in time.
        public static let notStarted = Code(.notStarted)

        /// The code's name, such as `notStarted`.
        public var description: String { String(describing: wrapped) }
    }

    /// What kind of failure it is.
    public var code: Code
    /// What went wrong.
    public var message: String
    /// The underlying error, if any.
    public var cause: (any Error)?

    /// Creates an error.
    public init(code: Code = .notStarted, message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// The message, and the cause when there is one.
    public var description: String { cause.map { "\(message) (\($0))" } ?? message }
}
