#if !LB_FUZZ // scripts/fuzz.sh compiles this file with the core's Instance sources, in one module
    import LoadBalancer
#endif

/// One entry of `/v1/health/service/NAME`: a service instance, the node it runs on, and its checks.
///
/// Only the fields the load balancer uses are kept.
public struct ConsulServiceEntry: Sendable, Hashable {
    /// The node's name (`Node.Node`).
    public var node: String
    /// The node's address (`Node.Address`).
    public var nodeAddress: String
    /// The node's datacenter (`Node.Datacenter`), when the agent sent it.
    public var datacenter: String?
    /// The service instance's id, unique on its node (`Service.ID`).
    public var serviceID: String
    /// The service's name (`Service.Service`).
    public var serviceName: String
    /// The service instance's own address (`Service.Address`); empty when it uses the node's.
    public var serviceAddress: String
    /// The port (`Service.Port`); 0 when the agent left it out (Consul omits a zero port).
    public var port: Int
    /// The Unix socket the instance listens on instead of a port (`Service.SocketPath`), if any.
    public var socketPath: String?
    /// The tags (`Service.Tags`).
    public var tags: [String]
    /// Free-form metadata (`Service.Meta`).
    public var meta: [String: String]
    /// The weight while every check passes (`Service.Weights.Passing`); `nil` when the agent sent none.
    public var passingWeight: Int?
    /// The weight while a check warns (`Service.Weights.Warning`); `nil` when the agent sent none.
    public var warningWeight: Int?
    /// The status of each check of the entry, node checks included (`Checks[].Status`: `passing`,
    /// `warning`, `critical`, `maintenance`).
    public var checkStatuses: [String]
    /// The node's metadata (`Node.Meta`).
    public var nodeMeta: [String: String]

    /// Creates an entry.
    public init(
        node: String,
        nodeAddress: String,
        datacenter: String? = nil,
        serviceID: String,
        serviceName: String,
        serviceAddress: String = "",
        port: Int,
        socketPath: String? = nil,
        tags: [String] = [],
        meta: [String: String] = [:],
        passingWeight: Int? = nil,
        warningWeight: Int? = nil,
        checkStatuses: [String] = [],
        nodeMeta: [String: String] = [:]
    ) {
        self.node = node
        self.nodeAddress = nodeAddress
        self.datacenter = datacenter
        self.serviceID = serviceID
        self.serviceName = serviceName
        self.serviceAddress = serviceAddress
        self.port = port
        self.socketPath = socketPath
        self.tags = tags
        self.meta = meta
        self.passingWeight = passingWeight
        self.warningWeight = warningWeight
        self.checkStatuses = checkStatuses
        self.nodeMeta = nodeMeta
    }

    /// The instance's zone: the service's `zone` metadata, else its node's.
    public var zone: String? { meta["zone"] ?? nodeMeta["zone"] }

    /// Where to reach the instance: the service's address when set, else the node's (Consul's rule).
    public var address: String { serviceAddress.isEmpty ? nodeAddress : serviceAddress }
}

/// The answer of a (blocking) health query: the entries and the index to block on next.
public struct ConsulHealthResult: Sendable, Hashable {
    /// The entries, as Consul sent them.
    public var entries: [ConsulServiceEntry]
    /// The `X-Consul-Index` header, or `nil` when it was missing or not a number.
    public var index: UInt64?
    /// Whether the agent left entries out because the token may not read them
    /// (`X-Consul-Results-Filtered-By-ACLs: true`): then ``entries`` is not the service's set.
    public var filteredByACLs: Bool

    /// Creates a result.
    public init(entries: [ConsulServiceEntry], index: UInt64?, filteredByACLs: Bool = false) {
        self.entries = entries
        self.index = index
        self.filteredByACLs = filteredByACLs
    }
}

/// A service to register with the local agent (`PUT /v1/agent/service/register`), with the TTL
/// check that ``ConsulRegistrar`` keeps passing.
public struct ConsulServiceRegistration: Sendable, Hashable {
    /// A TTL check: the agent marks it critical unless it is passed at least every ``ttl``.
    public struct TTLCheck: Sendable, Hashable {
        /// How long a pass keeps the check passing. Consul's granularity is a millisecond.
        public var ttl: Duration
        /// The check's id. Default `nil`: Consul names a service's check `service:ID`.
        public var checkID: String?
        /// The check's name. Default `nil`: Consul picks one.
        public var name: String?
        /// Once the check has been critical this long, the agent deregisters the service
        /// (`DeregisterCriticalServiceAfter`; Consul's own minimum is one minute and its reaper
        /// runs every 30 s). Default `nil`: never.
        public var deregisterCriticalServiceAfter: Duration?

        /// Creates a TTL check.
        public init(
            ttl: Duration,
            checkID: String? = nil,
            name: String? = nil,
            deregisterCriticalServiceAfter: Duration? = nil
        ) {
            self.ttl = ttl
            self.checkID = checkID
            self.name = name
            self.deregisterCriticalServiceAfter = deregisterCriticalServiceAfter
        }
    }

    /// The instance's id, unique on the agent (`ID`).
    public var id: String
    /// The service's name (`Name`).
    public var name: String
    /// The instance's address (`Address`); `nil` uses the node's.
    public var address: String?
    /// The port (`Port`).
    public var port: Int
    /// Tags (`Tags`).
    public var tags: [String]
    /// Free-form metadata (`Meta`).
    public var meta: [String: String]
    /// The weight while passing (`Weights.Passing`), in `1...65535`. Default 1.
    public var passingWeight: Int
    /// The weight while warning (`Weights.Warning`), in `0...65535` (0: no share of traffic while
    /// others pass). Default 1.
    public var warningWeight: Int
    /// The TTL check.
    public var check: TTLCheck

    /// Creates a registration.
    public init(
        id: String,
        name: String,
        address: String? = nil,
        port: Int,
        tags: [String] = [],
        meta: [String: String] = [:],
        passingWeight: Int = 1,
        warningWeight: Int = 1,
        check: TTLCheck
    ) {
        self.id = id
        self.name = name
        self.address = address
        self.port = port
        self.tags = tags
        self.meta = meta
        self.passingWeight = passingWeight
        self.warningWeight = warningWeight
        self.check = check
    }

    /// The check's id as the agent knows it: ``TTLCheck/checkID``, or `service:ID`.
    public var checkID: String { check.checkID.flatMap { $0.isEmpty ? nil : $0 } ?? "service:\(id)" }

    /// Checks what Consul would reject.
    ///
    /// - Throws: ``ConsulError`` with code `invalidArgument` for an empty id or name, a port
    ///   outside `1...65535`, a passing weight outside `1...65535` or a warning weight outside
    ///   `0...65535` (Consul's rule), a TTL that is not positive, or a
    ///   negative `DeregisterCriticalServiceAfter`.
    public func validate() throws(ConsulError) {
        guard !id.isEmpty, !name.isEmpty else {
            throw ConsulError(code: .invalidArgument, message: "a registration needs an id and a name")
        }
        guard (1...65535).contains(port) else {
            throw ConsulError(code: .invalidArgument, message: "port \(port) is outside 1...65535")
        }
        // Consul's own rule: Passing in 1...65535, Warning in 0...65535 (0: no traffic while warning).
        guard (1...65535).contains(passingWeight) else {
            throw ConsulError(
                code: .invalidArgument,
                message: "the passing weight \(passingWeight) is outside 1...65535"
            )
        }
        guard (0...65535).contains(warningWeight) else {
            throw ConsulError(
                code: .invalidArgument,
                message: "the warning weight \(warningWeight) is outside 0...65535"
            )
        }
        guard check.ttl > .zero else {
            throw ConsulError(code: .invalidArgument, message: "the check's TTL must be positive")
        }
        if let after = check.deregisterCriticalServiceAfter, after < .zero {
            throw ConsulError(code: .invalidArgument, message: "DeregisterCriticalServiceAfter must not be negative")
        }
    }
}

// MARK: - Wire shapes

/// A service's `Weights`, as a health entry has them and a registration sends them (a health
/// entry's may be missing or `null`).
struct WeightsJSON: Codable {
    var passing: Int?
    var warning: Int?
    enum CodingKeys: String, CodingKey {
        case passing = "Passing"
        case warning = "Warning"
    }
}

/// The JSON of one health entry; optional where Consul may send `null`.
struct HealthEntryJSON: Decodable {
    struct NodeJSON: Decodable {
        var name: String
        var address: String
        var datacenter: String?
        var meta: [String: String]?
        enum CodingKeys: String, CodingKey {
            case name = "Node"
            case address = "Address"
            case datacenter = "Datacenter"
            case meta = "Meta"
        }
    }
    struct ServiceJSON: Decodable {
        var id: String
        var name: String
        var tags: [String]?
        var address: String?
        // Consul omits a zero port (`omitempty`), as it does for a service on a Unix socket.
        var port: Int?
        var socketPath: String?
        var meta: [String: String]?
        var weights: WeightsJSON?
        enum CodingKeys: String, CodingKey {
            case id = "ID"
            case name = "Service"
            case tags = "Tags"
            case address = "Address"
            case port = "Port"
            case meta = "Meta"
            case weights = "Weights"
            case socketPath = "SocketPath"
        }
    }
    struct CheckJSON: Decodable {
        var status: String
        enum CodingKeys: String, CodingKey { case status = "Status" }
    }
    var node: NodeJSON
    var service: ServiceJSON
    var checks: [CheckJSON]?
    enum CodingKeys: String, CodingKey {
        case node = "Node"
        case service = "Service"
        case checks = "Checks"
    }

    var entry: ConsulServiceEntry {
        ConsulServiceEntry(
            node: node.name,
            nodeAddress: node.address,
            datacenter: node.datacenter,
            serviceID: service.id,
            serviceName: service.name,
            serviceAddress: service.address ?? "",
            port: service.port ?? 0,
            socketPath: service.socketPath.flatMap { $0.isEmpty ? nil : $0 },
            tags: service.tags ?? [],
            meta: service.meta ?? [:],
            passingWeight: service.weights?.passing,
            warningWeight: service.weights?.warning,
            checkStatuses: (checks ?? []).map(\.status),
            nodeMeta: node.meta ?? [:]
        )
    }
}

/// The JSON body of `PUT /v1/agent/service/register`.
struct RegistrationJSON: Encodable {
    struct CheckJSON: Encodable {
        var checkID: String?
        var name: String?
        var ttl: String
        var deregisterCriticalServiceAfter: String?
        enum CodingKeys: String, CodingKey {
            case checkID = "CheckID"
            case name = "Name"
            case ttl = "TTL"
            case deregisterCriticalServiceAfter = "DeregisterCriticalServiceAfter"
        }
    }
    var id: String
    var name: String
    var address: String?
    var port: Int
    var tags: [String]
    var meta: [String: String]
    var weights: WeightsJSON
    var check: CheckJSON
    enum CodingKeys: String, CodingKey {
        case id = "ID"
        case name = "Name"
        case address = "Address"
        case port = "Port"
        case tags = "Tags"
        case meta = "Meta"
        case weights = "Weights"
        case check = "Check"
    }

    init(_ registration: ConsulServiceRegistration) {
        id = registration.id
        name = registration.name
        address = registration.address
        port = registration.port
        tags = registration.tags
        meta = registration.meta
        weights = WeightsJSON(passing: registration.passingWeight, warning: registration.warningWeight)
        check = CheckJSON(
            checkID: registration.check.checkID,
            name: registration.check.name,
            ttl: ConsulDuration.format(registration.check.ttl),
            deregisterCriticalServiceAfter: registration.check.deregisterCriticalServiceAfter.map(ConsulDuration.format)
        )
    }
}

/// Durations as Consul reads them (Go's `time.ParseDuration`): whole milliseconds, `"1500ms"`.
enum ConsulDuration {
    static func format(_ duration: Duration) -> String {
        "\(max(1, milliseconds(duration)))ms"
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        Int64((duration / .milliseconds(1)).rounded(.towardZero))
    }
}

extension ConsulServiceEntry {
    /// Whether the entry has every one of `tags`, compared as Consul compares them: without
    /// regard to case.
    func hasTags(_ tags: [String]) -> Bool {
        let own = Set(self.tags.map { $0.lowercased() })
        return tags.allSatisfy { own.contains($0.lowercased()) }
    }

    /// The health of the entry as a whole: `passing` when every check passes, `warning` when
    /// the worst is a warning, `critical` otherwise (`critical` and `maintenance` checks alike).
    var aggregateStatus: String {
        if checkStatuses.allSatisfy({ $0 == "passing" }) { return "passing" }
        if checkStatuses.allSatisfy({ $0 == "passing" || $0 == "warning" }) { return "warning" }
        return "critical"
    }

    /// The instances of `entries` that have every one of `tags` (without regard to case) and are
    /// passing (or warning, with `includeWarning`), and a description of each entry that is not
    /// a valid instance (no port, a Unix socket, a bad address).
    ///
    /// A passing instance weighs `Weights.Passing`, a warning one `Weights.Warning` (1 when absent).
    static func instances(
        from entries: [ConsulServiceEntry],
        tags: [String],
        includeWarning: Bool = false
    ) -> (instances: [Instance], invalid: [String]) {
        var instances: [Instance] = []
        var invalid: [String] = []
        for entry in entries where entry.hasTags(tags) {
            let status = entry.aggregateStatus
            guard status == "passing" || (includeWarning && status == "warning") else { continue }
            let name = "entry \(entry.serviceID) on node \(entry.node)"
            if let socketPath = entry.socketPath, entry.port == 0 {
                invalid.append("\(name) listens on the Unix socket \(socketPath), not on a port")
                continue
            }
            if entry.port == 0 {
                invalid.append("\(name) has no port")
                continue
            }
            var metadata = entry.meta
            metadata["consul.node"] = entry.node
            metadata["consul.service_id"] = entry.serviceID
            if let datacenter = entry.datacenter { metadata["consul.datacenter"] = datacenter }
            if status != "passing" { metadata["consul.status"] = status }
            let weight = (status == "passing" ? entry.passingWeight : entry.warningWeight) ?? 1
            do {
                instances.append(
                    try Instance(
                        host: entry.address,
                        port: entry.port,
                        weight: max(0, weight),
                        tags: entry.tags,
                        metadata: metadata,
                        zone: entry.zone
                    )
                )
            } catch {
                invalid.append("\(name): \(error)")
            }
        }
        return (instances, invalid)
    }
}
