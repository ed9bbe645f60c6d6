import LoadBalancer

/// Where a ``ZooKeeperClient`` finds the ensemble, and its session's settings.
public struct ZooKeeperConfiguration: Sendable, Hashable {
    /// One server's client address.
    public struct Server: Sendable, Hashable, CustomStringConvertible {
        /// The server's host.
        public var host: String
        /// The server's client port.
        public var port: Int

        /// A server at `host` and `port`.
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// `host:port`, with an IPv6 host in brackets.
        public var description: String { Instance.hostPortString(host: host, port: port) }
    }

    /// The servers; the client connects to one at a time, in a shuffled order, and moves to the
    /// next when a connection fails or goes quiet.
    public var servers: [Server]
    /// A path every path of the client is relative to (`/apps/prod`), or `nil`.
    public var chroot: String?
    /// The session timeout the client asks for (the server clamps it to 2–20 ticks). Default 10 s.
    public var sessionTimeout: Duration = .seconds(10)
    /// How long a connection may take to establish: the TCP connect, then the server's answer to
    /// the session handshake. Default 2 s.
    public var connectTimeout: Duration = .seconds(2)

    /// Creates a configuration.
    public init(servers: [Server], chroot: String? = nil, sessionTimeout: Duration = .seconds(10)) {
        self.servers = servers
        self.chroot = chroot
        self.sessionTimeout = sessionTimeout
    }

    /// Parses a connect string: `host:port[,host:port...][/chroot]`.
    public init(connectString: String) throws(ZooKeeperError) {
        var hosts = Substring(connectString)
        var chroot: String?
        if let slash = connectString.firstIndex(of: "/") {
            hosts = connectString[..<slash]
            let path = String(connectString[slash...])
            if path != "/" {
                try ZooKeeperPath.validate(path)
                chroot = path
            }
        }
        var servers: [Server] = []
        for part in hosts.split(separator: ",", omittingEmptySubsequences: false) {
            do {
                let (host, port) = try Instance.parseHostPort(String(part))
                servers.append(Server(host: host, port: port))
            } catch {
                throw ZooKeeperError(
                    code: .invalidArgument, message: "invalid server \"\(part)\" in \"\(connectString)\": \(error.message)")
            }
        }
        guard !servers.isEmpty else {
            throw ZooKeeperError(code: .invalidArgument, message: "no servers in \"\(connectString)\"")
        }
        self.init(servers: servers, chroot: chroot)
    }
}

/// ZooKeeper path rules.
public enum ZooKeeperPath {
    /// Throws unless `path` is absolute, has no empty, `.` or `..` segment, no trailing slash
    /// (except the root) and no control characters.
    public static func validate(_ path: String) throws(ZooKeeperError) {
        func invalid(_ why: String) -> ZooKeeperError {
            ZooKeeperError(code: .invalidArgument, message: "invalid path \"\(path)\": \(why)")
        }
        guard path.hasPrefix("/") else { throw invalid("it must start with '/'") }
        if path == "/" { return }
        guard !path.hasSuffix("/") else { throw invalid("it must not end with '/'") }
        for segment in path.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            guard !segment.isEmpty else { throw invalid("empty segment") }
            guard segment != ".", segment != ".." else { throw invalid("relative segment") }
        }
        guard !path.unicodeScalars.contains(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }) else {
            throw invalid("control character")
        }
    }

    /// `child` under `parent`.
    static func join(_ parent: String, _ child: String) -> String {
        parent == "/" ? "/" + child : parent + "/" + child
    }

    /// The last segment of `path` (empty for the root).
    static func lastSegment(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// The parent of `path` (`/` for a top-level node).
    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }
}
