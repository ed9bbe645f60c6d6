import Atomics

/// An immutable snapshot of the endpoints a balancer chooses among, ordered by instance id.
///
/// Every change of the set makes a new snapshot with a new ``generation``; a snapshot never changes
/// after it has been published, so it can be read from any number of threads without a lock.
public final class EndpointSet<Request: Sendable, Response: Sendable>: Sendable, AtomicReference {
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

    init(endpoints: [Endpoint<Request, Response>], instances: [Instance], slots: [UInt32], generation: UInt32) {
        self.endpoints = endpoints
        self.instances = instances
        self.slots = slots
        self.generation = generation
    }

    /// The set without its endpoints, for balancers that derive tables from it.
    var view: EndpointSetView {
        EndpointSetView(generation: generation, instances: instances, slots: slots)
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
/// A pick is two integers: making one touches no reference-counted object, so picking is as cheap
/// as the balancer's arithmetic. ``EndpointCache/endpoint(for:)`` (used by
/// ``Balancer/withEndpoint(isolation:_:)``) turns it into the endpoint.
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

/// The generation and size of the current snapshot, packed in one word so a balancer reads both
/// with one atomic load.
@frozen
public struct EndpointSetShape: Hashable, Sendable {
    /// The snapshot's generation.
    public var generation: UInt32
    /// The snapshot's number of endpoints.
    public var count: Int

    /// Creates a shape.
    @inlinable
    public init(generation: UInt32, count: Int) {
        self.generation = generation
        self.count = count
    }

    @inlinable
    init(packed: UInt64) {
        self.generation = UInt32(truncatingIfNeeded: packed >> 32)
        self.count = Int(truncatingIfNeeded: packed & 0xFFFF_FFFF)
    }

    @inlinable
    var packed: UInt64 { UInt64(generation) << 32 | UInt64(UInt32(truncatingIfNeeded: count)) }
}

/// What balancers derive their tables from: a set's generation, instances and slots, in order.
public struct EndpointSetView: Sendable {
    /// The set's generation.
    public var generation: UInt32
    /// The instances, ordered by id.
    public var instances: [Instance]
    /// Each instance's stable slot.
    public var slots: [UInt32]

    /// Creates a view.
    public init(generation: UInt32, instances: [Instance], slots: [UInt32]) {
        self.generation = generation
        self.instances = instances
        self.slots = slots
    }

    /// The number of instances.
    public var count: Int { instances.count }
}

/// Something that derives state from every endpoint set a cache publishes (a balancer's tables).
///
/// The cache calls ``endpointSetWillPublish(_:)`` with each new set *before* readers can see it,
/// so a balancer's table is never older than the set it picks from. Calls for one cache are
/// serialised. The cache holds observers weakly.
public protocol EndpointSetObserver: AnyObject, Sendable {
    /// A new set is about to be published.
    func endpointSetWillPublish(_ set: EndpointSetView)
}
