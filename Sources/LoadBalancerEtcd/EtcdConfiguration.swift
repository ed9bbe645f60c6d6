import LoadBalancer

/// Where an ``EtcdClient`` finds the cluster, and how it talks to it.
public struct EtcdConfiguration: Sendable {
    /// One cluster member's client address.
    public struct Member: Sendable, Hashable, CustomStringConvertible {
        /// A host name or an IP address (IPv6 without brackets).
        public var host: String
        /// The client port (etcd's default is 2379).
        public var port: Int

        /// A member at `host` and `port`.
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// Parses `host:port` or `[ipv6]:port`.
        public init(parsing text: String) throws(EtcdError) {
            do {
                let (host, port) = try Instance.parseHostPort(text)
                self.init(host: host, port: port)
            } catch {
                throw EtcdError(code: .invalidArgument, message: "invalid etcd member \"\(text)\": \(error.message)")
            }
        }

        /// `host:port`, with an IPv6 host in brackets.
        public var description: String { Instance.hostPortString(host: host, port: port) }
    }

    /// User name and password for etcd's authentication (the `Authenticate` call; the token it
    /// returns is sent with every request and renewed when etcd says it is no longer valid).
    public struct Credentials: Sendable, Hashable {
        /// The etcd user.
        public var username: String
        /// The user's password.
        public var password: String

        /// Creates credentials.
        public init(username: String, password: String) {
            self.username = username
            self.password = password
        }
    }

    /// TLS towards the members (PEM files).
    public struct TLS: Sendable, Hashable {
        /// The CA certificates that sign the members' certificates; `nil` uses the system's roots.
        public var trustRootsPath: String?
        /// A client certificate chain and its key, for members that require client certificates.
        public var clientCertificatePath: String?
        /// The private key of ``clientCertificatePath``.
        public var clientKeyPath: String?

        /// Members' certificates are verified against the member's host as configured.
        public init(trustRootsPath: String? = nil, clientCertificatePath: String? = nil, clientKeyPath: String? = nil) {
            self.trustRootsPath = trustRootsPath
            self.clientCertificatePath = clientCertificatePath
            self.clientKeyPath = clientKeyPath
        }
    }

    /// The members to talk to. Requests go to one member at a time and move to the next when it
    /// fails (unreachable, no leader, timed out).
    public var members: [Member]
    /// Authentication, when the cluster has it enabled.
    public var credentials: Credentials?
    /// TLS, when the members serve it. `nil`: plaintext (h2c).
    public var tls: TLS?
    /// How long a unary request (range, put, lease grant...) may take on one member. Default 5 s.
    public var requestTimeout: Duration = .seconds(5)

    /// Creates a configuration for `members`.
    public init(members: [Member], credentials: Credentials? = nil, tls: TLS? = nil) {
        self.members = members
        self.credentials = credentials
        self.tls = tls
    }

    /// A configuration from a comma-separated member list: `127.0.0.1:2379,127.0.0.1:22379`.
    public init(members list: String) throws(EtcdError) {
        let parts = list.split(separator: ",").map(String.init)
        guard !parts.isEmpty else { throw EtcdError(code: .invalidArgument, message: "no etcd members given") }
        var members: [Member] = []
        for part in parts { members.append(try Member(parsing: part)) }
        self.init(members: members)
    }
}
