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

        /// A bounded wait (``ManualClock/waitForSleepers(count:timeout:)``,
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

/// Polls `condition` every millisecond until it holds, for at most `timeout` (on the continuous
/// clock, whatever clock the test drives). A timeout of zero or less checks once.
///
/// - Throws: ``TestKitError`` with code ``TestKitError/Code/timedOut`` (its message says what was
///   awaited and what was last seen), or `CancellationError` when the waiting task is cancelled.
func poll(
    timeout: Duration,
    _ what: @autoclosure () -> String,
    seen: () -> String,
    until condition: () -> Bool
) async throws {
    let timeout = TestTimeScale.scaled(timeout)
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while !condition() {
        if ContinuousClock.now >= deadline {
            throw TestKitError(code: .timedOut, message: "waited \(timeout) for \(what()); \(seen())")
        }
        try await Task.sleep(for: .milliseconds(1))
    }
}
