import Foundation
import LoadBalancerEtcd
import LoadBalancerTestKit

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Real etcd members on 127.0.0.1, each with ports and a data directory of its own, for the
/// integration tests and the propagation benchmark. Not part of the library's API.
///
/// Members are started from the `etcd` binary (Debian's `etcd-server`), with a short heartbeat and
/// election timeout so that a leader is elected and replaced within a second or two.
public final class EtcdCluster: @unchecked Sendable {
    /// One member's ports and process.
    public struct Member: Sendable {
        public var name: String
        public var clientPort: Int
        public var peerPort: Int
        public var address: EtcdConfiguration.Member { EtcdConfiguration.Member(host: "127.0.0.1", port: clientPort) }
    }

    /// The etcd binary, when installed.
    public static let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    /// Whether the etcd suites run: when etcd is installed, or when the test script says they must
    /// (then a missing etcd fails the suites instead of skipping them).
    public static var enabled: Bool {
        (binary != nil && !TestTier.isFast) || ProcessInfo.processInfo.environment["LB_ETCD_INTEGRATION"] == "1"
    }

    public let members: [Member]
    public let directory: URL
    /// The CA certificate (PEM) that signed the members' certificates, when they serve TLS.
    public private(set) var caCertificatePath: String?
    private let lock = NSLock()
    private var processes: [String: Process] = [:]

    /// The members' client addresses (and the CA to trust, with TLS), for an ``EtcdConfiguration``.
    public var configuration: EtcdConfiguration {
        EtcdConfiguration(
            members: members.map(\.address),
            tls: caCertificatePath.map { EtcdConfiguration.TLS(trustRootsPath: $0) }
        )
    }

    /// Starts a cluster of `size` members and waits (bounded) until it has a leader. With `tls`,
    /// the members serve clients over TLS with certificates from a CA made for the cluster
    /// (``caCertificatePath``), made with `openssl`.
    public static func start(size: Int = 1, tls: Bool = false) async throws -> EtcdCluster {
        guard binary != nil else { throw ClusterError("etcd is not installed (apt-get install etcd-server)") }
        return try await startOnFreePorts(what: "etcd") { base in
            let members = (0..<size).map { Member(name: "m\($0)", clientPort: base + 2 * $0, peerPort: base + 2 * $0 + 1) }
            let cluster = EtcdCluster(members: members)
            do {
                if tls { try await cluster.makeCertificates() }
                for member in members { try cluster.launch(member, initial: true) }
                try await cluster.waitUntilReady()
                return cluster
            } catch {
                cluster.stopAll()
                throw error
            }
        }
    }

    private init(members: [Member]) {
        self.members = members
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("lb-etcd-\(UUID().uuidString)")
    }

    deinit {
        stopAll()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Starts `member` again (after ``kill(_:)``) with its data directory, and waits until the
    /// cluster is ready again.
    public func restart(_ member: Member) async throws {
        try launch(member, initial: false)
        try await waitUntilReady()
    }

    /// Kills `member` with SIGKILL (no goodbye to its peers or clients) and waits until it is gone.
    public func kill(_ member: Member) async {
        let process = lock.withLock { processes.removeValue(forKey: member.name) }
        guard let process else { return }
        await killAndReap(process.processIdentifier)
    }

    /// Stops every member and deletes the data directories.
    public func destroy() {
        stopAll()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Stops every member.
    public func stopAll() {
        let all = lock.withLock {
            defer { processes = [:] }
            return Array(processes.values)
        }
        for process in all { killAndReapInBackground(process.processIdentifier) }
    }

    /// The member that is the leader now (bounded polling until one reports it).
    public func leader(timeout: Duration = .seconds(60)) async throws -> Member {
        try await withClient { client in
            let timeout = TestTimeScale.scaled(timeout)
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                for member in self.running() {
                    if let status = try? await client.status(of: member.address), status.isLeader { return member }
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            throw ClusterError("no etcd leader within \(timeout)")
        }
    }

    /// Adds a `root` user with `rootPassword` and turns authentication on, with `etcdctl`
    /// (Debian's `etcd-client`).
    public func enableAuthentication(rootPassword: String) async throws {
        let endpoints = running().map { "http://127.0.0.1:\($0.clientPort)" }.joined(separator: ",")
        try await Self.etcdctl(["--endpoints", endpoints, "user", "add", "root:\(rootPassword)"])
        try await Self.etcdctl(["--endpoints", endpoints, "auth", "enable"])
    }

    /// A CA and a server certificate for 127.0.0.1 signed by it, in `directory/tls`.
    private func makeCertificates() async throws {
        let certificates = try await TestCertificates.make(in: directory.appendingPathComponent("tls"))
        caCertificatePath = certificates.caPath
    }

    /// Runs etcdctl (API v3) and waits (bounded) for it to succeed.
    private static func etcdctl(_ arguments: [String]) async throws {
        guard
            let binary = ["/usr/bin/etcdctl", "/usr/local/bin/etcdctl"].first(where: {
                FileManager.default.isExecutableFile(atPath: $0)
            })
        else {
            throw ClusterError("etcdctl is not installed (apt-get install etcd-client)")
        }
        try await run(binary, arguments, environment: ["ETCDCTL_API": "3"])
    }

    /// Runs a program and waits (bounded) for it to succeed.
    static func run(_ binary: String, _ arguments: [String], environment: [String: String]? = nil) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        if let environment { process.environment = environment }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let pid = process.processIdentifier
        let timeout = TestTimeScale.scaled(.seconds(60))
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid {
                guard status == 0 else { throw ClusterError("\(binary) \(arguments.joined(separator: " ")) failed (status \(status))") }
                return
            }
            if result == -1, !process.isRunning {
                // Foundation reaped it first: its status is the process's.
                guard process.terminationStatus == 0 else {
                    throw ClusterError("\(binary) \(arguments.joined(separator: " ")) failed (status \(process.terminationStatus))")
                }
                return
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        killProcess(pid)
        throw ClusterError("\(binary) did not finish within \(timeout)")
    }

    /// The members running now.
    public func running() -> [Member] {
        lock.withLock { members.filter { processes[$0.name] != nil } }
    }

    private func launch(_ member: Member, initial: Bool) throws {
        let data = directory.appendingPathComponent(member.name)
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        let cluster = members.map { "\($0.name)=http://127.0.0.1:\($0.peerPort)" }.joined(separator: ",")
        let scheme = caCertificatePath == nil ? "http" : "https"
        let certificates = directory.appendingPathComponent("tls")
        let log = data.appendingPathComponent("etcd.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary ?? "/usr/bin/etcd")
        process.arguments = [
            "--name", member.name,
            "--data-dir", data.appendingPathComponent("data").path,
            "--listen-client-urls", "\(scheme)://127.0.0.1:\(member.clientPort)",
            "--advertise-client-urls", "\(scheme)://127.0.0.1:\(member.clientPort)",
            "--listen-peer-urls", "http://127.0.0.1:\(member.peerPort)",
            "--initial-advertise-peer-urls", "http://127.0.0.1:\(member.peerPort)",
            "--initial-cluster", cluster,
            "--initial-cluster-state", initial ? "new" : "existing",
            "--initial-cluster-token", directory.lastPathComponent,
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--logger", "zap",
            "--log-outputs", log.path,
            "--log-level", "warn",
        ]
        if caCertificatePath != nil {
            process.arguments! += [
                "--cert-file", certificates.appendingPathComponent("server.pem").path,
                "--key-file", certificates.appendingPathComponent("server.key").path,
            ]
        }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        lock.withLock { processes[member.name] = process }
    }

    /// Waits until every running member answers and sees a leader (bounded).
    private func waitUntilReady(timeout: Duration = .seconds(60)) async throws {
        try await withClient { client in
            let timeout = TestTimeScale.scaled(timeout)
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                let running = self.running()
                for member in running where !self.isAlive(member) {
                    throw ClusterError("etcd member \(member.name) exited (port \(member.clientPort) or \(member.peerPort) taken?)")
                }
                var ready = 0
                for member in running {
                    if let status = try? await client.status(of: member.address), status.leaderID != 0 { ready += 1 }
                }
                if ready == running.count { return }
                try await Task.sleep(for: .milliseconds(50))
            }
            throw ClusterError("etcd was not ready within \(timeout)")
        }
    }

    private func isAlive(_ member: Member) -> Bool {
        guard let process = lock.withLock({ processes[member.name] }) else { return false }
        var status: Int32 = 0
        let pid = process.processIdentifier
        return waitpid(pid, &status, WNOHANG) == 0
    }

    /// Runs `body` with a client of every member, running for the duration.
    private func withClient<T: Sendable>(_ body: @Sendable (EtcdClient) async throws -> T) async throws -> T {
        var configuration = self.configuration
        configuration.requestTimeout = .milliseconds(500)
        let client = try EtcdClient(configuration: configuration)
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                try? await client.run()
                return nil
            }
            defer { group.cancelAll() }
            let result = try await body(client)
            await client.shutdown()
            return result
        }
    }
}

/// Why a test server (an etcd cluster, a ZooKeeper ensemble...) could not be used.
public struct ClusterError: Error, CustomStringConvertible {
    /// What kind of failure it is. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable { case unavailable }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// The server could not be started, reached or used.
        public static let unavailable = Code(.unavailable)

        /// The code's name, such as `unavailable`.
        public var description: String { String(describing: wrapped) }
    }

    /// What kind of failure it is.
    public var code: Code
    /// What went wrong.
    public var message: String
    /// The underlying error, if any.
    public var cause: (any Error)?

    /// Creates an error.
    public init(code: Code = .unavailable, message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// An ``Code/unavailable`` error saying `message`.
    public init(_ message: String) { self.init(message: message) }

    /// The message, and the cause when there is one.
    public var description: String { cause.map { "\(message) (\($0))" } ?? message }
}

/// Sends SIGKILL (outside the class, whose `kill(_:)` would shadow the C function).
func killProcess(_ pid: Int32) {
    _ = kill(pid, SIGKILL)
}
