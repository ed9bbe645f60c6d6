/// A failure of a test kit helper: a wait that ran out of time, an endpoint the test told the
/// factory to refuse.
public struct TestKitError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure it is. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable {
            case timedOut, refused
        }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// A bounded wait (``pollUntil(_:timeout:interval:seen:onTimeout:_:)``,
        /// ``ManualClock/waitForSleepers(count:timeout:)``,
        /// ``ManualPublisher/waitForSubscribers(count:timeout:)``) ended before its condition held.
        public static let timedOut = Code(.timedOut)
        /// A ``RecordingEndpointFactory`` refused to make an endpoint, as the test asked with
        /// ``RecordingEndpointFactory/refuse(_:)``.
        public static let refused = Code(.refused)

        /// The code's name, such as `timedOut`.
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
