import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import NIOSSL
import ServiceLifecycle
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A small client of the Consul HTTP API (`/v1`): the health query the ``ConsulPublisher`` blocks
/// on, and the agent calls the ``ConsulRegistrar`` makes.
///
/// Every request carries the configured ACL token (`X-Consul-Token`) and datacenter (`dc`, on
/// the health query). Failures are thrown as ``ConsulError``; the caller's cancellation as
/// `CancellationError`.
///
/// **Connections.** The client owns two `HTTPClient`s, made on first use: one for blocking
/// queries, whose pool holds up to ``Configuration/maxBlockingQueries`` connections to the agent
/// (each blocking query holds one for up to its wait), and one for every other request (plain
/// reads, registrations, check passes), so that publishers blocked on the agent can never queue a
/// registrar's TTL pass behind them. Shut them down with ``shutdown()``, or run the client as a
/// `Service` (``run()`` shuts down when the service group does): list it before the publishers
/// and registrars that use it, so it stops after them. A client dropped without being shut down
/// shuts its connections down when its last copy goes.
///
/// ```swift
/// let consul = ConsulClient(configuration: try .init(environment: ProcessInfo.processInfo.environment))
/// let publisher = ConsulPublisher(service: "users", client: consul)
/// let group = ServiceGroup(services: [consul, publisher, cache, server], logger: logger)
/// ```
public struct ConsulClient: Sendable, Service {
    /// Where the agent is and how to talk to it.
    public struct Configuration: Sendable, Hashable {
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

    /// How fresh a read must be (Consul's consistency modes), and whether the agent's cache may answer.
    public struct Consistency: Sendable, Hashable, CustomStringConvertible {
        private enum Mode: Hashable, Sendable { case standard, stale, consistent }
        private let mode: Mode
        /// Answered from the agent's cache (`cached`), when set.
        public let cached: Bool
        private init(_ mode: Mode, cached: Bool = false) {
            self.mode = mode
            self.cached = cached
        }

        /// Consul's default: the leader answers, without confirming it is still the leader.
        public static let `default` = Consistency(.standard)
        /// Any server answers (`stale`): faster and available without a leader, possibly behind;
        /// the answer's age is in `X-Consul-LastContact`.
        public static let stale = Consistency(.stale)
        /// The leader answers after confirming its leadership (`consistent`): never stale, slower.
        public static let consistent = Consistency(.consistent)
        /// The agent answers from its cache (`cached`), which it fills with a stale read and
        /// keeps fresh with blocking queries of its own: the cheapest read for the servers.
        public static let cached = Consistency(.stale, cached: true)

        var queryItems: [(String, String?)] {
            switch mode {
            case .standard: cached ? [("cached", nil)] : []
            case .stale: cached ? [("cached", nil)] : [("stale", nil)]
            case .consistent: [("consistent", nil)]
            }
        }

        /// `default`, `stale`, `consistent` or `cached`.
        public var description: String {
            if cached { return "cached" }
            switch mode {
            case .standard: return "default"
            case .stale: return "stale"
            case .consistent: return "consistent"
            }
        }
    }

    /// How to reach the agent.
    public let configuration: Configuration
    private let transport: ConsulTransport

    /// Creates a client.
    ///
    /// - Parameters:
    ///   - configuration: Where the agent is, the token, the datacenter, TLS.
    ///   - httpClient: An `HTTPClient` to send every request with, in place of the two the client
    ///     would own: not owned (shut it down after the publishers and registrars that use it have
    ///     stopped), and its pool must have a connection for each blocking query plus those of the
    ///     other requests (`connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit`), or
    ///     blocking queries delay TTL passes. Default `nil`: the client owns its connections.
    public init(configuration: Configuration = Configuration(), httpClient: HTTPClient? = nil) {
        self.configuration = configuration
        self.transport = ConsulTransport(configuration: configuration, external: httpClient)
    }

    /// An `HTTPClient` configuration suited to Consul: a connection that cannot be established fails
    /// its request at once, and connecting may take `connectTimeout`.
    public static func httpClientConfiguration(connectTimeout: Duration = .seconds(2)) -> HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = TimeAmount(connectTimeout)
        return configuration
    }

    /// Shuts down the connections the client owns (not an `HTTPClient` it was given); later
    /// requests fail with ``ConsulError/Code/shutDown``. Calling it again does nothing.
    public func shutdown() async {
        await transport.shutdown()
    }

    /// Waits until the service group shuts down gracefully (or the task is cancelled), then
    /// shuts the client's connections down (``shutdown()``).
    public func run() async throws {
        try? await gracefulShutdown()
        await shutdown()
    }

    // MARK: - Health

    /// `GET /v1/health/service/NAME`: the instances of a service, with their checks.
    ///
    /// - Parameters:
    ///   - service: The service's name.
    ///   - tag: Only instances with this tag (`tag`; Consul compares tags without regard to
    ///     case); `nil` for all.
    ///   - passingOnly: Only instances whose every check passes (`passing`). Default `true`.
    ///   - consistency: The consistency mode, or the agent's cache. Default: Consul's default.
    ///   - index: Block until the service's index moves past this one (`index`); `nil` or 0 answers at once.
    ///   - wait: The longest the agent may block (`wait`); Consul's default is 5 minutes, its
    ///     limit the agent's `max_query_time` (10 minutes by default). Ignored without an `index`.
    /// - Returns: The entries, the `X-Consul-Index` to block on next, and whether ACLs filtered
    ///   the answer (`X-Consul-Results-Filtered-By-ACLs`).
    /// - Throws: ``ConsulError`` (``ConsulError/Code/rateLimited`` for a 429, with its
    ///   `Retry-After`), or `CancellationError` when the calling task is cancelled.
    public func healthService(
        _ service: String,
        tag: String? = nil,
        passingOnly: Bool = true,
        consistency: Consistency = .default,
        index: UInt64?,
        wait: Duration?
    ) async throws -> ConsulHealthResult {
        guard !service.isEmpty else {
            throw ConsulError(code: .invalidArgument, message: "the service name is empty")
        }
        var query: [(String, String?)] = []
        if passingOnly { query.append(("passing", nil)) }
        if let tag { query.append(("tag", tag)) }
        if let datacenter = configuration.datacenter { query.append(("dc", datacenter)) }
        query += consistency.queryItems
        var timeout = configuration.requestTimeout
        var blocking = false
        if let index, index > 0 {
            blocking = true
            query.append(("index", String(index)))
            if let wait, wait > .zero {
                query.append(("wait", ConsulDuration.format(wait)))
                timeout += wait + wait / 16
            } else {
                timeout += .seconds(5 * 60 + 5 * 60 / 16)
            }
        }
        let path = "/v1/health/service/" + Self.percentEncoded(service)
        let (head, body) = try await send(
            .GET,
            path: path,
            query: query,
            body: nil,
            timeout: timeout,
            blocking: blocking
        )
        guard head.status == .ok else { throw Self.statusError(head, body: body, path: path) }
        let entries = try Self.decodeHealthEntries(body.readableBytesView, path: path)
        let index = head.headers.first(name: "X-Consul-Index").flatMap {
            UInt64(String($0.filter { !$0.isWhitespace }))
        }
        let filtered = head.headers.first(name: "X-Consul-Results-Filtered-By-ACLs").map {
            Configuration.parseGoBool(String($0.filter { !$0.isWhitespace })) ?? false
        } ?? false
        return ConsulHealthResult(entries: entries, index: index, filteredByACLs: filtered)
    }

    /// Decodes the body of a health answer: a JSON list of entries (unknown fields ignored, `null`
    /// lists and maps taken as empty, a missing `Port` as 0).
    static func decodeHealthEntries(
        _ bytes: some Collection<UInt8>,
        path: String = "/v1/health/service"
    ) throws(ConsulError) -> [ConsulServiceEntry] {
        do {
            return try JSONDecoder().decode([HealthEntryJSON].self, from: Data(bytes)).map(\.entry)
        } catch {
            throw ConsulError(
                code: .invalidResponse,
                message: "the answer to \(path) is not a list of health entries",
                cause: error
            )
        }
    }

    // MARK: - Agent

    /// `PUT /v1/agent/service/register`: registers (or replaces) a service instance with its TTL check.
    ///
    /// The agent starts a TTL check as critical: pass it (``passCheck(_:note:)``) to make the
    /// instance visible to `?passing` queries. The request carries `replace-existing-checks`, so
    /// a registration that replaces an earlier one also replaces its checks (without it, Consul
    /// keeps the earlier registration's checks, and a check whose id changed would stay behind,
    /// critical, never passed again).
    ///
    /// - Throws: ``ConsulError``; `invalidArgument` for an empty id or name, a port or a passing
    ///   weight outside `1...65535`, a warning weight outside `0...65535`, and for a registration
    ///   the agent answers with 400 (it will not take it however often it is sent;
    ///   ``ConsulError/status`` is 400).
    public func register(_ registration: ConsulServiceRegistration) async throws {
        try registration.validate()
        let body: Data
        do {
            body = try JSONEncoder().encode(RegistrationJSON(registration))
        } catch {
            throw ConsulError(code: .invalidArgument, message: "the registration cannot be encoded", cause: error)
        }
        do {
            try await agentPut(
                "/v1/agent/service/register",
                query: [("replace-existing-checks", "true")],
                body: Array(body)
            )
        } catch let error as ConsulError where error.status == 400 {
            throw ConsulError(
                code: .invalidArgument,
                message: "the agent rejected the registration of \(registration.id): \(error.message)",
                status: 400
            )
        }
    }

    /// `PUT /v1/agent/check/pass/ID`: marks a TTL check passing for another TTL.
    ///
    /// - Throws: ``ConsulError``; an agent that does not know the check (it restarted, or the
    ///   service was deregistered) answers with a non-200 status (``ConsulError/Code/httpStatus``).
    public func passCheck(_ checkID: String, note: String? = nil) async throws {
        guard !checkID.isEmpty else { throw ConsulError(code: .invalidArgument, message: "the check id is empty") }
        try await agentPut(
            "/v1/agent/check/pass/" + Self.percentEncoded(checkID),
            query: note.map { [("note", $0)] } ?? []
        )
    }

    /// `PUT /v1/agent/service/deregister/ID`: removes a service instance and its checks from the agent.
    ///
    /// - Throws: ``ConsulError``.
    public func deregister(serviceID: String) async throws {
        guard !serviceID.isEmpty else { throw ConsulError(code: .invalidArgument, message: "the service id is empty") }
        try await agentPut("/v1/agent/service/deregister/" + Self.percentEncoded(serviceID))
    }

    private func agentPut(_ path: String, query: [(String, String?)] = [], body: [UInt8]? = nil) async throws {
        let (head, responseBody) = try await send(
            .PUT,
            path: path,
            query: query,
            body: body,
            timeout: configuration.requestTimeout,
            blocking: false
        )
        guard head.status == .ok else { throw Self.statusError(head, body: responseBody, path: path) }
    }

    // MARK: - Transport

    private struct Head {
        var status: HTTPResponseStatus
        var headers: HTTPHeaders
    }

    private func send(
        _ method: HTTPMethod,
        path: String,
        query: [(String, String?)],
        body: [UInt8]?,
        timeout: Duration,
        blocking: Bool
    ) async throws -> (Head, ByteBuffer) {
        let httpClient = try transport.client(blocking: blocking)
        var url = configuration.baseURL + path
        if !query.isEmpty {
            url += "?" + query.map { key, value in
                value.map { "\(key)=\(Self.percentEncoded($0))" } ?? key
            }.joined(separator: "&")
        }
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let token = configuration.token { request.headers.add(name: "X-Consul-Token", value: token) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(body)
        } else if method == .PUT {
            request.body = .bytes([])
        }
        do {
            let response = try await httpClient.execute(request, timeout: TimeAmount(timeout))
            let body = try await response.body.collect(upTo: configuration.maxResponseSize)
            return (Head(status: response.status, headers: response.headers), body)
        } catch {
            if Task.isCancelled { throw CancellationError() }
            if transport.isShutDown {
                // The request was cut short by ``shutdown()``: no later one will be answered.
                throw ConsulError(code: .shutDown, message: "the Consul client was shut down", cause: error)
            }
            if let error = error as? HTTPClientError, error == .deadlineExceeded || error == .readTimeout {
                throw ConsulError(code: .timeout, message: "\(method) \(path) did not finish within \(timeout)", cause: error)
            }
            if error is NIOTooManyBytesError {
                throw ConsulError(
                    code: .invalidResponse,
                    message: "the answer to \(path) is larger than \(configuration.maxResponseSize) bytes",
                    cause: error
                )
            }
            throw ConsulError(code: .unavailable, message: "\(method) \(path) failed", cause: error)
        }
    }

    private static func statusError(_ head: Head, body: ByteBuffer, path: String) -> ConsulError {
        // Consul explains errors in a plain-text body; keep its first line, bounded.
        let text = String(buffer: body).split(separator: "\n").first.map { String($0.prefix(200)) } ?? ""
        let message = "HTTP \(head.status.code) from \(path)" + (text.isEmpty ? "" : ": \(text)")
        if head.status == .tooManyRequests {
            return ConsulError(
                code: .rateLimited,
                message: message,
                status: 429,
                retryAfter: head.headers.first(name: "Retry-After").flatMap(parseRetryAfter)
            )
        }
        return ConsulError(code: .httpStatus, message: message, status: Int(head.status.code))
    }

    /// `Retry-After` in seconds (an HTTP date is not honoured: `nil`); at most an hour.
    static func parseRetryAfter(_ text: String) -> Duration? {
        guard let seconds = Int(String(text.filter { !$0.isWhitespace })), seconds >= 0 else { return nil }
        return .seconds(min(seconds, 3600))
    }

    /// Percent-encodes everything but RFC 3986's unreserved characters.
    static func percentEncoded(_ text: String) -> String {
        var result = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                result.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".unicodeScalars)
                result.unicodeScalars.append("%")
                result.unicodeScalars.append(hex[Int(byte >> 4)])
                result.unicodeScalars.append(hex[Int(byte & 0x0F)])
            }
        }
        return result
    }

}

/// The `HTTPClient`s of a ``ConsulClient``: made on first use, shared by its copies, shut down
/// by ``ConsulClient/shutdown()`` or, failing that, when the last copy goes.
final class ConsulTransport: Sendable {
    private enum State {
        case idle
        case running(short: HTTPClient, blocking: HTTPClient)
        case shutDown
    }

    private let configuration: ConsulClient.Configuration
    private let external: HTTPClient?
    private let state = Mutex<State>(.idle)

    init(configuration: ConsulClient.Configuration, external: HTTPClient?) {
        self.configuration = configuration
        self.external = external
    }

    /// The client for a blocking query, or for any other request.
    func client(blocking: Bool) throws -> HTTPClient {
        return try state.withLock { state throws -> HTTPClient in
            if let external {
                if case .shutDown = state {
                    throw ConsulError(code: .shutDown, message: "the Consul client was shut down")
                }
                return external
            }
            switch state {
            case .running(let short, let blockingClient):
                return blocking ? blockingClient : short
            case .shutDown:
                throw ConsulError(code: .shutDown, message: "the Consul client was shut down")
            case .idle:
                var base = ConsulClient.httpClientConfiguration()
                if configuration.tls, let path = configuration.caCertificatePath {
                    var tls = TLSConfiguration.makeClientConfiguration()
                    do {
                        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(path))
                    } catch {
                        throw ConsulError(
                            code: .invalidArgument,
                            message: "the CA certificates in \(path) cannot be read",
                            cause: error
                        )
                    }
                    base.tlsConfiguration = tls
                }
                var shortConfiguration = base
                shortConfiguration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 8
                var blockingConfiguration = base
                blockingConfiguration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit =
                    max(1, configuration.maxBlockingQueries)
                let short = HTTPClient(eventLoopGroupProvider: .singleton, configuration: shortConfiguration)
                let blockingClient = HTTPClient(
                    eventLoopGroupProvider: .singleton,
                    configuration: blockingConfiguration
                )
                state = .running(short: short, blocking: blockingClient)
                return blocking ? blockingClient : short
            }
        }
    }

    /// Whether ``shutdown()`` was called.
    var isShutDown: Bool {
        state.withLock { state in
            if case .shutDown = state { return true }
            return false
        }
    }

    func shutdown() async {
        let clients = state.withLock { state -> [HTTPClient] in
            defer { state = .shutDown }
            if case .running(let short, let blocking) = state { return [short, blocking] }
            return []
        }
        for client in clients { try? await client.shutdown() }
    }

    deinit {
        // Not shut down by its owner: release the connections anyway (AsyncHTTPClient requires it).
        let clients = state.withLock { state -> [HTTPClient] in
            if case .running(let short, let blocking) = state { return [short, blocking] }
            return []
        }
        for client in clients { _ = client.shutdown() }
    }
}
