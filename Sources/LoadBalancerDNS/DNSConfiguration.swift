import LoadBalancer

/// Where and how to ask: the nameservers and the options of `/etc/resolv.conf`, or an explicit
/// nameserver.
public struct DNSConfiguration: Sendable, Hashable {
    /// Nameservers as `host:port` (IPv6 in brackets), tried in turn.
    public var nameservers: [String]
    /// Search domains for names with fewer than ``ndots`` dots.
    public var search: [String] = []
    /// Names with at least this many dots are tried as given first. Default 1.
    public var ndots = 1
    /// How long to wait for one answer. Default 5 s.
    public var timeout: Duration = .seconds(5)
    /// How many rounds over the nameservers. Default 2.
    public var attempts = 2

    /// Creates a configuration; the parameters are the properties of the same names.
    public init(nameservers: [String], search: [String] = [], ndots: Int = 1, timeout: Duration = .seconds(5), attempts: Int = 2) {
        self.nameservers = nameservers
        self.search = search
        self.ndots = ndots
        self.timeout = timeout
        self.attempts = max(1, attempts)
    }

    /// One explicit nameserver: `host:port`, `[v6]:port`, or a bare host or IPv6 address (port 53).
    public static func nameserver(_ address: String, timeout: Duration = .seconds(2), attempts: Int = 2) -> DNSConfiguration {
        let normalized: String
        if let (host, port) = try? Instance.parseHostPort(address) {
            normalized = Instance.hostPortString(host: host, port: port)
        } else {
            normalized = address.contains(":") ? "[\(address)]:53" : "\(address):53"
        }
        return DNSConfiguration(nameservers: [normalized], timeout: timeout, attempts: attempts)
    }

    /// Parses the text of a `resolv.conf`: `nameserver`, `search`, `domain` and the `ndots`,
    /// `timeout` and `attempts` options; unknown lines are ignored.
    public init(resolvConf text: String) {
        var nameservers: [String] = []
        var search: [String] = []
        var ndots = 1
        var timeout: Duration = .seconds(5)
        var attempts = 2
        for rawLine in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let line = rawLine.split(whereSeparator: { $0 == "#" || $0 == ";" }).first ?? ""
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let keyword = fields.first else { continue }
            switch keyword {
            case "nameserver" where fields.count >= 2:
                let host = fields[1]
                nameservers.append(host.contains(":") ? "[\(host)]:53" : "\(host):53")
            case "search" where fields.count >= 2:
                search = Array(fields.dropFirst())
            case "domain" where fields.count >= 2:
                search = [fields[1]]
            case "options":
                for option in fields.dropFirst() {
                    let pair = option.split(separator: ":", maxSplits: 1)
                    guard pair.count == 2, let value = Int(pair[1]) else { continue }
                    switch pair[0] {
                    case "ndots": ndots = min(max(value, 0), 15)
                    case "timeout": timeout = .seconds(min(max(value, 1), 30))
                    case "attempts": attempts = min(max(value, 1), 5)
                    default: break
                    }
                }
            default:
                continue
            }
        }
        if nameservers.isEmpty { nameservers = ["127.0.0.1:53"] }
        self.init(nameservers: nameservers, search: search, ndots: ndots, timeout: timeout, attempts: attempts)
    }

    /// The candidate names to ask for `name`, in order (search list and ndots applied).
    public func candidates(for name: String) -> [String] {
        if name.hasSuffix(".") { return [String(name.dropLast())] }
        let dots = name.filter { $0 == "." }.count
        let searched = search.map { "\(name).\($0)" }
        return dots >= ndots ? [name] + searched : searched + [name]
    }
}
