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

    /// Creates an error.
    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    /// The code and the message.
    public var description: String { "\(code): \(message)" }

    /// The error `pick()` throws on an empty set.
    public static var noEndpoints: LoadBalancerError {
        LoadBalancerError(code: .noEndpoints, message: "no endpoints available")
    }
}
