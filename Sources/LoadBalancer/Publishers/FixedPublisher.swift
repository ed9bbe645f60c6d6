/// A publisher whose set you replace by hand.
///
/// Useful in tests, and for clients that learn their instances some other way.
///
/// ```swift
/// let publisher = FixedPublisher([try Instance(parsing: "127.0.0.1:8080")])
/// publisher.replace(with: [try Instance(parsing: "127.0.0.1:8081")])
/// ```
public final class FixedPublisher: InstancePublisher {
    private let broadcaster: InstanceBroadcaster

    /// Creates a publisher whose current set is `instances`.
    public init(_ instances: [Instance] = [], staleness: StalenessPolicy = .keepLastGood) {
        self.broadcaster = InstanceBroadcaster(staleness: staleness)
        broadcaster.publish(instances)
    }

    /// Replaces the whole set.
    public func replace(with instances: [Instance]) {
        broadcaster.publish(instances)
    }

    /// Reports a failure, as a registry-backed publisher would: subscribers keep the last good set
    /// (subject to the staleness policy) and see the error.
    public func fail(_ error: DiscoveryError) {
        broadcaster.fail(error)
    }

    /// The current snapshot.
    public var current: InstanceUpdate? { broadcaster.current }

    /// Ends every subscription.
    public func finish() { broadcaster.finish() }

    /// A new subscription: the current set first, then every replacement and failure.
    public func updates() -> InstanceUpdates { broadcaster.updates() }
}
