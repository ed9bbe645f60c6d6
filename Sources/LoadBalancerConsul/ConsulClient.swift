import AsyncHTTPClient
import NIOCore
import NIOHTTP1

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
/// ```swift
/// let consul = ConsulClient(configuration: .init(host: "127.0.0.1", port: 8500))
/// let result = try await consul.healthService("users", tag: "v2", index: nil, wait: nil)
/// ```
public struct ConsulClient: Sendable {
    /// Where the agent is and how to talk to it.
    public struct Configuration: Sendable, Hashable {
        /// The agent's host. Default `127.0.0.1`.
        public var host: String
        /// The agent's HTTP(S) port. Default 8500.
        public var port: Int
        /// Whether to use HTTPS. Default `false`.
        ///
        /// The TLS settings (trusted roots, client certificate, server name checks) are those of
        /// the `HTTPClient` the client uses: to trust a private CA or present a client certificate,
        /// pass an `HTTPClient` whose `configuration.tlsConfiguration` says so.
        public var tls: Bool
        /// The datacenter to query (`dc`); `nil` is the agent's own. Default `nil`.
        public var datacenter: String?
        /// The ACL token, sent as `X-Consul-Token`; `nil` sends none. Default `nil`.
        public var token: String?
        /// The time a request that does not block may take. A blocking query may take its
        /// `wait`, plus the `wait / 16` Consul may add, plus this. Default 10 s.
        public var requestTimeout: Duration
        /// The largest response body read, in bytes. Default 16 MiB.
        public var maxResponseSize: Int

        /// Creates a configuration.
        public init(
            host: String = "127.0.0.1",
            port: Int = 8500,
            tls: Bool = false,
            datacenter: String? = nil,
            token: String? = nil,
            requestTimeout: Duration = .seconds(10),
            maxResponseSize: Int = 16 * 1024 * 1024
        ) {
            self.host = host
            self.port = port
            self.tls = tls
            self.datacenter = datacenter
            self.token = token
            self.requestTimeout = requestTimeout
            self.maxResponseSize = maxResponseSize
        }

        /// `http(s)://host:port`, with an IPv6 host in brackets.
        public var baseURL: String {
            let host = self.host.contains(":") ? "[\(self.host)]" : self.host
            return "\(tls ? "https" : "http")://\(host):\(port)"
        }
    }

    /// How to reach the agent.
    public let configuration: Configuration
    private let httpClient: HTTPClient

    /// Creates a client.
    ///
    /// - Parameters:
    ///   - configuration: Where the agent is, the token, the datacenter, TLS.
    ///   - httpClient: The `HTTPClient` to send requests with. Default: one process-wide client
    ///     whose refused connections fail at once (so a down agent is reported, and backed off
    ///     from, without waiting for the request's deadline). A client you pass is not owned: shut
    ///     it down after the publishers and registrars that use it have stopped.
    public init(configuration: Configuration = Configuration(), httpClient: HTTPClient? = nil) {
        self.configuration = configuration
        self.httpClient = httpClient ?? sharedConsulHTTPClient
    }

    /// An `HTTPClient` configuration suited to Consul: a connection that cannot be established fails
    /// its request at once, and connecting may take `connectTimeout`.
    public static func httpClientConfiguration(connectTimeout: Duration = .seconds(2)) -> HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = timeAmount(connectTimeout)
        return configuration
    }

    // MARK: - Health

    /// `GET /v1/health/service/NAME`: the instances of a service, with their checks.
    ///
    /// - Parameters:
    ///   - service: The service's name.
    ///   - tag: Only instances with this tag (`tag`); `nil` for all.
    ///   - passingOnly: Only instances whose every check passes (`passing`). Default `true`.
    ///   - index: Block until the service's index moves past this one (`index`); `nil` or 0 answers at once.
    ///   - wait: The longest the agent may block (`wait`); Consul's default is 5 minutes, its
    ///     limit 10. Ignored without an `index`.
    /// - Returns: The entries and the `X-Consul-Index` to block on next.
    /// - Throws: ``ConsulError``, or `CancellationError` when the calling task is cancelled.
    public func healthService(
        _ service: String,
        tag: String? = nil,
        passingOnly: Bool = true,
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
        var timeout = configuration.requestTimeout
        if let index, index > 0 {
            query.append(("index", String(index)))
            if let wait {
                query.append(("wait", ConsulDuration.format(wait)))
                timeout += wait + wait / 16
            } else {
                timeout += .seconds(5 * 60 + 5 * 60 / 16)
            }
        }
        let path = "/v1/health/service/" + Self.percentEncoded(service)
        let (head, body) = try await send(.GET, path: path, query: query, body: nil, timeout: timeout)
        guard head.status == .ok else { throw Self.statusError(head.status, body: body, path: path) }
        let entries: [HealthEntryJSON]
        do {
            entries = try JSONDecoder().decode([HealthEntryJSON].self, from: Data(body.readableBytesView))
        } catch {
            throw ConsulError(
                code: .invalidResponse,
                message: "the answer to \(path) is not a list of health entries",
                cause: error
            )
        }
        let index = head.headers.first(name: "X-Consul-Index").flatMap {
            UInt64(String($0.filter { !$0.isWhitespace }))
        }
        return ConsulHealthResult(entries: entries.map(\.entry), index: index)
    }

    // MARK: - Agent

    /// `PUT /v1/agent/service/register`: registers (or replaces) a service instance with its TTL check.
    ///
    /// The agent starts a TTL check as critical: pass it (``passCheck(_:note:)``) to make the
    /// instance visible to `?passing` queries.
    ///
    /// - Throws: ``ConsulError``; `invalidArgument` for an empty id or name, a port outside
    ///   `1...65535` or a negative weight.
    public func register(_ registration: ConsulServiceRegistration) async throws {
        try registration.validate()
        let body: Data
        do {
            body = try JSONEncoder().encode(RegistrationJSON(registration))
        } catch {
            throw ConsulError(code: .invalidArgument, message: "the registration cannot be encoded", cause: error)
        }
        try await agentPut("/v1/agent/service/register", body: Array(body))
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
            timeout: configuration.requestTimeout
        )
        guard head.status == .ok else { throw Self.statusError(head.status, body: responseBody, path: path) }
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
        timeout: Duration
    ) async throws -> (Head, ByteBuffer) {
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
            let response = try await httpClient.execute(request, timeout: Self.timeAmount(timeout))
            let body = try await response.body.collect(upTo: configuration.maxResponseSize)
            return (Head(status: response.status, headers: response.headers), body)
        } catch {
            if Task.isCancelled { throw CancellationError() }
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

    private static func statusError(_ status: HTTPResponseStatus, body: ByteBuffer, path: String) -> ConsulError {
        // Consul explains errors in a plain-text body; keep its first line, bounded.
        let text = String(buffer: body).split(separator: "\n").first.map { String($0.prefix(200)) } ?? ""
        return ConsulError(
            code: .httpStatus,
            message: "HTTP \(status.code) from \(path)" + (text.isEmpty ? "" : ": \(text)"),
            status: Int(status.code)
        )
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

    static func timeAmount(_ duration: Duration) -> TimeAmount {
        let (seconds, attoseconds) = duration.components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

/// The process-wide `HTTPClient` of ``ConsulClient``s given none: like AsyncHTTPClient's shared
/// client, never shut down.
private let sharedConsulHTTPClient = HTTPClient(
    eventLoopGroupProvider: .singleton,
    configuration: ConsulClient.httpClientConfiguration()
)
