import LoadBalancer

/// What a ``ConsulRegistrar`` sends besides the instance: Consul's extras (the id on the agent,
/// tags and metadata of its own, the warning weight) and the TTL check it keeps passing.
///
/// The instance gives the address (`Address`), the port, the tags and metadata (to which these add)
/// and the passing weight (`Weights.Passing`: the instance's weight, which Consul wants in
/// `1...65535`). Consul has no priority: the instance's is not sent.
public struct ConsulRegistrationOptions: Sendable, Hashable {
    /// The instance's id on the agent (`ID`), unique there. Default `nil`: the instance's id
    /// (`host:port` unless given).
    public var id: String?
    /// Tags sent after the instance's own (`Tags`), without repeating one. Default none.
    public var tags: [String]
    /// Metadata sent with the instance's own (`Meta`); these win on a shared key. Default none.
    public var meta: [String: String]
    /// The weight while warning (`Weights.Warning`), in `0...65535` (0: no share of traffic while
    /// others pass). Default 1.
    public var warningWeight: Int
    /// The TTL check (its TTL, id, name and `DeregisterCriticalServiceAfter`). Default: a 10 s TTL.
    public var check: ConsulServiceRegistration.TTLCheck

    /// Creates options; the parameters are the properties of the same names.
    public init(
        id: String? = nil,
        tags: [String] = [],
        meta: [String: String] = [:],
        warningWeight: Int = 1,
        check: ConsulServiceRegistration.TTLCheck = .init(ttl: .seconds(10))
    ) {
        self.id = id
        self.tags = tags
        self.meta = meta
        self.warningWeight = warningWeight
        self.check = check
    }
}

extension ConsulServiceRegistration {
    /// The registration of `instance` as an instance of `service`, with `options`.
    public init(instance: Instance, service: String, options: ConsulRegistrationOptions = ConsulRegistrationOptions()) {
        var tags = instance.tags
        for tag in options.tags where !tags.contains(tag) { tags.append(tag) }
        self.init(
            id: options.id ?? instance.id,
            name: service,
            address: instance.host,
            port: instance.port,
            tags: tags,
            meta: instance.metadata.merging(options.meta) { $1 },
            passingWeight: instance.weight,
            warningWeight: options.warningWeight,
            check: options.check
        )
    }
}
