/// A failed ZooKeeper request.
public struct ZooKeeperError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure it is: ZooKeeper's own error codes, plus the client's. New codes may be
    /// added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// ZooKeeper's numeric code (KeeperException.Code), or the client's own below -1000.
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        /// Not connected, or the connection broke before the reply came.
        public static let connectionLoss = Code(rawValue: -4)
        /// The server could not decode the request.
        public static let marshallingError = Code(rawValue: -5)
        public static let operationTimeout = Code(rawValue: -7)
        public static let badArguments = Code(rawValue: -8)
        public static let noNode = Code(rawValue: -101)
        public static let noAuth = Code(rawValue: -102)
        public static let badVersion = Code(rawValue: -103)
        public static let noChildrenForEphemerals = Code(rawValue: -108)
        public static let nodeExists = Code(rawValue: -110)
        public static let notEmpty = Code(rawValue: -111)
        /// The session expired: ephemeral nodes and watches are gone; the client starts a new one.
        public static let sessionExpired = Code(rawValue: -112)
        public static let invalidACL = Code(rawValue: -114)
        public static let authFailed = Code(rawValue: -115)
        /// The server sent bytes that are not a valid reply (the connection is then dropped).
        public static let malformedResponse = Code(rawValue: -1001)
        /// A bad argument to the client: a malformed path or connect string.
        public static let invalidArgument = Code(rawValue: -1002)
        /// The client has been closed.
        public static let closed = Code(rawValue: -1003)

        public var description: String {
            switch self {
            case .connectionLoss: "connectionLoss"
            case .marshallingError: "marshallingError"
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
            default: "error \(rawValue)"
            }
        }
    }

    public var code: Code
    public var message: String
    public var cause: (any Error)?

    public init(code: Code, message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String {
        var text = "ZooKeeper \(code): \(message)"
        if let cause { text += " (\(cause))" }
        return text
    }
}
