import LoadBalancer

/// Where a ``ZooKeeperClient`` finds the ensemble, its session's settings, and how it proves who
/// it is: digest credentials, the ACL of the nodes it creates, TLS.
///
/// Its `description` names the user but never prints the password.
public struct ZooKeeperConfiguration: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
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

    /// A user and password for ZooKeeper's `digest` scheme (`addauth digest user:password`), sent
    /// on every connection before any request.
    ///
    /// ZooKeeper's digest provider accepts any user and password: the session gets the identity
    /// `digest:user:base64(sha1(user:password))` (``ZooKeeperACL/Id/digest(username:password:)``),
    /// and a wrong password shows as ``ZooKeeperError/Code/noAuth`` on the nodes whose ACL names
    /// the right one. A server without the digest provider refuses the credentials
    /// (``ZooKeeperError/Code/authFailed``, in a ``ZooKeeperEvent/connectFailed(_:)`` event).
    ///
    /// Its `description` names the user, never the password.
    public struct Credentials: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
        /// The user: the part of the digest id before the first ':' (so it must not contain one).
        public var username: String
        /// The password.
        public var password: String

        /// Digest credentials.
        public init(username: String, password: String) {
            self.username = username
            self.password = password
        }

        /// The scheme these credentials are for.
        public var scheme: String { "digest" }

        /// `digest user "NAME"` (the password is not shown).
        public var description: String { "\(scheme) user \"\(username)\" (password redacted)" }
        /// The same as ``description``.
        public var debugDescription: String { description }
        /// The user only, so that `dump` and debuggers do not show the password either.
        public var customMirror: Mirror { Mirror(self, children: ["username": username, "password": "<redacted>"]) }

        /// Throws unless the user can be part of a digest id.
        func validate() throws(ZooKeeperError) {
            guard !username.isEmpty, !username.contains(":") else {
                throw ZooKeeperError(
                    code: .invalidArgument,
                    message: "invalid digest user \"\(username)\": it must be non-empty and contain no ':'")
            }
        }
    }

    /// TLS towards the servers' secure client port (ZooKeeper 3.5+, `secureClientPort`), with
    /// PEM files.
    ///
    /// The files are read when the client's `run()` starts. The server's certificate must chain
    /// to ``trustRootsPath`` (or the system's roots) and, unless ``verifyHostname`` is off, name
    /// the server's host as configured (or ``serverHostname``): a DNS name or an IP address in its
    /// subject alternative names.
    public struct TLS: Sendable, Hashable {
        /// The CA certificates (PEM) that sign the servers' certificates; `nil` uses the system's roots.
        public var trustRootsPath: String?
        /// A client certificate chain (PEM), for servers that ask for one (`ssl.clientAuth=need`
        /// or `want`); ZooKeeper then also authenticates the session as `x509:` its subject.
        public var clientCertificatePath: String?
        /// The private key (PEM) of ``clientCertificatePath``.
        public var clientKeyPath: String?
        /// Whether the server's certificate must name the host. Default: on. Turning it off
        /// still checks the chain, so any certificate the roots signed is accepted for any server.
        public var verifyHostname: Bool
        /// A DNS name to verify the certificate against, and to send as SNI, instead of each
        /// server's host (for servers reached by address whose certificates name a DNS name).
        /// Default: `nil`, each server's host. A certificate that names the connected IP address
        /// is accepted too (swift-nio-ssl checks IP address entries against the connected address).
        public var serverHostname: String?

        /// TLS settings; hostname verification is on unless turned off.
        public init(
            trustRootsPath: String? = nil,
            clientCertificatePath: String? = nil,
            clientKeyPath: String? = nil,
            verifyHostname: Bool = true,
            serverHostname: String? = nil
        ) {
            self.trustRootsPath = trustRootsPath
            self.clientCertificatePath = clientCertificatePath
            self.clientKeyPath = clientKeyPath
            self.verifyHostname = verifyHostname
            self.serverHostname = serverHostname
        }
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
    /// Digest credentials, sent on every connection before any request. Default: none (the
    /// session is `world:anyone` only).
    public var credentials: Credentials?
    /// The ACL of the nodes the client creates (the registrar's nodes, the publisher's parent,
    /// parents created on the way), unless a call names one. `nil`: ``defaultACL``.
    public var acl: [ZooKeeperACL]?
    /// TLS to the servers' secure client port. Default: `nil`, plain TCP.
    public var tls: TLS?

    /// The ACL of created nodes when ``acl`` is `nil`: with ``credentials``, the creator may do
    /// everything and everyone may read (`[ZooKeeperACL].creatorAllAnyoneRead`), so no other user
    /// can change or delete what this client registers; without, everyone may do everything
    /// (`[ZooKeeperACL].openUnsafe`, ZooKeeper's own default).
    public var defaultACL: [ZooKeeperACL] {
        acl ?? (credentials == nil ? .openUnsafe : .creatorAllAnyoneRead)
    }

    /// Creates a configuration.
    public init(
        servers: [Server],
        chroot: String? = nil,
        sessionTimeout: Duration = .seconds(10),
        credentials: Credentials? = nil,
        acl: [ZooKeeperACL]? = nil,
        tls: TLS? = nil
    ) {
        self.servers = servers
        self.chroot = chroot
        self.sessionTimeout = sessionTimeout
        self.credentials = credentials
        self.acl = acl
        self.tls = tls
    }

    /// The servers, the chroot, the user (never the password), the ACL and whether TLS is on.
    public var description: String {
        var parts = ["servers: " + servers.map(\.description).joined(separator: ",")]
        if let chroot { parts.append("chroot: \(chroot)") }
        parts.append("sessionTimeout: \(sessionTimeout)")
        parts.append("credentials: " + (credentials.map(\.description) ?? "none"))
        parts.append("acl: [" + defaultACL.map(\.description).joined(separator: ", ") + "]")
        if let tls {
            parts.append("tls: on (hostname verification \(tls.verifyHostname ? "on" : "off"))")
        } else {
            parts.append("tls: off")
        }
        return "ZooKeeperConfiguration(" + parts.joined(separator: ", ") + ")"
    }

    /// The same as ``description``.
    public var debugDescription: String { description }

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
