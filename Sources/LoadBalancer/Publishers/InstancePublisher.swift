/// A source of a service's instances: an async sequence of *whole* snapshots.
///
/// The contract every publisher keeps:
///
/// - **Whole sets.** Each ``InstanceUpdate`` carries the complete set, ordered by id, never a delta.
///   Consumers diff by ``Instance/id`` (the ``EndpointCache`` does).
/// - **Current first.** A new iteration of ``updates()`` starts with the current set, when the
///   publisher has one; then it receives every later change. A slow consumer may skip intermediate
///   sets (it always gets the newest).
/// - **Errors in band.** A registry failure does not end the sequence: it arrives as an update whose
///   ``InstanceUpdate/error`` is set and whose instances are the *last good set* (or empty, if the
///   publisher's ``StalenessPolicy`` has invalidated it, or no set was ever had).
/// - **Termination.** The sequence ends when the iterating task is cancelled, or when the publisher
///   is finished for good. Iterating again gives a new subscription.
///
/// A publisher that needs a background loop (polling DNS, watching etcd) also conforms to
/// `ServiceLifecycle.Service`: its `run()` is the loop, and cancelling it stops the publisher.
public protocol InstancePublisher: Sendable {
    /// A new subscription to the publisher's snapshots, current one first.
    func updates() -> InstanceUpdates
}

/// One whole snapshot of a service's instances, with the registry error that came with it, if any.
public struct InstanceUpdate: Sendable, CustomStringConvertible {
    /// The instances, ordered by id, unique by id.
    public var instances: [Instance]
    /// Set when the registry failed: then ``instances`` is the last good set (or empty, when it has
    /// been invalidated or there never was one).
    public var error: DiscoveryError?

    /// Creates an update.
    public init(instances: [Instance], error: DiscoveryError? = nil) {
        self.instances = instances
        self.error = error
    }

    /// Whether this update reports a registry failure.
    public var isFailure: Bool { error != nil }

    /// The instances' ids in brackets, and the error, if any.
    public var description: String {
        let ids = instances.map(\.id).joined(separator: ", ")
        if let error { return "[\(ids)] (error: \(error))" }
        return "[\(ids)]"
    }
}

/// What to do with the last good set while the registry keeps failing.
public struct StalenessPolicy: Sendable, Hashable {
    /// How long failures may last before the set is emptied; `nil` keeps it forever.
    public var invalidateAfter: Duration?

    /// Keep the last good set for as long as the registry fails (the default).
    public static let keepLastGood = StalenessPolicy(invalidateAfter: nil)

    /// Empty the set once failures have lasted `duration` without a success in between
    /// (go-kit's `InvalidateOnError`).
    ///
    /// A timer starts at the first failure after a good set and fires `duration` later, whether or
    /// not more failures come in: subscribers then get an empty set with an
    /// ``DiscoveryError/Code/invalidated`` error whose ``DiscoveryError/cause`` is that first
    /// failure. Failures after it keep the set empty. The next good set cancels the timer and ends
    /// the run. `.zero` empties the set at the first failure. Bad entries reported beside a good set
    /// (``DiscoveryError/Code/invalidInstances``) are not failures here.
    public static func invalidate(after duration: Duration) -> StalenessPolicy {
        StalenessPolicy(invalidateAfter: duration)
    }
}
