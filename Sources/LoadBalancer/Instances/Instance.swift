/// One discovered instance of a service: where it is, how much traffic it should get, and what
/// the registry said about it.
///
/// An instance is a value. Two instances with the same ``id`` are *the same instance* as far as
/// the ``EndpointCache`` is concerned: when a registry update keeps an id, the endpoint made for it
/// (and the connections and load state behind it) survive the update.
///
/// ```swift
/// let a = try Instance(parsing: "10.0.0.7:8080")
/// let b = try Instance(host: "::1", port: 9000, weight: 3, priority: 10)
/// print(b.id) // "[::1]:9000"
/// ```
public struct Instance: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The stable identity of the instance. Defaults to ``hostPort``.
    public var id: String
    /// The host: a DNS name, an IPv4 address or an IPv6 address (without brackets).
    public var host: String
    /// The port, in `1...65535`.
    public var port: Int
    /// The relative share of traffic the instance should get, for weight-aware balancers. Default 1.
    ///
    /// A weight of 0 means "only when nothing else is available" (as in DNS SRV, RFC 2782).
    public var weight: Int
    /// The priority level. As in DNS SRV, a *lower* value is preferred. Default 0.
    public var priority: Int
    /// Tags the registry attached to the instance (Consul tags, for example).
    public var tags: [String]
    /// Free-form metadata.
    public var metadata: [String: String]
    /// The zone (availability zone, rack, data centre) the instance runs in, for zone-aware routing
    /// (``ZoneAwareRouting``); `nil` when the registry does not say.
    public var zone: String?

    /// Creates an instance, validating the host and the port.
    ///
    /// - Parameters:
    ///   - host: A DNS name or an IP address. An IPv6 address is given without brackets.
    ///   - port: The port, in `1...65535`.
    ///   - weight: The relative weight, `>= 0`. Default 1.
    ///   - priority: The priority level; lower is preferred. Default 0.
    ///   - tags: Registry tags.
    ///   - metadata: Free-form metadata.
    ///   - zone: The instance's zone, if known.
    ///   - id: The stable id. Defaults to `host:port` (``hostPort``); when given, it must not be empty.
    /// - Throws: ``InstanceParseError`` when the host is empty or invalid, the port is out of range,
    ///   the weight is negative, or `id` is empty (``InstanceParseError/Code/emptyID``).
    public init(
        host: String,
        port: Int,
        weight: Int = 1,
        priority: Int = 0,
        tags: [String] = [],
        metadata: [String: String] = [:],
        zone: String? = nil,
        id: String? = nil
    ) throws(InstanceParseError) {
        let input = id ?? "\(host):\(port)"
        if let id, id.isEmpty {
            throw InstanceParseError(
                code: .emptyID,
                input: "\(host):\(port)",
                message: "the instance id is empty; leave it out to use host:port"
            )
        }
        try Self.validate(host: host, input: input)
        guard (1...65535).contains(port) else {
            throw InstanceParseError(
                code: .portOutOfRange,
                input: input,
                message: "port \(port) is outside 1...65535"
            )
        }
        guard weight >= 0 else {
            throw InstanceParseError(code: .invalidWeight, input: input, message: "weight \(weight) is negative")
        }
        self.host = host
        self.port = port
        self.weight = weight
        self.priority = priority
        self.tags = tags
        self.metadata = metadata
        self.zone = zone
        self.id = id ?? Self.hostPort(host: host, port: port)
    }

    /// `host:port`, with an IPv6 host in brackets (`[::1]:80`).
    public var hostPort: String { Self.hostPort(host: host, port: port) }

    /// The id, then `host:port` when it differs from the id, and the weight, priority, tags and
    /// metadata when they are not the defaults.
    public var description: String {
        var parts = [id]
        if hostPort != id { parts.append("at \(hostPort)") }
        if weight != 1 { parts.append("weight \(weight)") }
        if priority != 0 { parts.append("priority \(priority)") }
        if !tags.isEmpty { parts.append("tags \(tags.joined(separator: ","))") }
        if !metadata.isEmpty {
            parts.append(metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))
        }
        return parts.joined(separator: " ")
    }

    /// Instances order by ``id`` (then by the remaining fields, so the order is total).
    public static func < (lhs: Instance, rhs: Instance) -> Bool {
        if lhs.id != rhs.id { return lhs.id < rhs.id }
        if lhs.host != rhs.host { return lhs.host < rhs.host }
        if lhs.port != rhs.port { return lhs.port < rhs.port }
        if lhs.priority != rhs.priority { return lhs.priority < rhs.priority }
        return lhs.weight < rhs.weight
    }

    /// `host:port`, with an IPv6 host in brackets.
    public static func hostPortString(host: String, port: Int) -> String {
        hostPort(host: host, port: port)
    }

    static func hostPort(host: String, port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

extension Instance {
    /// `instances` deduplicated by id (the first wins) and ordered by id; a set already so (as
    /// publishers deliver it) is checked in one pass and returned as it is.
    package static func orderedByID(_ instances: [Instance]) -> [Instance] {
        if isOrderedByID(instances) { return instances }
        var seen = Set<String>()
        return instances.filter { seen.insert($0.id).inserted }.sorted()
    }

    /// Whether the ids of `instances` increase strictly (ordered by id, no id twice).
    package static func isOrderedByID(_ instances: [Instance]) -> Bool {
        // Read through a buffer pointer: an element is borrowed, not copied (an instance's copy
        // retains its five strings and collections; at 10,000 instances that was most of the cost).
        instances.withUnsafeBufferPointer { buffer in
            var index = 1
            while index < buffer.count {
                if !(buffer[index - 1].id < buffer[index].id) { return false }
                index += 1
            }
            return true
        }
    }
}
