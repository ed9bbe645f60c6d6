/// An instance string or instance fields that cannot make an ``Instance``.
public struct InstanceParseError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of problem it is. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable {
            case empty, emptyHost, invalidHost, unbracketedIPv6, missingPort, nonNumericPort, portOutOfRange
            case invalidWeight, malformedValue, emptyID, notServing, missingEndpoint
        }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// The input is empty or only whitespace.
        public static let empty = Code(.empty)
        /// The host part is empty (`:80`).
        public static let emptyHost = Code(.emptyHost)
        /// The host contains characters no host name or address may contain, or brackets are misused.
        public static let invalidHost = Code(.invalidHost)
        /// An IPv6 address without brackets (`::1:80`).
        public static let unbracketedIPv6 = Code(.unbracketedIPv6)
        /// No port (`host`, `host:`).
        public static let missingPort = Code(.missingPort)
        /// The port is not a decimal number (`host:http`).
        public static let nonNumericPort = Code(.nonNumericPort)
        /// The port is 0 or above 65535.
        public static let portOutOfRange = Code(.portOutOfRange)
        /// The weight is negative.
        public static let invalidWeight = Code(.invalidWeight)
        /// A registry value is in none of the forms ``Instance/init(registryValue:options:)`` reads, or
        /// lacks a field its form requires.
        public static let malformedValue = Code(.malformedValue)
        /// A well-formed registry value that says its instance is not to be used: a ServerSet member
        /// whose `status` is not `ALIVE`, or a Curator instance with `"enabled": false`. Publishers
        /// leave such values out without reporting them as invalid.
        public static let notServing = Code(.notServing)
        /// A ServerSet member has no entry in `additionalEndpoints` under the name
        /// ``RegistryValueOptions/serverSetEndpoint`` asks for.
        public static let missingEndpoint = Code(.missingEndpoint)
        /// An explicit instance id is empty (an id is what keys an endpoint: it must name something).
        public static let emptyID = Code(.emptyID)

        /// The code's name, such as `missingPort`.
        public var description: String { String(describing: wrapped) }
    }

    /// What is wrong.
    public var code: Code
    /// The text (or `host:port`) that was rejected.
    public var input: String
    /// A human-readable explanation.
    public var message: String
    /// The underlying error, if any.
    public var cause: (any Error)?

    /// Creates an error.
    public init(code: Code, input: String, message: String, cause: (any Error)? = nil) {
        self.code = code
        self.input = input
        self.message = message
        self.cause = cause
    }

    /// `invalid instance "INPUT": MESSAGE`.
    public var description: String { "invalid instance \"\(input)\": \(message)" }

    /// Errors are equal when their codes, inputs and messages are (the cause is not compared).
    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.code == rhs.code && lhs.input == rhs.input && lhs.message == rhs.message
    }

    /// Hashes what `==` compares.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(input)
        hasher.combine(message)
    }
}
