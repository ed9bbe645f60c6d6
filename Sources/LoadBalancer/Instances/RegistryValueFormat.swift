/// The form in which a registrar writes an instance into a registry (etcd, ZooKeeper), so that
/// clients of other stacks can discover it.
///
/// Readers need no such choice: ``Instance/init(registryValue:options:)`` recognises every form.
///
/// ```swift
/// let value = instance.registryValue(in: .curator, serviceName: "api")
/// ```
public struct RegistryValueFormat: Sendable, Hashable, CustomStringConvertible {
    private enum Wrapped: Hashable, Sendable {
        case json, hostPort
        case url(scheme: String, path: String)
        case serverSet, curator
    }
    private let wrapped: Wrapped
    private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    /// This library's JSON object (``Instance/registryJSON``): every field of the instance. The default.
    public static let json = Self(.json)
    /// `host:port` (`[v6]:port`), as go-kit's registrars write it. Only the address survives.
    public static let hostPort = Self(.hostPort)
    /// A URL, `scheme://host:port/path`, as go-kit instance strings often are.
    ///
    /// - Parameters:
    ///   - scheme: The scheme, for example `http`, `https` or `grpc` (letters, digits, `+`, `-`, `.`;
    ///     starting with a letter).
    ///   - path: What follows `host:port`, starting with `/`, or empty. Default empty.
    public static func url(scheme: String, path: String = "") -> Self { Self(.url(scheme: scheme, path: path)) }
    /// A Finagle / Aurora ServerSet member: `serviceEndpoint`, `additionalEndpoints` (from the
    /// metadata `serverset.endpoint.NAME` = `host:port`), `status` `ALIVE` and `shard` (from the
    /// metadata `serverset.shard`).
    public static let serverSet = Self(.serverSet)
    /// An Apache Curator service discovery instance (as Spring Cloud ZooKeeper reads them): `name`,
    /// `id`, `address`, `port`, `sslPort`, `payload`, `registrationTimeUTC`, `serviceType`
    /// (`DYNAMIC`) and `uriSpec`, the optional ones from the metadata keys `curator.*` that
    /// ``Instance/init(registryValue:options:)`` fills.
    public static let curator = Self(.curator)

    /// The scheme and path of a ``url(scheme:path:)`` format; `nil` for the others.
    public var url: (scheme: String, path: String)? {
        if case .url(let scheme, let path) = wrapped { return (scheme, path) }
        return nil
    }

    /// `json`, `hostPort`, `url(SCHEME://...PATH)`, `serverSet` or `curator`.
    public var description: String {
        switch wrapped {
        case .json: "json"
        case .hostPort: "hostPort"
        case .url(let scheme, let path): "url(\(scheme)://...\(path))"
        case .serverSet: "serverSet"
        case .curator: "curator"
        }
    }

    var isServerSet: Bool { wrapped == .serverSet }
    var isCurator: Bool { wrapped == .curator }
}

/// How ``Instance/init(registryValue:options:)`` reads values that offer a choice, and what
/// publishers pass it for every value.
public struct RegistryValueOptions: Sendable, Hashable {
    /// For ServerSet members: the name of the entry of `additionalEndpoints` to use instead of
    /// `serviceEndpoint` (for example `http` when `serviceEndpoint` is a Thrift port). A member
    /// without that entry is an error (``InstanceParseError/Code/missingEndpoint``). `nil`, the
    /// default, uses `serviceEndpoint`.
    public var serverSetEndpoint: String?

    /// Options; the defaults read `serviceEndpoint` of ServerSet members.
    public init(serverSetEndpoint: String? = nil) {
        self.serverSetEndpoint = serverSetEndpoint
    }

    /// The defaults.
    public static var defaults: Self { Self() }
}
