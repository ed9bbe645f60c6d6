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

    init(endpoints: [Endpoint<Request, Response>], instances: [Instance], generation: UInt32) {
        self.endpoints = endpoints
        self.instances = instances
        self.generation = generation
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
/// ``Balancer/withEndpoint(_:)``) turns it into the endpoint.
@frozen
public struct EndpointPick: Hashable, Sendable {
    /// The position in the snapshot, in `0..<count`.
    public var index: Int
    /// The ``EndpointSet/generation`` of the snapshot the pick was made against.
    public var generation: UInt32

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
