/// A failure of service discovery, carried in band in an ``InstanceUpdate``.
public struct DiscoveryError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure it is. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable {
            case registryUnavailable, invalidInstances, invalidated, notFound, notReady, closed, other
        }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// The registry could not be reached or did not answer in time.
        public static let registryUnavailable = Code(.registryUnavailable)
        /// Some instance descriptions could not be parsed; the good ones are published.
        public static let invalidInstances = Code(.invalidInstances)
        /// Failures outlasted the ``StalenessPolicy``: the last good set was dropped.
        public static let invalidated = Code(.invalidated)
        /// The registry said the service does not exist.
        public static let notFound = Code(.notFound)
        /// ``EndpointCache/waitUntilReady(timeout:clock:)`` gave up: the registry has not answered
        /// in time (the cause is its last error, if any).
        public static let notReady = Code(.notReady)
        /// The publisher stopped because its registry client was closed; no more updates follow.
        public static let closed = Code(.closed)
        /// Any other failure; see ``DiscoveryError/cause``.
        public static let other = Code(.other)

        /// The code's name, such as `registryUnavailable`.
        public var description: String { String(describing: wrapped) }
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

    /// The code and the message, and the cause when there is one.
    public var description: String {
        if let cause { return "\(code): \(message) (\(cause))" }
        return "\(code): \(message)"
    }
}
