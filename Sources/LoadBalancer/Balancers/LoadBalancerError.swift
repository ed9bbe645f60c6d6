/// An error of the load balancer itself (not of the endpoint it called).
public struct LoadBalancerError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of error it is. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable {
            case noEndpoints, unknownInstance
        }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// The current endpoint set is empty.
        public static let noEndpoints = Code(.noEndpoints)
        /// An instance has no endpoint (a fixed cache was updated with an instance it does not hold).
        public static let unknownInstance = Code(.unknownInstance)

        /// The code's name, such as `noEndpoints`.
        public var description: String { String(describing: wrapped) }
    }

    /// What kind of error it is.
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

    /// Errors are equal when their codes and messages are (the cause is not compared).
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code && lhs.message == rhs.message }

    /// Hashes what `==` compares.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(message)
    }

    /// The error `pick()` throws on an empty set.
    public static var noEndpoints: LoadBalancerError {
        LoadBalancerError(code: .noEndpoints, message: "no endpoints available")
    }
}
