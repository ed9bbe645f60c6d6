/// An immutable snapshot of the endpoints a balancer chooses among, ordered by instance id.
///
/// Every change of the set makes a new snapshot with a new ``generation``; a snapshot never changes
/// after it has been published, so it can be read from any number of threads without a lock.
public final class EndpointSet<Request: Sendable, Response: Sendable>: Sendable {
    /// The endpoints, ordered by ``Instance/id``.
    public let endpoints: [Endpoint<Request, Response>]
    /// Increases by one with every published change (wrapping); identifies the snapshot a
    /// ``EndpointPick`` was made against.
    public let generation: UInt32
    /// The instances as the registry last described them, in the same order as ``endpoints``.
    ///
    /// An endpoint keeps the ``Instance`` it was made for; when a later update changes an instance's
    /// weight, priority or metadata but not its id, the endpoint stays and this array has the new values.
    public let instances: [Instance]
    /// The stable slot of each endpoint, in the same order as ``endpoints``.
    ///
    /// The cache gives each instance id a small integer for as long as it holds an endpoint for it;
    /// balancers keep per-instance state (load, latency, ejection) in slot-indexed storage, so it
    /// survives updates. A slot is reused only after its endpoint has been removed.
    public let slots: [UInt32]

    package init(endpoints: [Endpoint<Request, Response>], instances: [Instance], slots: [UInt32], generation: UInt32) {
        self.endpoints = endpoints
        self.instances = instances
        self.slots = slots
        self.generation = generation
        assert(Instance.isOrderedByID(instances), "an endpoint set's instances are ordered by id")
    }

    /// The set without its endpoints, for balancers that derive tables from it.
    package var view: EndpointSetView {
        var view = EndpointSetView(generation: generation, instances: instances, slots: slots)
        view.isKnownOrderedByID = true
        return view
    }

    /// The number of endpoints.
    @inlinable public var count: Int { endpoints.count }
    /// Whether there are no endpoints.
    @inlinable public var isEmpty: Bool { endpoints.isEmpty }

    /// The endpoint at `index`.
    @inlinable public subscript(index: Int) -> Endpoint<Request, Response> { endpoints[index] }
}

/// What a balancer's ``Balancer/pick()`` returns: the position of the chosen endpoint in the
/// snapshot of a given generation.
///
/// A pick is two integers. The call path (``Balancer/withEndpoint(isolation:_:)``) does not go
/// through it: it takes the endpoint from the very snapshot the pick was made in. A pick is for
/// callers that want only the choice; ``EndpointCache/endpoint(for:)`` turns it into the endpoint
/// while the set is unchanged.
@frozen
public struct EndpointPick: Hashable, Sendable {
    /// The position in the snapshot, in `0..<count`.
    public var index: Int
    /// The ``EndpointSet/generation`` of the snapshot the pick was made against.
    public var generation: UInt32

    /// Creates a pick of the endpoint at `index` in the snapshot of `generation`.
    @inlinable
    public init(index: Int, generation: UInt32) {
        self.index = index
        self.generation = generation
    }
}

/// What balancers derive their tables from: a set's generation, instances and slots, in order.
public struct EndpointSetView: Sendable {
    /// The set's generation.
    public var generation: UInt32
    /// The instances, ordered by id.
    public var instances: [Instance]
    /// Each instance's stable slot.
    public var slots: [UInt32]
    /// Whether `instances` is known to be ordered by id without looking: a view of an
    /// ``EndpointSet`` is (a set is ordered when it is made); one made with the public initialiser
    /// is checked where the order matters.
    package var isKnownOrderedByID = false

    /// Creates a view.
    public init(generation: UInt32, instances: [Instance], slots: [UInt32]) {
        self.generation = generation
        self.instances = instances
        self.slots = slots
    }

    /// The number of instances.
    public var count: Int { instances.count }
}

/// Something that follows every endpoint set a cache publishes (the ``OutlierDetector`` does).
///
/// The cache calls ``endpointSetWillPublish(_:)`` with each new set, in order, from its update
/// path and never under a lock: calls for one cache are serialised by its updates. Balancers do not
/// observe the cache: they read its version and derive their snapshot when it changes. The cache
/// holds observers weakly.
public protocol EndpointSetObserver: AnyObject, Sendable {
    /// A new set is about to be published.
    func endpointSetWillPublish(_ set: EndpointSetView)

    /// A new set has been published (readers see it now). Default: nothing.
    func endpointSetDidPublish(_ set: EndpointSetView)
}

extension EndpointSetObserver {
    /// Does nothing by default.
    public func endpointSetDidPublish(_ set: EndpointSetView) {}
}
