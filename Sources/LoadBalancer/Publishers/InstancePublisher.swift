/// A source of a service's instances: an async sequence of *whole* snapshots.
///
/// The contract every publisher keeps:
///
/// - **Whole sets.** Each ``InstanceUpdate`` carries the complete set, ordered by id, never only a
///   delta. Consumers diff by ``Instance/id`` (the ``EndpointCache`` does). A publisher that knows
///   what changed may add a hint (``InstanceUpdate/serial`` and ``InstanceUpdate/changes``) that
///   spares the cache the comparison of the whole sets; the set stays authoritative.
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
///
/// ``instances`` is always the whole set and always authoritative. A publisher that knows what
/// changed (a watch event named one key) may also say so: ``serial`` names the set among the
/// publisher's updates and ``changes`` says how it differs from an earlier one. The
/// ``EndpointCache`` then applies the change by what changed instead of comparing the whole sets,
/// when the set it last applied is the one ``InstanceChanges/base`` names; otherwise (an update in
/// between was coalesced away, the cache was updated by hand) it compares the whole sets as it
/// always does. ``InstanceBroadcaster`` fills both in for publishers that use
/// ``InstanceBroadcaster/publish(_:upserted:removed:)``.
public struct InstanceUpdate: Sendable, CustomStringConvertible {
    /// The instances, ordered by id, unique by id.
    ///
    /// Setting it drops ``serial`` and ``changes``: they described the set it replaces.
    public var instances: [Instance] {
        didSet {
            serial = nil
            changes = nil
        }
    }
    /// Set when the registry failed: then ``instances`` is the last good set (or empty, when it has
    /// been invalidated or there never was one).
    public var error: DiscoveryError?
    /// Names this update's set among the updates of its publisher: two of its updates with the same
    /// serial hold the same instances. `nil` (the default) when the publisher does not say.
    public var serial: UInt64?
    /// How ``instances`` differs from the set of the publisher's update whose ``serial`` is
    /// ``InstanceChanges/base``; `nil` (the default) when the publisher does not say.
    ///
    /// A hint only: ``instances`` is the set. A publisher that gives it promises that applying
    /// it to the base set gives exactly ``instances``.
    public var changes: InstanceChanges?

    /// Creates an update.
    public init(instances: [Instance], error: DiscoveryError? = nil) {
        self.instances = instances
        self.error = error
    }

    /// Creates an update that names its set (`serial`) and, optionally, says what changed since
    /// an earlier set of the same publisher (`changes`).
    ///
    /// - Parameters:
    ///   - instances: The whole set, ordered by id, unique by id.
    ///   - error: The registry failure, if any (then `instances` is the last good set).
    ///   - serial: Names the set among the publisher's updates: the same serial, the same set.
    ///   - changes: How `instances` differs from the set whose serial is ``InstanceChanges/base``.
    public init(instances: [Instance], error: DiscoveryError? = nil, serial: UInt64?, changes: InstanceChanges? = nil) {
        self.instances = instances
        self.error = error
        self.serial = serial
        self.changes = changes
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

/// What changed between two sets of one publisher: the instances added or changed, and the ids
/// removed.
///
/// Applying it to the set named by ``base`` (removing ``removed``, then adding or replacing each of
/// ``upserted`` by id) gives the new set. An id is in at most one of the two lists.
public struct InstanceChanges: Sendable, Hashable {
    /// The ``InstanceUpdate/serial`` of the set these changes apply to.
    public var base: UInt64
    /// The instances added, or whose fields changed, ordered by id, unique by id.
    public var upserted: [Instance]
    /// The ids removed, in increasing order, unique.
    public var removed: [String]

    /// Creates a description of a change.
    ///
    /// - Parameters:
    ///   - base: The serial of the set the changes apply to.
    ///   - upserted: The instances added or changed, ordered by id, unique by id.
    ///   - removed: The ids removed, in increasing order, unique, none of them in `upserted`.
    public init(base: UInt64, upserted: [Instance], removed: [String]) {
        self.base = base
        self.upserted = upserted
        self.removed = removed
    }

    /// How many instances the changes touch.
    public var count: Int { upserted.count + removed.count }
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
