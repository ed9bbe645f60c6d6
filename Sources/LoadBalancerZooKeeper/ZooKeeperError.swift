/// A failed ZooKeeper request.
public struct ZooKeeperError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure it is: ZooKeeper's own error codes, plus the client's. New codes may be
    /// added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// ZooKeeper's numeric code (KeeperException.Code), or the client's own below -1000.
        public let rawValue: Int32
        /// A code from its number.
        public init(rawValue: Int32) { self.rawValue = rawValue }

        /// Not connected, or the connection broke before the reply came.
        public static let connectionLoss = Code(rawValue: -4)
        /// The server could not decode the request.
        public static let marshallingError = Code(rawValue: -5)
        /// The server does not know the operation (a server older than the operation, such as
        /// `addWatch` before ZooKeeper 3.6).
        public static let unimplemented = Code(rawValue: -6)
        /// The operation timed out on the server.
        public static let operationTimeout = Code(rawValue: -7)
        /// The server rejected the request's arguments.
        public static let badArguments = Code(rawValue: -8)
        /// The node does not exist.
        public static let noNode = Code(rawValue: -101)
        /// The ACL does not allow the operation.
        public static let noAuth = Code(rawValue: -102)
        /// The node's version is not the one the request expected.
        public static let badVersion = Code(rawValue: -103)
        /// Ephemeral nodes cannot have children.
        public static let noChildrenForEphemerals = Code(rawValue: -108)
        /// There is no such watch to remove.
        public static let noWatcher = Code(rawValue: -121)
        /// The node already exists.
        public static let nodeExists = Code(rawValue: -110)
        /// The node has children, so it cannot be deleted.
        public static let notEmpty = Code(rawValue: -111)
        /// The session expired: ephemeral nodes and watches are gone; the client starts a new one.
        public static let sessionExpired = Code(rawValue: -112)
        /// The ACL is invalid.
        public static let invalidACL = Code(rawValue: -114)
        /// Authentication failed.
        public static let authFailed = Code(rawValue: -115)
        /// The server sent bytes that are not a valid reply (the connection is then dropped).
        public static let malformedResponse = Code(rawValue: -1001)
        /// A bad argument to the client: a malformed path or connect string.
        public static let invalidArgument = Code(rawValue: -1002)
        /// The client has been closed.
        public static let closed = Code(rawValue: -1003)
        /// The caller's task was cancelled before the reply came (the cause is a `CancellationError`).
        public static let cancelled = Code(rawValue: -1004)

        /// The code's name, such as `noNode`, or its number when it has none here.
        public var description: String {
            switch self {
            case .connectionLoss: "connectionLoss"
            case .marshallingError: "marshallingError"
            case .unimplemented: "unimplemented"
            case .noWatcher: "noWatcher"
            case .operationTimeout: "operationTimeout"
            case .badArguments: "badArguments"
            case .noNode: "noNode"
            case .noAuth: "noAuth"
            case .badVersion: "badVersion"
            case .noChildrenForEphemerals: "noChildrenForEphemerals"
            case .nodeExists: "nodeExists"
            case .notEmpty: "notEmpty"
            case .sessionExpired: "sessionExpired"
            case .invalidACL: "invalidACL"
            case .authFailed: "authFailed"
            case .malformedResponse: "malformedResponse"
            case .invalidArgument: "invalidArgument"
            case .closed: "closed"
            case .cancelled: "cancelled"
            default: "error \(rawValue)"
            }
        }
    }

    /// What kind of failure it is.
    public var code: Code
    /// A human-readable explanation.
    public var message: String
    /// The underlying error, if any.
    public var cause: (any Error)?

    /// Creates an error.
    public init(code: Code, message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// `ZooKeeper CODE: MESSAGE`, with the cause when there is one.
    public var description: String {
        var text = "ZooKeeper \(code): \(message)"
        if let cause { text += " (\(cause))" }
        return text
    }
}
