import Foundation
import LoadBalancerTestKit
import LoadBalancerZooKeeper
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Real ZooKeeper servers on 127.0.0.1 (Debian's `zookeeper` 3.8, started with `java` directly,
/// with this project's own configuration and data directory per server and a small heap), for
/// the integration tests and the propagation benchmark. Not part of the library's API.
public final class ZooKeeperEnsemble: @unchecked Sendable {
    public struct Server: Sendable {
        public var id: Int
        public var clientPort: Int
        public var peerPort: Int
        public var electionPort: Int
        /// The TLS client port (`secureClientPort`), when the ensemble was started with TLS.
        public var securePort: Int?
        public var address: ZooKeeperConfiguration.Server { .init(host: "127.0.0.1", port: clientPort) }
        /// The TLS client port's address (the plain one without TLS).
        public var secureAddress: ZooKeeperConfiguration.Server { .init(host: "127.0.0.1", port: securePort ?? clientPort) }
    }

    /// Authentication and TLS settings of the servers.
    public struct Security: Sendable {
        /// Whether the digest scheme is available: with it, `authProvider.1` names ZooKeeper's
        /// DigestAuthenticationProvider; without it, the JVM runs with
        /// `zookeeper.DigestAuthenticationProvider.enabled=false`, and the server refuses
        /// `addauth digest` (AUTHFAILED).
        public var digest: Bool
        /// A secure client port (Netty, `secureClientPort`) serving this CA-signed certificate
        /// (its CA is the trust store for client certificates); `nil`: none.
        public var tls: TestCertificates?
        /// `ssl.clientAuth`: `none`, `want` or `need` (a client certificate the CA signed).
        public var clientAuth: String

        public init(digest: Bool = true, tls: TestCertificates? = nil, clientAuth: String = "none") {
            self.digest = digest
            self.tls = tls
            self.clientAuth = clientAuth
        }
    }

    /// The jar to run (its manifest names the dependencies).
    public static let jar = ["/usr/share/java/zookeeper.jar"].first { FileManager.default.fileExists(atPath: $0) }
    /// What the Netty server (TLS) needs beyond the jar's manifest: Debian's libnetty-java (a
    /// dependency of the zookeeper package) has them, but the manifest does not name them.
    static let nettyJars = ["/usr/share/java/netty-codec.jar", "/usr/share/java/netty-resolver.jar"]
    static let java = ["/usr/bin/java"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Whether the ZooKeeper suites run: when ZooKeeper and java are installed, or when the test
    /// script says they must (then a missing one fails the suites instead of skipping them).
    public static var enabled: Bool {
        (jar != nil && java != nil && !TestTier.isFast) || ProcessInfo.processInfo.environment["LB_ZOOKEEPER_INTEGRATION"] == "1"
    }

    public let servers: [Server]
    public let directory: URL
    public let security: Security?
    private var stores: (keyStore: String, trustStore: String)?
    /// The key and trust stores' password (test files only).
    private static let storePassword = "zk-test-store"
    private let lock = NSLock()
    private var processes: [Int: Process] = [:]

    /// A configuration naming every server (and `chroot`, if given).
    public func configuration(chroot: String? = nil, sessionTimeout: Duration = .seconds(8)) -> ZooKeeperConfiguration {
        ZooKeeperConfiguration(servers: servers.map(\.address), chroot: chroot, sessionTimeout: sessionTimeout)
    }

    /// A configuration naming every server's TLS port, trusting the ensemble's CA.
    public func secureConfiguration(sessionTimeout: Duration = .seconds(8)) -> ZooKeeperConfiguration {
        ZooKeeperConfiguration(
            servers: servers.map(\.secureAddress), sessionTimeout: sessionTimeout,
            tls: .init(trustRootsPath: security?.tls?.caPath))
    }

    /// The connect string, `127.0.0.1:p1,127.0.0.1:p2...`.
    public var connectString: String { servers.map { "127.0.0.1:\($0.clientPort)" }.joined(separator: ",") }

    /// Starts `size` servers (1: standalone) and waits (bounded) until each one serves.
    /// With `security`, the servers have the digest provider (or not) and a TLS port.
    public static func start(size: Int = 1, security: Security? = nil) async throws -> ZooKeeperEnsemble {
        guard jar != nil, java != nil else {
            throw ClusterError("ZooKeeper is not installed (apt-get install zookeeper; it needs java)")
        }
        return try await startOnFreePorts(what: "ZooKeeper") { base in
            let servers = (0..<size).map {
                Server(
                    id: $0 + 1, clientPort: base + 3 * $0, peerPort: base + 3 * $0 + 1, electionPort: base + 3 * $0 + 2,
                    securePort: security?.tls == nil ? nil : base + 3 * size + $0)
            }
            let ensemble = ZooKeeperEnsemble(servers: servers, security: security)
            do {
                if let tls = security?.tls { ensemble.stores = try await tls.javaStores(password: storePassword) }
                for server in servers { try ensemble.launch(server) }
                for server in servers { try await ensemble.waitUntilServing(server) }
                return ensemble
            } catch {
                ensemble.stopAll()
                throw error
            }
        }
    }

    private init(servers: [Server], security: Security?) {
        self.servers = servers
        self.security = security
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("lb-zk-\(UUID().uuidString)")
    }

    deinit {
        stopAll()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Kills `server` with SIGKILL and waits until it is gone.
    public func kill(_ server: Server) async {
        guard let process = lock.withLock({ processes.removeValue(forKey: server.id) }) else { return }
        await killAndReap(process.processIdentifier)
    }

    /// Starts `server` again with its data directory and waits until it serves.
    public func restart(_ server: Server) async throws {
        try launch(server)
        try await waitUntilServing(server)
    }

    /// Stops every server and deletes the data directories.
    public func destroy() {
        stopAll()
        try? FileManager.default.removeItem(at: directory)
    }

    public func stopAll() {
        let all = lock.withLock {
            defer { processes = [:] }
            return Array(processes.values)
        }
        for process in all { killAndReapInBackground(process.processIdentifier) }
    }

    /// The server that leads the ensemble now (standalone: the only one), by bounded polling.
    public func leader(timeout: Duration = .seconds(60)) async throws -> Server {
        let timeout = TestTimeScale.scaled(timeout)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            for server in running() {
                if let mode = try? await Self.mode(of: server), mode == "leader" || mode == "standalone" { return server }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ClusterError("no ZooKeeper leader within \(timeout); the servers' logs end with:\n\(logTails())")
    }

    /// The server a session is connected to now (its `cons` lists the session), by bounded polling.
    public func serverOf(session: Int64, timeout: Duration = .seconds(30)) async throws -> Server {
        let id = "sid=0x" + String(UInt64(bitPattern: session), radix: 16)
        let timeout = TestTimeScale.scaled(timeout)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            for server in running() {
                if let answer = try? await Self.fourLetterWord("cons", port: server.clientPort), answer.contains(id) { return server }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ClusterError("no server lists session \(id)")
    }

    /// The last lines of each running server's log, for the message of a failure.
    func logTails(lines: Int = 15) -> String {
        running().map { server in
            let log = directory.appendingPathComponent("server\(server.id)/zookeeper.log")
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? "(no log)"
            let tail = text.split(separator: "\n").suffix(lines).joined(separator: "\n")
            return "-- server \(server.id):\n\(tail)"
        }.joined(separator: "\n")
    }

    public func running() -> [Server] {
        lock.withLock { servers.filter { processes[$0.id] != nil } }
    }

    private func launch(_ server: Server) throws {
        let home = directory.appendingPathComponent("server\(server.id)")
        let data = home.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        var lines = [
            // A short tick keeps short session timeouts possible (the minimum is two ticks); the
            // limits, counted in ticks, are generous (10 s to join a leader, 5 s to keep up with
            // it), so that a loaded machine does not turn an election into a series of them (with
            // 2 s and 1 s, a leader-failover test once found no leader for 30 s while the other
            // suites ran beside it; alone it takes 2 s).
            "tickTime=200",
            "initLimit=50",
            "syncLimit=25",
            "dataDir=\(data.path)",
            "clientPort=\(server.clientPort)",
            "clientPortAddress=127.0.0.1",
            "admin.enableServer=false",
            "4lw.commands.whitelist=srvr,ruok,cons",
            "maxClientCnxns=0",
            "minSessionTimeout=400",
            "maxSessionTimeout=10000",
        ]
        if let security {
            if security.digest {
                lines.append("authProvider.1=org.apache.zookeeper.server.auth.DigestAuthenticationProvider")
            }
            if let securePort = server.securePort, let stores {
                lines += [
                    "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
                    "secureClientPort=\(securePort)",
                    "secureClientPortAddress=127.0.0.1",
                    "ssl.keyStore.location=\(stores.keyStore)",
                    "ssl.keyStore.password=\(Self.storePassword)",
                    "ssl.keyStore.type=PKCS12",
                    "ssl.trustStore.location=\(stores.trustStore)",
                    "ssl.trustStore.password=\(Self.storePassword)",
                    "ssl.trustStore.type=PKCS12",
                    "ssl.clientAuth=\(security.clientAuth)",
                ]
            }
        }
        if servers.count > 1 {
            try "\(server.id)\n".write(to: data.appendingPathComponent("myid"), atomically: true, encoding: .utf8)
            for peer in servers {
                lines.append("server.\(peer.id)=127.0.0.1:\(peer.peerPort):\(peer.electionPort)")
            }
        }
        let config = home.appendingPathComponent("zoo.cfg")
        try (lines.joined(separator: "\n") + "\n").write(to: config, atomically: true, encoding: .utf8)
        let log = home.appendingPathComponent("zookeeper.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.java ?? "/usr/bin/java")
        let jar = Self.jar ?? "/usr/share/java/zookeeper.jar"
        var classPath = [jar]
        if server.securePort != nil { classPath += Self.nettyJars }
        process.arguments =
            ["-Xmx96m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Dzookeeper.log.dir=\(home.path)"]
            // An election round that hears from no peer waits twice as long before the next, up to
            // 60 s by default: on a loaded machine, where peers start or answer late, an ensemble
            // could go without a leader for longer than a test waits. Capped at 1 s.
            + ["-Dzookeeper.fastleader.maxNotificationInterval=1000"]
            + (security?.digest == false ? ["-Dzookeeper.DigestAuthenticationProvider.enabled=false"] : [])
            + ["-cp", classPath.joined(separator: ":"), "org.apache.zookeeper.server.quorum.QuorumPeerMain", config.path]
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        lock.withLock { processes[server.id] = process }
    }

    /// Waits until `server` answers `srvr` with a mode (it has joined a quorum or runs standalone).
    private func waitUntilServing(_ server: Server, timeout: Duration = .seconds(60)) async throws {
        let timeout = TestTimeScale.scaled(timeout)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let process = lock.withLock({ processes[server.id] }), !isAlive(process) {
                throw ClusterError("ZooKeeper server \(server.id) exited (a port of \(server.clientPort)...\(server.electionPort) taken?)")
            }
            if let mode = try? await Self.mode(of: server), ["leader", "follower", "standalone"].contains(mode),
                await Self.accepts(port: server.securePort)
            {
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ClusterError("ZooKeeper server \(server.id) did not serve within \(timeout)")
    }

    private func isAlive(_ process: Process) -> Bool {
        var status: Int32 = 0
        return waitpid(process.processIdentifier, &status, WNOHANG) == 0
    }

    /// The `Mode:` line of the server's `srvr` answer (`leader`, `follower`, `standalone`).
    static func mode(of server: Server) async throws -> String? {
        let answer = try await fourLetterWord("srvr", port: server.clientPort)
        for line in answer.split(separator: "\n") where line.hasPrefix("Mode: ") {
            return String(line.dropFirst(6))
        }
        return nil
    }

    /// Whether a TCP connection to `port` succeeds (the TLS port may open after the plain one
    /// serves); true for no port.
    static func accepts(port: Int?) async -> Bool {
        guard let port else { return true }
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(1))
                .connect(host: "127.0.0.1", port: port).get()
            try? await channel.close()
            return true
        } catch {
            return false
        }
    }

    /// Sends a four-letter command and reads the whole answer (bounded by 2 s).
    static func fourLetterWord(_ word: String, port: Int) async throws -> String {
        let channel = try await wrappedForAsync(
            ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connectTimeout(.seconds(1)).connect(host: "127.0.0.1", port: port)
                .get())
        return try await withThrowingTaskGroup(of: String?.self) { group in
            group.addTask {
                try await channel.executeThenClose { inbound, outbound in
                    try await outbound.write(ByteBuffer(string: word))
                    var text = ""
                    for try await chunk in inbound { text += String(buffer: chunk) }
                    return text
                }
            }
            group.addTask {
                try await Task.sleep(for: .seconds(2))
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let text = first else { throw ClusterError("\(word) timed out") }
            return text
        }
    }
}
