/// A call through ``Retry`` failed: why it stopped, and every attempt it made.
///
/// Its description lists the attempts on one line:
///
/// ```
/// all 3 attempts failed: #1 10.0.0.1:80 after 2ms: connection refused; #2 10.0.0.2:80 after 1ms: HTTP 503; #3 (no endpoint): noEndpoints: no endpoints available
/// ```
///
/// The description stays bounded however many attempts were made: past
/// ``describedAttemptsLimit`` attempts it shows the first ``describedHead`` and the last
/// ``describedTail`` and counts the rest (`... 993 more attempts ...`); each attempt's line is
/// cut at ``describedAttemptLength`` characters. ``attempts`` keeps every attempt, in full, as data.
public struct RetryError: Error, Sendable, CustomStringConvertible {
    /// Why retrying stopped.
    public struct Reason: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable {
            case attemptsExhausted, notRetryable, timedOut, budgetExhausted
        }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// Every allowed attempt failed.
        public static let attemptsExhausted = Reason(.attemptsExhausted)
        /// The decision callback (or the error's nature) said not to retry.
        public static let notRetryable = Reason(.notRetryable)
        /// The overall timeout expired.
        public static let timedOut = Reason(.timedOut)
        /// The ``RetryBudget`` was empty: the call failed fast instead of retrying.
        public static let budgetExhausted = Reason(.budgetExhausted)

        /// The reason's name, such as `attemptsExhausted`.
        public var description: String { String(describing: wrapped) }
    }

    /// One attempt and how it failed.
    public struct Attempt: Sendable, CustomStringConvertible {
        /// The attempt's number, from 1.
        public var number: Int
        /// The instance called, or `nil` when no endpoint could be picked.
        public var instance: Instance?
        /// How it failed.
        public var error: any Error
        /// How long it took.
        public var duration: Duration

        /// Creates the record of one attempt.
        public init(number: Int, instance: Instance?, error: any Error, duration: Duration) {
            self.number = number
            self.instance = instance
            self.error = error
            self.duration = duration
        }

        /// `#number instance after duration: error`.
        public var description: String {
            let target = instance?.id ?? "(no endpoint)"
            return "#\(number) \(target) after \(duration.formatted()): \(error)"
        }
    }

    /// Why retrying stopped.
    public var reason: Reason
    /// Every attempt, in order.
    public var attempts: [Attempt]
    /// The overall timeout that applied.
    public var timeout: Duration

    /// Creates an error from the reason and the attempts made.
    public init(reason: Reason, attempts: [Attempt], timeout: Duration) {
        self.reason = reason
        self.attempts = attempts
        self.timeout = timeout
    }

    /// The last attempt's error.
    public var lastError: (any Error)? { attempts.last?.error }

    /// The errors' shared name for ``Reason``.
    public typealias Code = Reason

    /// Why retrying stopped: ``reason``, under the name every error of the package uses.
    public var code: Code {
        get { reason }
        set { reason = newValue }
    }

    /// Why retrying stopped, and after how many attempts (the description without the attempts).
    public var message: String {
        let count = "\(attempts.count) attempt\(attempts.count == 1 ? "" : "s")"
        switch reason {
        case .timedOut: return "timed out after \(timeout.formatted()) and \(count)"
        case .notRetryable: return "stopped after \(count) (not retryable)"
        case .budgetExhausted: return "stopped after \(count) (retry budget exhausted)"
        default: return "all \(attempts.count) attempts failed"
        }
    }

    /// The last attempt's error (``lastError``).
    public var cause: (any Error)? { lastError }

    /// How many attempts the description lists in full; beyond it, only the first and the last few.
    public static let describedAttemptsLimit = 8
    /// How many of the first attempts a long description shows.
    public static let describedHead = 3
    /// How many of the last attempts a long description shows.
    public static let describedTail = 3
    /// How many characters of one attempt's line (number, instance, duration, error) the
    /// description keeps.
    public static let describedAttemptLength = 240

    /// Why retrying stopped, then the attempts (`#number instance after duration: error`); at
    /// most ``describedAttemptsLimit`` of them, the others counted.
    public var description: String {
        let head = message
        if attempts.isEmpty { return head }
        let shown: [String]
        if attempts.count <= Self.describedAttemptsLimit {
            shown = attempts.map(Self.bounded)
        } else {
            let hidden = attempts.count - Self.describedHead - Self.describedTail
            shown =
                attempts.prefix(Self.describedHead).map(Self.bounded)
                + ["... \(hidden) more attempt\(hidden == 1 ? "" : "s") ..."]
                + attempts.suffix(Self.describedTail).map(Self.bounded)
        }
        return head + ": " + shown.joined(separator: "; ")
    }

    /// One attempt's description, cut at ``describedAttemptLength`` characters.
    private static func bounded(_ attempt: Attempt) -> String {
        let text = attempt.description
        guard text.count > describedAttemptLength else { return text }
        return String(text.prefix(describedAttemptLength)) + "..."
    }
}

extension Duration {
    /// A short human form: `850us`, `12.3ms`, `1.5s`.
    func formatted() -> String {
        let totalMicros = nanosecondsValue / 1_000
        if totalMicros < 1_000 { return "\(Int(totalMicros.rounded()))us" }
        if totalMicros < 1_000_000 { return "\(rounded(totalMicros / 1_000))ms" }
        return "\(rounded(totalMicros / 1_000_000))s"
    }

    private func rounded(_ value: Double) -> String {
        let tenths = (value * 10).rounded() / 10
        return tenths == tenths.rounded() ? "\(Int(tenths))" : "\(tenths)"
    }
}
