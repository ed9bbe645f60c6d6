/// A failed call to the Consul HTTP API.
///
/// Publishers carry it in band (as the `DiscoveryError.cause` of an update that keeps
/// the last good set); ``ConsulClient`` and ``ConsulRegistrar`` callers get it thrown.
public struct ConsulError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure it is. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable {
            case unavailable, timeout, httpStatus, invalidResponse, invalidArgument, rateLimited, filteredByACLs
            case shutDown
        }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// The agent could not be reached, or the connection failed mid-request.
        public static let unavailable = Code(.unavailable)
        /// The agent did not answer within the request's deadline.
        public static let timeout = Code(.timeout)
        /// The agent answered with a status other than 200; see ``ConsulError/status``.
        public static let httpStatus = Code(.httpStatus)
        /// The agent answered 200 with a body that is not what the API documents (bad JSON, wrong shape).
        public static let invalidResponse = Code(.invalidResponse)
        /// An argument cannot be sent to Consul as it is (an empty service name, a bad port, a
        /// weight outside what Consul takes, a malformed `CONSUL_HTTP_ADDR`), or the agent answered a
        /// registration with 400 (it will not take it, however often it is sent).
        public static let invalidArgument = Code(.invalidArgument)
        /// The agent answered 429 Too Many Requests (its rate limit); ``ConsulError/retryAfter`` is
        /// its `Retry-After`, when it sent one.
        public static let rateLimited = Code(.rateLimited)
        /// The agent answered, but left entries out because the ACL token may not read them
        /// (`X-Consul-Results-Filtered-By-ACLs: true`): the answer is not the service's set.
        public static let filteredByACLs = Code(.filteredByACLs)
        /// The ``ConsulClient`` was shut down; it sends nothing more.
        public static let shutDown = Code(.shutDown)

        /// The code's name, for logs and metric labels.
        public var description: String { String(describing: wrapped) }
    }

    /// What kind of failure it is.
    public var code: Code
    /// What went wrong, in words.
    public var message: String
    /// The HTTP status, for ``Code/httpStatus``.
    public var status: Int?
    /// The underlying error, if any (an AsyncHTTPClient or decoding error).
    public var cause: (any Error)?
    /// For ``Code/rateLimited``: how long the agent asked the client to wait (`Retry-After`), if it said.
    public var retryAfter: Duration?

    /// Creates an error.
    public init(
        code: Code,
        message: String,
        status: Int? = nil,
        retryAfter: Duration? = nil,
        cause: (any Error)? = nil
    ) {
        self.code = code
        self.message = message
        self.status = status
        self.retryAfter = retryAfter
        self.cause = cause
    }

    /// `code: message`, with the cause when there is one.
    public var description: String {
        if let cause { return "\(code): \(message) (\(cause))" }
        return "\(code): \(message)"
    }
}
