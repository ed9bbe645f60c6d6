#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Where the Consul agent is and how to talk to it: the configuration of a ``ConsulClient``.
public struct ConsulConfiguration: Sendable, Hashable {
    /// The agent's host. Default `127.0.0.1`.
    public var host: String
    /// The agent's HTTP(S) port. Default 8500, or 8501 (Consul's HTTPS port) with ``tls``.
    public var port: Int {
        get { explicitPort ?? (tls ? 8501 : 8500) }
        set { explicitPort = newValue }
    }
    private var explicitPort: Int?
    /// Whether to use HTTPS. Default `false`.
    ///
    /// The client trusts the system's roots, plus ``caCertificatePath`` when set; for a client
    /// certificate or other TLS settings, pass an `HTTPClient` that has them.
    public var tls: Bool
    /// A PEM file of CA certificates to trust for the agent's certificate (`CONSUL_CACERT`),
    /// in place of the system's roots. Default `nil`.
    public var caCertificatePath: String?
    /// The datacenter to query (`dc`); `nil` is the agent's own. Default `nil`.
    public var datacenter: String?
    /// The ACL token, sent as `X-Consul-Token`; `nil` sends none. Default `nil`.
    public var token: String?
    /// The time a request that does not block may take. A blocking query may take its
    /// `wait`, plus the `wait / 16` Consul may add, plus this. Default 10 s.
    public var requestTimeout: Duration
    /// The largest response body read, in bytes. Default 16 MiB.
    public var maxResponseSize: Int
    /// How many blocking queries may be held by the agent at once: the size of the connection
    /// pool kept for them (one connection per query; one publisher has at most one query
    /// held). Further blocking queries wait for a connection; other requests never do, as they
    /// have a pool of their own. Default 64.
    public var maxBlockingQueries: Int

    /// Creates a configuration.
    ///
    /// - Parameters:
    ///   - host: The agent's host.
    ///   - port: The agent's port; `nil` is 8500, or 8501 with `tls`.
    ///   - tls: Whether to use HTTPS.
    ///   - caCertificatePath: A PEM file of the roots to trust for HTTPS, if not the system's.
    ///   - datacenter: The datacenter to query, if not the agent's own.
    ///   - token: The ACL token, if any.
    ///   - requestTimeout: The time a request other than a blocking query may take.
    ///   - maxResponseSize: The largest response body read, in bytes.
    ///   - maxBlockingQueries: The connections kept for blocking queries (their own pool).
    public init(
        host: String = "127.0.0.1",
        port: Int? = nil,
        tls: Bool = false,
        caCertificatePath: String? = nil,
        datacenter: String? = nil,
        token: String? = nil,
        requestTimeout: Duration = .seconds(10),
        maxResponseSize: Int = 16 * 1024 * 1024,
        maxBlockingQueries: Int = 64
    ) {
        self.host = host
        self.explicitPort = port
        self.tls = tls
        self.caCertificatePath = caCertificatePath
        self.datacenter = datacenter
        self.token = token
        self.requestTimeout = requestTimeout
        self.maxResponseSize = maxResponseSize
        self.maxBlockingQueries = maxBlockingQueries
    }

    /// Creates a configuration from the variables the Consul CLI reads, where an argument
    /// given here does not say otherwise (an argument always wins):
    ///
    /// - `CONSUL_HTTP_ADDR`: `host`, `host:port`, `[v6]:port`, with an optional `http://` or
    ///   `https://` (which turns TLS on); a Unix socket (`unix://`) is not supported.
    /// - `CONSUL_HTTP_SSL`: `true` turns TLS on (Go's boolean spellings: `1`, `t`, `true`...).
    /// - `CONSUL_HTTP_TOKEN`: the ACL token. `CONSUL_CACERT`: the CA file to trust.
    /// - `CONSUL_DATACENTER`: the datacenter to query.
    ///
    /// An empty variable counts as unset. Without a port, the port is 8500, or 8501 with TLS.
    ///
    /// - Parameters:
    ///   - environment: The variables, such as `ProcessInfo.processInfo.environment`.
    ///   - host: The agent's host, over `CONSUL_HTTP_ADDR`.
    ///   - port: The agent's port, over `CONSUL_HTTP_ADDR`.
    ///   - tls: Whether to use HTTPS, over `CONSUL_HTTP_SSL` and the address's scheme.
    ///   - caCertificatePath: A PEM file of the roots to trust for HTTPS, if not the system's.
    ///   - datacenter: The datacenter to query, if not the agent's own.
    ///   - token: The ACL token, if any.
    ///   - requestTimeout: The time a request other than a blocking query may take.
    ///   - maxResponseSize: The largest response body read, in bytes.
    ///   - maxBlockingQueries: The connections kept for blocking queries (their own pool).
    /// - Throws: ``ConsulError`` with code `invalidArgument` for a malformed `CONSUL_HTTP_ADDR`
    ///   or `CONSUL_HTTP_SSL`.
    public init(
        environment: [String: String],
        host: String? = nil,
        port: Int? = nil,
        tls: Bool? = nil,
        caCertificatePath: String? = nil,
        datacenter: String? = nil,
        token: String? = nil,
        requestTimeout: Duration = .seconds(10),
        maxResponseSize: Int = 16 * 1024 * 1024,
        maxBlockingQueries: Int = 64
    ) throws(ConsulError) {
        func variable(_ name: String) -> String? {
            environment[name].flatMap { $0.isEmpty ? nil : $0 }
        }
        var addressHost: String?
        var addressPort: Int?
        var addressTLS = false
        if let address = variable("CONSUL_HTTP_ADDR") {
            (addressHost, addressPort, addressTLS) = try Self.parseAddress(address)
        }
        var sslTLS = false
        if let ssl = variable("CONSUL_HTTP_SSL") {
            guard let value = Self.parseGoBool(ssl) else {
                throw ConsulError(code: .invalidArgument, message: "CONSUL_HTTP_SSL '\(ssl)' is not a boolean")
            }
            sslTLS = value
        }
        self.init(
            host: host ?? addressHost ?? "127.0.0.1",
            port: port ?? addressPort,
            // As Consul's own client: an https:// address or CONSUL_HTTP_SSL=true means TLS.
            tls: tls ?? (addressTLS || sslTLS),
            caCertificatePath: caCertificatePath ?? variable("CONSUL_CACERT"),
            datacenter: datacenter ?? variable("CONSUL_DATACENTER"),
            token: token ?? variable("CONSUL_HTTP_TOKEN"),
            requestTimeout: requestTimeout,
            maxResponseSize: maxResponseSize,
            maxBlockingQueries: maxBlockingQueries
        )
    }

    /// Parses `CONSUL_HTTP_ADDR`: the host, the port if given, and whether the scheme is https.
    static func parseAddress(_ text: String) throws(ConsulError) -> (String, Int?, Bool) {
        var rest = Substring(text)
        var https = false
        if let separator = rest.firstRange(of: "://") {
            let scheme = rest[..<separator.lowerBound].lowercased()
            switch scheme {
            case "http": break
            case "https": https = true
            case "unix":
                throw ConsulError(
                    code: .invalidArgument,
                    message: "CONSUL_HTTP_ADDR '\(text)': Unix sockets are not supported"
                )
            default:
                throw ConsulError(
                    code: .invalidArgument,
                    message: "CONSUL_HTTP_ADDR '\(text)': unknown scheme '\(scheme)'"
                )
            }
            rest = rest[separator.upperBound...]
        }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        let bad = ConsulError(code: .invalidArgument, message: "CONSUL_HTTP_ADDR '\(text)' is not HOST[:PORT]")
        guard !rest.isEmpty, !rest.contains("/") else { throw bad }
        var host: Substring
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw bad }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw bad }
                portText = after.dropFirst()
            }
        } else if let colon = rest.firstIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
            guard !portText!.contains(":") else { throw bad }
        } else {
            host = rest
        }
        guard !host.isEmpty, !host.contains(where: \.isWhitespace) else { throw bad }
        var port: Int?
        if let portText {
            guard let value = Int(portText), (1...65535).contains(value) else { throw bad }
            port = value
        }
        return (String(host), port, https)
    }

    /// Go's `strconv.ParseBool`.
    static func parseGoBool(_ text: String) -> Bool? {
        switch text {
        case "1", "t", "T", "true", "TRUE", "True": true
        case "0", "f", "F", "false", "FALSE", "False": false
        default: nil
        }
    }

    /// `http(s)://host:port`, with an IPv6 host in brackets.
    public var baseURL: String {
        let host = self.host.contains(":") ? "[\(self.host)]" : self.host
        return "\(tls ? "https" : "http")://\(host):\(port)"
    }
}
