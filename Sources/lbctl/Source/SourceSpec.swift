import Foundation
import LoadBalancer
import LoadBalancerConsul
import LoadBalancerDNS
import LoadBalancerEtcd
import LoadBalancerZooKeeper
import ServiceLifecycle

/// Where `lbctl` finds instances: the `SOURCE` argument of every subcommand.
///
/// ```
/// static://h1:p1,h2:p2
/// dns+srv://[NAMESERVER:PORT/]_svc._proto.name
/// dns://[NAMESERVER:PORT/]name:port
/// etcd://HOST:PORT[,HOST:PORT...]/prefix[?endpoint=NAME]
/// zk://HOST:PORT[,HOST:PORT...]/path[?endpoint=NAME]
/// consul://HOST:PORT/service?tag=a&tag=b&dc=x&token=t
/// ```
enum SourceSpec: Equatable {
    case fixed([Instance])
    case dnsSRV(nameserver: String?, name: String)
    case dns(nameserver: String?, name: String, port: Int)
    /// `endpoint`: the ServerSet additional endpoint to use (`RegistryValueOptions.serverSetEndpoint`).
    case etcd(endpoints: [String], prefix: String, endpoint: String? = nil)
    case zookeeper(servers: [String], path: String, endpoint: String? = nil)
    case consul(address: String, service: String, tags: [String], datacenter: String?, token: String?)

    static let help = """
        SOURCE is one of:
          static://HOST:PORT[,HOST:PORT...]
          dns+srv://[NAMESERVER:PORT/]_service._proto.name
          dns://[NAMESERVER:PORT/]name:port
          etcd://HOST:PORT[,HOST:PORT...]/prefix[?endpoint=NAME]
          zk://HOST:PORT[,HOST:PORT...]/path[?endpoint=NAME]
          consul://HOST:PORT/service?tag=a&tag=b&dc=x&token=t
        static is a fixed list ([v6]:port for IPv6); dns+srv reads SRV records
        (priority and weight kept); dns reads A/AAAA records, one instance per
        address; etcd reads the v3 keys under a prefix; zk the children of a
        path (values: host:port, go-kit URLs, this library's JSON, Finagle
        ServerSet members, Curator instances; endpoint=NAME uses a ServerSet
        member's additional endpoint NAME); consul the passing instances of a service through the agent at
        HOST:PORT (HTTP, or HTTPS with CONSUL_HTTP_SSL=true), kept current with
        blocking queries: every tag must match (case aside), dc picks the
        datacenter, token is the ACL token (else CONSUL_HTTP_TOKEN).
        """

    /// The scheme's name, for messages.
    var scheme: String {
        switch self {
        case .fixed: "static"
        case .dnsSRV: "dns+srv"
        case .dns: "dns"
        case .etcd: "etcd"
        case .zookeeper: "zk"
        case .consul: "consul"
        }
    }

    /// Parses a source, or throws a one-line ``LbctlError``.
    init(parsing text: String) throws {
        guard let separator = text.range(of: "://") else {
            throw LbctlError.usage("invalid source '\(text)': expected SCHEME://..., for example static://127.0.0.1:8080")
        }
        let scheme = text[..<separator.lowerBound].lowercased()
        let rest = String(text[separator.upperBound...])
        func nonEmpty(_ what: String) throws {
            if rest.isEmpty { throw LbctlError.usage("invalid source '\(text)': \(what) is missing") }
        }
        switch scheme {
        case "static":
            try nonEmpty("the instance list")
            let entries = rest.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            var instances: [Instance] = []
            for entry in entries {
                do {
                    instances.append(try Instance(parsing: entry))
                } catch {
                    throw LbctlError.usage("invalid source '\(text)': \(error)")
                }
            }
            self = .fixed(instances)
        case "dns+srv":
            try nonEmpty("the SRV name")
            let (nameserver, name) = try Self.splitNameserver(rest, source: text)
            guard name.hasPrefix("_"), name.contains("._") else {
                throw LbctlError.usage("invalid source '\(text)': an SRV name looks like _service._proto.name")
            }
            self = .dnsSRV(nameserver: nameserver, name: name)
        case "dns":
            try nonEmpty("the name")
            let (nameserver, hostPort) = try Self.splitNameserver(rest, source: text)
            do {
                let (host, port) = try Instance.parseHostPort(hostPort)
                self = .dns(nameserver: nameserver, name: host, port: port)
            } catch {
                throw LbctlError.usage("invalid source '\(text)': \(error)")
            }
        case "etcd", "zk":
            guard let slash = rest.firstIndex(of: "/") else {
                throw LbctlError.usage("invalid source '\(text)': expected \(scheme)://HOST:PORT[,HOST:PORT...]/path")
            }
            let servers = try Self.parseServers(String(rest[..<slash]), source: text)
            var path = String(rest[slash...])
            var endpoint: String?
            if let question = path.firstIndex(of: "?") {
                let query = path[path.index(after: question)...]
                path = String(path[..<question])
                for item in query.split(separator: "&") {
                    let pair = item.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
                    guard pair.count == 2, !pair[1].isEmpty else {
                        throw LbctlError.usage("invalid source '\(text)': malformed query item '\(item)'")
                    }
                    guard pair[0] == "endpoint" else {
                        throw LbctlError.usage("invalid source '\(text)': unknown query key '\(pair[0])' (expected endpoint)")
                    }
                    endpoint = pair[1]
                }
            }
            guard path.count > 1 else { throw LbctlError.usage("invalid source '\(text)': the path is missing") }
            self =
                scheme == "etcd"
                ? .etcd(endpoints: servers, prefix: path, endpoint: endpoint)
                : .zookeeper(servers: servers, path: path, endpoint: endpoint)
        case "consul":
            guard let slash = rest.firstIndex(of: "/") else {
                throw LbctlError.usage("invalid source '\(text)': expected consul://HOST:PORT/service")
            }
            let address = try Self.parseServers(String(rest[..<slash]), source: text)
            guard address.count == 1 else { throw LbctlError.usage("invalid source '\(text)': consul takes one agent address") }
            var service = String(rest[rest.index(after: slash)...])
            var tags: [String] = []
            var datacenter: String?
            var token: String?
            if let question = service.firstIndex(of: "?") {
                let query = service[service.index(after: question)...]
                service = String(service[..<question])
                for item in query.split(separator: "&") {
                    // Values may be percent-encoded (a tag with '&' in it, say).
                    let pair = item.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
                    guard pair.count == 2, !pair[1].isEmpty else {
                        throw LbctlError.usage("invalid source '\(text)': malformed query item '\(item)'")
                    }
                    switch pair[0] {
                    case "tag": tags.append(pair[1])
                    case "dc": datacenter = pair[1]
                    case "token": token = pair[1]
                    default:
                        throw LbctlError.usage("invalid source '\(text)': unknown query key '\(pair[0])' (expected tag, dc or token)")
                    }
                }
            }
            guard !service.isEmpty, !service.contains("/") else {
                throw LbctlError.usage("invalid source '\(text)': the service name is missing or contains '/'")
            }
            self = .consul(address: address[0], service: service, tags: tags, datacenter: datacenter, token: token)
        default:
            throw LbctlError.usage(
                "invalid source '\(text)': unknown scheme '\(scheme)' (expected static, dns+srv, dns, etcd, zk or consul)"
            )
        }
    }

    private static func splitNameserver(_ rest: String, source: String) throws -> (String?, String) {
        guard let slash = rest.firstIndex(of: "/") else { return (nil, rest) }
        let server = String(rest[..<slash])
        let name = String(rest[rest.index(after: slash)...])
        guard !name.isEmpty else { throw LbctlError.usage("invalid source '\(source)': the name is missing") }
        do {
            _ = try Instance.parseHostPort(server)
        } catch {
            throw LbctlError.usage("invalid source '\(source)': bad nameserver: \(error)")
        }
        return (server, name)
    }

    private static func parseServers(_ list: String, source: String) throws -> [String] {
        let servers = list.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        for server in servers {
            do {
                _ = try Instance.parseHostPort(server)
            } catch {
                throw LbctlError.usage("invalid source '\(source)': bad server address: \(error)")
            }
        }
        return servers
    }

    /// A publisher for the source, or a usage error for the schemes this build cannot serve yet.
    func makePublisher() throws -> any InstancePublisher {
        switch self {
        case .fixed(let instances):
            return StaticPublisher(instances: instances)
        case .dnsSRV(let nameserver, let name):
            let client = DNSClient(configuration: Self.resolver(nameserver))
            let publisher = DNSSRVPublisher(name: name, client: client)
            return PublisherWithServices(publisher, running: [client, publisher])
        case .dns(let nameserver, let name, let port):
            let client = DNSClient(configuration: Self.resolver(nameserver))
            let publisher = DNSAddressPublisher(name: name, port: port, client: client)
            return PublisherWithServices(publisher, running: [client, publisher])
        case .etcd(let endpoints, let prefix, let endpoint):
            let configuration: EtcdConfiguration
            do {
                configuration = try EtcdConfiguration(members: endpoints.joined(separator: ","))
            } catch {
                throw LbctlError.usage("invalid etcd source: \(error.message)")
            }
            let client = try EtcdClient(configuration: configuration)
            let publisher = EtcdPublisher(
                prefix: prefix, client: client, valueOptions: RegistryValueOptions(serverSetEndpoint: endpoint))
            return PublisherWithServices(publisher, running: [client, publisher])
        case .zookeeper(let servers, let path, let endpoint):
            let configuration: ZooKeeperConfiguration
            do {
                configuration = try ZooKeeperConfiguration(connectString: servers.joined(separator: ","))
                try ZooKeeperPath.validate(path)
            } catch {
                throw LbctlError.usage("invalid zk source: \(error.message)")
            }
            let client = ZooKeeperClient(configuration: configuration)
            let publisher = ZooKeeperPublisher(
                path: path, client: client, valueOptions: RegistryValueOptions(serverSetEndpoint: endpoint))
            return PublisherWithServices(publisher, running: [client, publisher])
        case .consul(let address, let service, let tags, let datacenter, let token):
            let (host, port) = try Instance.parseHostPort(address)
            // CONSUL_HTTP_TOKEN, CONSUL_HTTP_SSL, CONSUL_CACERT and CONSUL_DATACENTER apply where
            // the source says nothing; the agent's address is the source's.
            let configuration: ConsulConfiguration
            do {
                configuration = try ConsulConfiguration(
                    environment: ProcessInfo.processInfo.environment,
                    host: host,
                    port: port,
                    datacenter: datacenter,
                    token: token
                )
            } catch {
                throw LbctlError.usage("invalid consul source: \(error)")
            }
            let client = ConsulClient(configuration: configuration)
            let publisher = ConsulPublisher(service: service, tags: tags, client: client)
            return PublisherWithServices(publisher, running: [client, publisher])
        }
    }
}

extension SourceSpec {
    /// An explicit nameserver, or the system's `/etc/resolv.conf`.
    static func resolver(_ nameserver: String?) -> DNSConfiguration {
        if let nameserver { return .nameserver(nameserver) }
        let text = (try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8)) ?? ""
        return DNSConfiguration(resolvConf: text)
    }
}

/// A publisher with the services it needs running beside it (a registry client and the
/// publisher's own loop): running it runs them all, until cancelled.
struct PublisherWithServices: InstancePublisher, Service {
    let publisher: any InstancePublisher
    let services: [any Service]

    init(_ publisher: any InstancePublisher, running services: [any Service]) {
        self.publisher = publisher
        self.services = services
    }

    func updates() -> InstanceUpdates { publisher.updates() }

    func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            for service in services { group.addTask { try await service.run() } }
        }
    }
}
