/// An error lbctl reports as one line on stderr: a mistake in the command line (exit status 2) or
/// a run that cannot go on (exit status 1).
struct LbctlError: Error, CustomStringConvertible {
    /// What kind of error it is.
    struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable { case usage, run }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// A mistake in the command line: exit status 2.
        static let usage = Code(.usage)
        /// A run that cannot go on: exit status 1.
        static let run = Code(.run)

        /// The code's name, such as `usage`.
        var description: String { String(describing: wrapped) }
    }

    /// What kind of error it is.
    var code: Code
    /// The line printed.
    var message: String
    /// The underlying error, if any.
    var cause: (any Error)?

    /// Creates an error.
    init(code: Code, message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// A mistake in the command line.
    static func usage(_ message: String, cause: (any Error)? = nil) -> LbctlError {
        LbctlError(code: .usage, message: message, cause: cause)
    }

    /// A run that cannot go on.
    static func run(_ message: String, cause: (any Error)? = nil) -> LbctlError {
        LbctlError(code: .run, message: message, cause: cause)
    }

    /// The exit status: 2 for a usage mistake, 1 otherwise.
    var exitStatus: Int32 { code == .usage ? 2 : 1 }

    /// The message (it already names the cause where one helps).
    var description: String { message }
}
