import LoadBalancer

/// Why a publisher-fed name resolver could give the gRPC channel no endpoints.
///
/// The resolver throws it only while it has never given the channel any endpoints: then the
/// channel fails the RPCs waiting for a connection with `RPCError` code `unavailable` ("Failed to
/// resolve server name"), whose `cause` is this error, instead of letting them wait until their
/// deadline. Once the channel has endpoints, an empty or failed update leaves them in place (see
/// `NameResolvers.LoadBalancerPublisher`).
public struct PublisherResolutionError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure it is. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable {
            case noInstances, discoveryFailed, noUsableInstances
        }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// The publisher's set of instances is empty, and it reported no error: there is nothing to
        /// connect to.
        public static let noInstances = Code(.noInstances)
        /// The publisher reported a discovery error and has no instances to fall back on (it never
        /// had any, or its staleness policy dropped them). ``PublisherResolutionError/cause`` is
        /// the publisher's `DiscoveryError`.
        public static let discoveryFailed = Code(.discoveryFailed)
        /// The publisher has instances, but none of them gave an address: host names that did not
        /// resolve (or host-name resolution is off), or hosts that are not valid addresses.
        public static let noUsableInstances = Code(.noUsableInstances)

        /// The code's name, such as `noInstances`.
        public var description: String {
            switch wrapped {
            case .noInstances: "noInstances"
            case .discoveryFailed: "discoveryFailed"
            case .noUsableInstances: "noUsableInstances"
            }
        }
    }

    /// What kind of failure it is.
    public var code: Code
    /// A sentence saying what happened, for people.
    public var message: String
    /// The underlying error, if any: the publisher's `DiscoveryError`, or the last host-name
    /// resolution error.
    public var cause: (any Error)?

    /// Creates an error.
    ///
    /// - Parameters:
    ///   - code: What kind of failure it is.
    ///   - message: A sentence saying what happened.
    ///   - cause: The underlying error, if any.
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
