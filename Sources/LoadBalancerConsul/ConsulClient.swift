import AsyncHTTPClient
import LoadBalancer
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
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
/// queries, whose pool holds up to ``ConsulConfiguration/maxBlockingQueries`` connections to the
/// agent (each blocking query holds one for up to its wait), and one for every other request
/// (plain reads, registrations, check passes), so that publishers blocked on the agent can never
/// queue a registrar's TTL pass behind them. Both run on the `eventLoopGroup` given to
/// ``init(configuration:httpClient:eventLoopGroup:logger:)``.
///
/// The client is a `Service`, as every registry client of the package: ``run()`` holds until the
/// task is cancelled, the service group shuts down gracefully, or ``shutdown()`` is called, and
/// then shuts the connections down; from then on every request fails with
/// ``ConsulError/Code/shutDown``. List it before the publishers and registrars that use it, so it
/// stops after them. A client dropped without being shut down shuts its connections down when it
/// goes.
///
/// ```swift
/// let consul = ConsulClient(configuration: try ConsulConfiguration(environment: ProcessInfo.processInfo.environment))
/// let publisher = ConsulPublisher(service: "users", client: consul)
/// let group = ServiceGroup(services: [consul, publisher, cache, server], logger: logger)
/// ```
public final class ConsulClient: Service, Sendable {
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
    public let configuration: ConsulConfiguration
    private let transport: ConsulTransport
    private let logger: Logger
    private let signal = ShutdownSignal()

    /// Creates a client.
    ///
    /// - Parameters:
    ///   - configuration: Where the agent is, the token, the datacenter, TLS.
    ///   - httpClient: An `HTTPClient` to send every request with, in place of the two the client
    ///     would own: not owned (shut it down after the publishers and registrars that use it have
    ///     stopped), and its pool must have a connection for each blocking query plus those of the
    ///     other requests (`connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit`), or
    ///     blocking queries delay TTL passes. Default `nil`: the client owns its connections.
    ///   - eventLoopGroup: Where the connections the client owns run (unused with `httpClient`).
    ///     Default: NIO's shared group.
    ///   - logger: Where to log. Default: nowhere.
    public init(
        configuration: ConsulConfiguration = ConsulConfiguration(),
        httpClient: HTTPClient? = nil,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "loadbalancer.consul", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.configuration = configuration
        self.logger = logger
        self.transport = ConsulTransport(configuration: configuration, external: httpClient, eventLoopGroup: eventLoopGroup)
    }

    /// An `HTTPClient` configuration suited to Consul: a connection that cannot be established fails
    /// its request at once, and connecting may take `connectTimeout`.
    public static func httpClientConfiguration(connectTimeout: Duration = .seconds(2)) -> HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = TimeAmount(connectTimeout)
        return configuration
    }

    /// Shuts the client down: the connections it owns are shut down (not an `HTTPClient` it was
    /// given), requests in flight and later ones fail with ``ConsulError/Code/shutDown``, and
    /// ``run()`` returns. Calling it again does nothing.
    public func shutdown() async {
        signal.fire()
        await transport.shutdown()
    }

    /// Whether the client has been shut down: every request fails with
    /// ``ConsulError/Code/shutDown`` from then on.
    public var isShutDown: Bool { transport.isShutDown }

    /// Holds until the task is cancelled, the service group shuts down gracefully or
    /// ``shutdown()`` is called; then shuts the client down (``shutdown()``). Never throws today;
    /// `throws` is the signature every registry client's `run()` shares.
    public func run() async throws {
        await signal.waitForShutdown()
        await shutdown()
        logger.debug("Consul client shut down")
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
        let filtered =
            head.headers.first(name: "X-Consul-Results-Filtered-By-ACLs").map {
                ConsulConfiguration.parseGoBool(String($0.filter { !$0.isWhitespace })) ?? false
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
            url +=
                "?"
                + query.map { key, value in
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
        let maxResponseSize = configuration.maxResponseSize
        let prepared = request
        do {
            // Cut short by ``shutdown()``: a blocking query may otherwise be held for minutes, on
            // an `HTTPClient` the client was given (whose shutdown is its owner's) as on its own.
            return try await signal.cuttingShort(
                {
                    let response = try await httpClient.execute(prepared, timeout: TimeAmount(timeout))
                    let body = try await response.body.collect(upTo: maxResponseSize)
                    return (Head(status: response.status, headers: response.headers), body)
                }, with: { ConsulError.shutDown() })
        } catch let error as ConsulError where error.code == .shutDown {
            throw error
        } catch {
            if Task.isCancelled { throw CancellationError() }
            if transport.isShutDown {
                // The request was cut short by ``shutdown()``: no later one will be answered.
                throw ConsulError.shutDown(cause: error)
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

    private let configuration: ConsulConfiguration
    private let external: HTTPClient?
    private let state = Mutex<State>(.idle)

    private let eventLoopGroup: any EventLoopGroup

    init(configuration: ConsulConfiguration, external: HTTPClient?, eventLoopGroup: any EventLoopGroup) {
        self.configuration = configuration
        self.external = external
        self.eventLoopGroup = eventLoopGroup
    }

    /// The client for a blocking query, or for any other request.
    func client(blocking: Bool) throws -> HTTPClient {
        return try state.withLock { state throws -> HTTPClient in
            if let external {
                if case .shutDown = state {
                    throw ConsulError.shutDown()
                }
                return external
            }
            switch state {
            case .running(let short, let blockingClient):
                return blocking ? blockingClient : short
            case .shutDown:
                throw ConsulError.shutDown()
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
                let short = HTTPClient(eventLoopGroupProvider: .shared(eventLoopGroup), configuration: shortConfiguration)
                let blockingClient = HTTPClient(
                    eventLoopGroupProvider: .shared(eventLoopGroup),
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

extension ConsulError {
    /// The error of a request made or ended by the client's shutdown.
    static func shutDown(cause: (any Error)? = nil) -> ConsulError {
        ConsulError(code: .shutDown, message: "the Consul client was shut down", cause: cause)
    }
}
