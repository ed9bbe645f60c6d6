import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LoadBalancer

/// What kind of host an ``Instance``'s host string is, for turning it into gRPC socket addresses.
enum HostKind: Equatable {
    /// A dotted-quad IPv4 address (`10.0.0.7`).
    case ipv4
    /// An IPv6 address without brackets (`fd00::3`, `::ffff:10.0.0.7`, `fe80::1%eth0`).
    case ipv6
    /// Anything else without a colon: a DNS name to resolve.
    case hostName
    /// A host with a colon that is not a valid IPv6 address: no address can be made from it.
    case invalid

    init(_ host: String) {
        if Self.isIPv4(Substring(host)) {
            self = .ipv4
        } else if host.contains(":") {
            self = Self.isIPv6(host) ? .ipv6 : .invalid
        } else {
            self = .hostName
        }
    }

    /// Four decimal parts in `0...255`, without leading zeros (which some parsers read as octal).
    static func isIPv4(_ text: Substring) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return false }
        for part in parts {
            guard (1...3).contains(part.utf8.count),
                part.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                let value = Int(part), value <= 255,
                part.utf8.count == 1 || part.utf8.first != UInt8(ascii: "0")
            else { return false }
        }
        return true
    }

    /// RFC 4291 text form: up to eight groups of one to four hex digits, at most one `::`, an
    /// optional trailing IPv4 part (worth two groups), and an optional `%zone` suffix.
    static func isIPv6(_ text: String) -> Bool {
        var address = Substring(text)
        if let percent = address.firstIndex(of: "%") {
            let zone = address[address.index(after: percent)...]
            guard !zone.isEmpty else { return false }
            address = address[..<percent]
        }
        guard address.contains(":") else { return false }

        let halves = address.split(separator: "::", maxSplits: 2, omittingEmptySubsequences: false)
        guard halves.count <= 2 else { return false }
        let compressed = halves.count == 2

        var groups = 0
        for (index, half) in halves.enumerated() {
            if half.isEmpty {
                // Only the sides of a "::" may be empty.
                guard compressed else { return false }
                continue
            }
            let parts = half.split(separator: ":", omittingEmptySubsequences: false)
            for (partIndex, part) in parts.enumerated() {
                let isLastOfAddress = index == halves.count - 1 && partIndex == parts.count - 1
                if isLastOfAddress, part.contains(".") {
                    guard isIPv4(part) else { return false }
                    groups += 2
                    continue
                }
                guard (1...4).contains(part.utf8.count), part.unicodeScalars.allSatisfy(\.properties.isASCIIHexDigit)
                else { return false }
                groups += 1
            }
        }
        return compressed ? groups <= 7 : groups == 8
    }
}

extension HostKind {
    /// The gRPC target of `instance`'s host and port: an IPv4 or IPv6 address, or a DNS name to
    /// resolve; `nil` for a host that is none of them.
    static func target(of instance: Instance) -> (any ResolvableTarget)? {
        switch HostKind(instance.host) {
        case .ipv4: .ipv4(address: instance.host, port: instance.port)
        case .ipv6: .ipv6(address: instance.host, port: instance.port)
        case .hostName: .dns(host: instance.host, port: instance.port)
        case .invalid: nil
        }
    }
}
