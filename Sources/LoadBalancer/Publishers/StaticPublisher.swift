/// A publisher of a fixed list of instances given as `host:port` strings.
///
/// Strings that do not parse are reported, not fatal: the good ones are published, and the first
/// update carries a ``DiscoveryError`` with code ``DiscoveryError/Code/invalidInstances`` naming the bad ones.
///
/// ```swift
/// let publisher = StaticPublisher(["10.0.0.1:80", "[fd00::2]:80", "oops"])
/// publisher.instances   // the two good ones
/// publisher.errors      // one InstanceParseError for "oops"
/// ```
public struct StaticPublisher: InstancePublisher {
    /// The instances that parsed, ordered by id.
    public let instances: [Instance]
    /// One error per string that did not parse, in input order.
    public let errors: [InstanceParseError]
    private let broadcaster: InstanceBroadcaster

    /// Parses each string as `host:port` or `[ipv6]:port`.
    public init(_ entries: [String]) {
        var instances: [Instance] = []
        var errors: [InstanceParseError] = []
        for entry in entries {
            do {
                instances.append(try Instance(parsing: entry))
            } catch {
                errors.append(error)
            }
        }
        self.init(instances: instances, errors: errors)
    }

    /// Parses a comma-separated list (`"h1:80,h2:80"`); empty items are ignored.
    public init(parsing list: String) {
        self.init(list.split(separator: ",", omittingEmptySubsequences: true).map(String.init))
    }

    /// Publishes `instances` as they are.
    public init(instances: [Instance]) {
        self.init(instances: instances, errors: [])
    }

    private init(instances: [Instance], errors: [InstanceParseError]) {
        self.broadcaster = InstanceBroadcaster()
        self.errors = errors
        broadcaster.publish(instances)
        self.instances = broadcaster.current?.instances ?? []
        if !errors.isEmpty {
            // Report the bad entries once, in band, with the good set.
            broadcaster.fail(
                DiscoveryError(
                    code: .invalidInstances,
                    message: errors.map(\.description).joined(separator: "; ")
                )
            )
        }
    }

    /// A new subscription: the one set (with the parse errors, if any), then nothing until cancelled.
    public func updates() -> InstanceUpdates { broadcaster.updates() }
}
