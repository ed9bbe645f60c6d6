/// A failure of an etcd request.
public struct EtcdError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure it is. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable {
            case unavailable, unauthenticated, compacted, watchCanceled, leaseExpired, invalidArgument, closed, other
        }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// No member answered: unreachable, without a leader, or too slow.
        public static let unavailable = Code(.unavailable)
        /// The credentials were refused.
        public static let unauthenticated = Code(.unauthenticated)
        /// A watch asked for a revision that has been compacted away (see ``EtcdError/compactRevision``).
        public static let compacted = Code(.compacted)
        /// etcd cancelled a watch for another reason.
        public static let watchCanceled = Code(.watchCanceled)
        /// A lease is gone (expired or revoked).
        public static let leaseExpired = Code(.leaseExpired)
        /// A bad argument: a malformed member address, an empty key.
        public static let invalidArgument = Code(.invalidArgument)
        /// The client was shut down (``EtcdClient/shutdown()``, or its ``EtcdClient/run()`` ended).
        public static let closed = Code(.closed)
        /// Anything else; see ``EtcdError/cause``.
        public static let other = Code(.other)

        /// The code's name, such as `unavailable`.
        public var description: String { String(describing: wrapped) }
    }

    /// What kind of failure it is.
    public var code: Code
    /// A human-readable explanation.
    public var message: String
    /// For ``Code/compacted``: the oldest revision still available.
    public var compactRevision: Int64?
    /// The underlying error (a gRPC `RPCError`, usually).
    public var cause: (any Error)?

    /// Creates an error.
    public init(code: Code, message: String, compactRevision: Int64? = nil, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.compactRevision = compactRevision
        self.cause = cause
    }

    /// `etcd CODE: MESSAGE`, with the compact revision and the cause when there are.
    public var description: String {
        var text = "etcd \(code): \(message)"
        if let compactRevision { text += " (compacted to revision \(compactRevision))" }
        if let cause { text += " (\(cause))" }
        return text
    }
}
