/// How a client chooses its subset of a large fleet: a deterministic set of d instances, the same
/// for the same inputs in every process, so that a client opens connections to d instances rather
/// than to all of them.
///
/// Apply it to a publisher with ``InstancePublisher/subset(_:)`` (a ``SubsetPublisher``), so that
/// the ``EndpointCache`` behind it makes endpoints for the subset's instances only; or call
/// `subset(of:)` on a set yourself.
///
/// ## The scheme
///
/// Every instance has 64 points on a ring of 2⁶⁴ positions, each a hash of its ``Instance/id``
/// (FNV-1a, then the SplitMix64 finaliser, so that every process and platform computes the same
/// ring). A client has one point; its subset is the first d distinct instances met walking the
/// ring clockwise from that point. Because an instance's points depend on its id alone, a change
/// of the set moves only what it must on this ring: when an instance leaves, only the clients that had it get a
/// new instance (the next one on their walk; about d/N of the clients, each swapping one
/// instance); when one joins, only the clients whose walk now meets it within d instances change.
/// Subsets nest: the subset of size d + 1 is the subset of size d plus one instance, so resizing
/// by one changes one connection.
///
/// The client's point comes from one of two coordinates:
///
/// - ``indexed(client:of:size:loadBound:)``: the client knows its index among `clientCount`
///   clients (a StatefulSet ordinal, a shard number). Its point is the index with its 64 bits
///   reversed (the van der Corput sequence), so any number of clients are spread evenly round the
///   ring and a new client moves no other client's point. The clients then share one computation
///   with bounded loads: walking the clients in ring order, each takes the first d instances on
///   its walk that are in fewer than `cap` subsets already, where `cap` is the larger of
///   ⌈m⌉ and ⌊`loadBound` × m⌋ and m = clientCount × d / N is the mean number of clients per
///   instance. No instance is then in more than `cap` subsets: with 1,000 clients, 100 instances
///   and d = 10, at most 110 against a mean of 100. (A walk that finds fewer than d instances
///   under the cap takes the nearest full ones; with room for 10% more than the mean on every
///   instance this does not happen.) The bound costs little stability: when one of those 100
///   instances leaves, 10.0% of the clients change on average (at most 11.0% of 10 tries; see
///   BENCHMARKS.md), against the 10% that had it. With few clients per instance the cap is tight
///   (⌈m⌉) and skipped instances shift many walks: at 20 clients, 50 instances and d = 5 (m = 2),
///   one instance leaving changed 67.5% of the subsets; there a `loadBound` of 1.5 or 2, or the
///   plain ring (a very large bound), keeps changes near d/N. Every client must use the same `clientCount`,
///   size and bound. The computation takes O(N × 64 × log(N × 64) + clientCount × (log clientCount
///   + d)) steps per new set.
/// - ``hashed(clientID:size:)``: the client knows only its own id (a host name, a pod name). Its
///   point is the id's hash. The subsets are as stable as above, but the number of clients per
///   instance varies as much as with random subsets (the busiest instance had 1.26 times the mean
///   with 1,000 clients over 100 instances and d = 10): knowing nothing of the other clients, no
///   choice can be much more even.
///
/// The choice looks at ids only: weights, priorities, tags and metadata play no part in it, and the
/// instances kept are passed on unchanged (a weighted or priority balancer then works within the
/// subset). When the set has no more than d instances, the subset is the whole set.
public struct Subsetting: Sendable, Hashable, CustomStringConvertible {
    enum Coordinate: Sendable, Hashable {
        case indexed(client: Int, count: Int, loadBound: Double)
        case hashed(clientID: String)
    }

    let coordinate: Coordinate
    /// How many instances the subset holds.
    public var size: SubsetSize

    /// A client that knows its index among the clients: subsets spread evenly over the instances,
    /// no instance in more than `loadBound` times the mean number of subsets.
    ///
    /// The size is raised to ⌈N / `clientCount`⌉ when it is smaller, so that the subsets together
    /// have at least as many places as there are instances.
    ///
    /// - Parameters:
    ///   - client: This client's index, in `0..<clientCount`.
    ///   - clientCount: How many clients share the instances (all with this configuration).
    ///   - size: How many instances each client uses.
    ///   - loadBound: The largest number of subsets an instance may be in, as a multiple of the
    ///     mean (rounded down, and never below the mean rounded up). At least 1. Default 1.1.
    /// - Throws: ``SubsettingError`` with code ``SubsettingError/Code/invalidClient`` when
    ///   `clientCount` is below 1 or `client` is outside `0..<clientCount`, or
    ///   ``SubsettingError/Code/invalidLoadBound`` when `loadBound` is below 1 or not finite.
    public static func indexed(
        client: Int,
        of clientCount: Int,
        size: SubsetSize,
        loadBound: Double = 1.1
    ) throws(SubsettingError) -> Subsetting {
        guard clientCount >= 1, (0..<clientCount).contains(client) else {
            throw SubsettingError(
                code: .invalidClient,
                message: "client index \(client) is outside 0..<\(clientCount) (the client count must be at least 1)"
            )
        }
        guard loadBound.isFinite, loadBound >= 1 else {
            throw SubsettingError(code: .invalidLoadBound, message: "load bound \(loadBound) is not a finite number of at least 1")
        }
        return Subsetting(coordinate: .indexed(client: client, count: clientCount, loadBound: loadBound), size: size)
    }

    /// A client that knows only its own id: stable subsets, but no evenness beyond that of random
    /// choices.
    ///
    /// - Parameters:
    ///   - clientID: This client's stable id (a host or pod name); different clients must have
    ///     different ids.
    ///   - size: How many instances the client uses.
    /// - Throws: ``SubsettingError`` with code ``SubsettingError/Code/invalidClient`` when
    ///   `clientID` is empty.
    public static func hashed(clientID: String, size: SubsetSize) throws(SubsettingError) -> Subsetting {
        guard !clientID.isEmpty else {
            throw SubsettingError(code: .invalidClient, message: "the client id is empty")
        }
        return Subsetting(coordinate: .hashed(clientID: clientID), size: size)
    }

    /// The coordinate and the size, such as `client 3 of 1000, 10 instances, load bound 1.1`.
    public var description: String {
        switch coordinate {
        case .indexed(let client, let count, let bound):
            return "client \(client) of \(count), \(size), load bound \(bound)"
        case .hashed(let id):
            return "client \(id), \(size)"
        }
    }

    /// The number of instances a subset of `instanceCount` instances holds: the size for that
    /// many (see ``SubsetSize/count(forInstances:)``), raised to ⌈`instanceCount` / clientCount⌉
    /// for an indexed client, and at most `instanceCount`.
    public func count(forInstances instanceCount: Int) -> Int {
        guard instanceCount > 0 else { return 0 }
        var count = size.count(forInstances: instanceCount)
        if case .indexed(_, let clients, _) = coordinate {
            count = max(count, (instanceCount + clients - 1) / clients)
        }
        return min(count, instanceCount)
    }

    /// This client's subset of `instances`: the instances it should use, unchanged and in their
    /// order in `instances`.
    ///
    /// Instances are told apart by ``Instance/id``; give unique ids (a publisher's snapshot has
    /// them). The same instances (in any order) and the same configuration give the same subset.
    public func subset(of instances: [Instance]) -> [Instance] {
        let count = count(forInstances: instances.count)
        guard count < instances.count else { return instances }
        let chosen = SubsetRing(instances.map(\.id)).choose(count, for: coordinate)
        var keep = [Bool](repeating: false, count: instances.count)
        for index in chosen { keep[index] = true }
        var result: [Instance] = []
        result.reserveCapacity(count)
        for (index, instance) in instances.enumerated() where keep[index] { result.append(instance) }
        return result
    }

    /// The subsets of all `clientCount` indexed clients of a configuration like this one's (its
    /// size and load bound; its own client index is ignored), each as `subset(of:)` would
    /// give it, computed together: for simulations.
    package func subsetsOfAllClients(of instances: [Instance]) -> [[Instance]] {
        guard case .indexed(_, let clientCount, let loadBound) = coordinate else { return [subset(of: instances)] }
        let count = count(forInstances: instances.count)
        guard count < instances.count else { return Array(repeating: instances, count: clientCount) }
        return SubsetRing(instances.map(\.id)).chooseAll(count, clientCount: clientCount, loadBound: loadBound).map { chosen in
            let keep = Set(chosen)
            return instances.indices.filter { keep.contains($0) }.map { instances[$0] }
        }
    }

    /// `update` with its instances replaced by this client's subset; the error, if any, is kept.
    public func subset(of update: InstanceUpdate) -> InstanceUpdate {
        InstanceUpdate(instances: subset(of: update.instances), error: update.error)
    }
}

/// How many instances a client's subset holds: a fixed number, or one derived from the client's
/// load.
public struct SubsetSize: Sendable, Hashable, CustomStringConvertible {
    enum Rule: Sendable, Hashable {
        case fixed(Int)
        case load(requestsPerSecond: Double, perInstance: Double, minimum: Int, maximum: Int)
    }

    let rule: Rule

    /// Exactly `count` instances (or every instance, when there are fewer).
    ///
    /// - Throws: ``SubsettingError`` with code ``SubsettingError/Code/invalidSize`` when `count`
    ///   is below 1.
    public static func fixed(_ count: Int) throws(SubsettingError) -> SubsetSize {
        guard count >= 1 else {
            throw SubsettingError(code: .invalidSize, message: "subset size \(count) is below 1")
        }
        return SubsetSize(rule: .fixed(count))
    }

    /// Enough instances that each gets at most `perInstance` of this client's
    /// `requestsPerSecond`: ⌈`requestsPerSecond` / `perInstance`⌉, within
    /// `minimum...maximum`.
    ///
    /// For a size that follows the load as it changes, measure the rate and pass a new size to
    /// ``SubsetPublisher/reconfigure(_:)``: subsets nest, so a size one larger adds one instance.
    /// An indexed client's evenness holds when every client has the same size.
    ///
    /// - Parameters:
    ///   - requestsPerSecond: The client's request rate, at least 0.
    ///   - perInstance: The rate one instance should get from one client, above 0.
    ///   - minimum: The smallest subset, at least 1. Default 3, so that one failing instance
    ///     leaves others to retry on.
    ///   - maximum: The largest subset, at least `minimum`. Default: no limit but the fleet.
    /// - Throws: ``SubsettingError`` with code ``SubsettingError/Code/invalidSize`` when a rate is
    ///   negative or not finite, `perInstance` is 0, `minimum` is below 1 or `maximum` below
    ///   `minimum`.
    public static func forLoad(
        requestsPerSecond: Double,
        perInstance: Double,
        minimum: Int = 3,
        maximum: Int = .max
    ) throws(SubsettingError) -> SubsetSize {
        guard requestsPerSecond.isFinite, requestsPerSecond >= 0, perInstance.isFinite, perInstance > 0 else {
            throw SubsettingError(
                code: .invalidSize,
                message:
                    "rates \(requestsPerSecond)/s per client and \(perInstance)/s per instance: need finite, non-negative rates and a positive per-instance rate"
            )
        }
        guard minimum >= 1, maximum >= minimum else {
            throw SubsettingError(code: .invalidSize, message: "subset size bounds \(minimum)...\(maximum): need 1 <= minimum <= maximum")
        }
        return SubsetSize(rule: .load(requestsPerSecond: requestsPerSecond, perInstance: perInstance, minimum: minimum, maximum: maximum))
    }

    /// The number of instances for a fleet of `instanceCount`, before the fleet's own limit: the
    /// fixed count, or the load's count within its bounds.
    public func count(forInstances instanceCount: Int) -> Int {
        switch rule {
        case .fixed(let count):
            return count
        case .load(let rate, let perInstance, let minimum, let maximum):
            let needed = (rate / perInstance).rounded(.up)
            let count = needed >= Double(maximum) ? maximum : Int(needed)
            return min(max(count, minimum), maximum)
        }
    }

    /// The rule, such as `10 instances` or `1 instance per 100.0 requests/s of 2500.0 (3...)`.
    public var description: String {
        switch rule {
        case .fixed(let count):
            return count == 1 ? "1 instance" : "\(count) instances"
        case .load(let rate, let perInstance, let minimum, let maximum):
            let upper = maximum == .max ? "" : "\(maximum)"
            return "1 instance per \(perInstance) requests/s of \(rate) (\(minimum)...\(upper))"
        }
    }
}

/// A subsetting configuration that cannot work.
public struct SubsettingError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What is wrong. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable {
            case invalidSize, invalidClient, invalidLoadBound
        }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// The subset size is below 1, or its load rule's rates or bounds are invalid.
        public static let invalidSize = Code(.invalidSize)
        /// The client's index is outside its count, the count is below 1, or the client id is empty.
        public static let invalidClient = Code(.invalidClient)
        /// The load bound is below 1 or not finite.
        public static let invalidLoadBound = Code(.invalidLoadBound)

        /// The code's name, such as `invalidSize`.
        public var description: String { String(describing: wrapped) }
    }

    /// What is wrong.
    public var code: Code
    /// A human-readable explanation.
    public var message: String

    /// Creates an error.
    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    /// The code and the message.
    public var description: String { "\(code): \(message)" }
}

/// The ring of a set of instance ids: 64 points per id, sorted.
struct SubsetRing {
    static let pointsPerInstance = 64

    /// Each point's position and the index of its instance in the input.
    private var positions: [UInt64] = []
    private var owners: [Int32] = []
    private let instanceCount: Int

    init(_ ids: [String]) {
        instanceCount = ids.count
        var points: [(position: UInt64, owner: Int32)] = []
        points.reserveCapacity(ids.count * Self.pointsPerInstance)
        for (index, id) in ids.enumerated() {
            let base = Self.hash(id)
            for point in 0..<Self.pointsPerInstance {
                points.append((Self.mix(base &+ UInt64(point) &* 0x9e37_79b9_7f4a_7c15), Int32(index)))
            }
        }
        // Ties (astronomically rare) are broken by the id, so that the order is the same in every client.
        points.sort { $0.position != $1.position ? $0.position < $1.position : ids[Int($0.owner)] < ids[Int($1.owner)] }
        positions = points.map(\.position)
        owners = points.map(\.owner)
    }

    /// The indices of `count` instances chosen for `coordinate`; `count` is below the number of instances.
    func choose(_ count: Int, for coordinate: Subsetting.Coordinate) -> [Int] {
        var walker = Walker(instanceCount: instanceCount)
        switch coordinate {
        case .hashed(let clientID):
            return walker.walk(self, from: Self.mix(Self.hash(clientID)), count: count, cap: nil)
        case .indexed(let client, let clientCount, let loadBound):
            let cap = Self.cap(count: count, instances: instanceCount, clients: clientCount, loadBound: loadBound)
            // The clients walk in ring order from position 0; this one's subset depends on those before it.
            let mine = Self.point(ofClient: client)
            var earlier = (0..<clientCount).lazy.map { Self.point(ofClient: $0) }.filter { $0 < mine }.sorted()
            earlier.append(mine)
            var result: [Int] = []
            for point in earlier {
                result = walker.walk(self, from: point, count: count, cap: cap)
            }
            return result
        }
    }

    /// The subsets of every one of `clientCount` indexed clients, in one computation (for
    /// simulations: the same result as each client's own, in O(clientCount × d) steps).
    func chooseAll(_ count: Int, clientCount: Int, loadBound: Double) -> [[Int]] {
        var walker = Walker(instanceCount: instanceCount)
        let cap = Self.cap(count: count, instances: instanceCount, clients: clientCount, loadBound: loadBound)
        let clients = (0..<clientCount).sorted { Self.point(ofClient: $0) < Self.point(ofClient: $1) }
        var result = [[Int]](repeating: [], count: clientCount)
        for client in clients {
            result[client] = walker.walk(self, from: Self.point(ofClient: client), count: count, cap: cap)
        }
        return result
    }

    /// The most subsets an instance may be in: the larger of ⌈m⌉ and ⌊`loadBound` × m⌋, where m
    /// is the mean.
    static func cap(count: Int, instances: Int, clients: Int, loadBound: Double) -> Int {
        let mean = Double(clients) * Double(count) / Double(instances)
        let bounded = (loadBound * mean).rounded(.down)
        return max(Int(mean.rounded(.up)), bounded >= Double(Int.max) ? Int.max : Int(bounded))
    }

    /// The walk of the clients of one computation: marks and loads are reused between walks.
    private struct Walker {
        var load: [Int]
        var mark: [Int]
        var stamp = 0

        init(instanceCount: Int) {
            load = [Int](repeating: 0, count: instanceCount)
            mark = [Int](repeating: -1, count: instanceCount)
        }

        /// The first `count` distinct instances clockwise from `point` that are in fewer than `cap`
        /// subsets; when the whole ring has fewer, the nearest full ones make up the number.
        mutating func walk(_ ring: SubsetRing, from point: UInt64, count: Int, cap: Int?) -> [Int] {
            stamp += 1
            var chosen: [Int] = []
            chosen.reserveCapacity(count)
            var full: [Int] = []
            var start = 0
            var end = ring.positions.count
            while start < end {
                let middle = (start + end) / 2
                if ring.positions[middle] < point { start = middle + 1 } else { end = middle }
            }
            var step = 0
            while chosen.count < count, step < ring.positions.count {
                var index = start + step
                if index >= ring.positions.count { index -= ring.positions.count }
                step += 1
                let owner = Int(ring.owners[index])
                guard mark[owner] != stamp else { continue }
                mark[owner] = stamp
                if let cap, load[owner] >= cap {
                    full.append(owner)
                } else {
                    chosen.append(owner)
                }
            }
            if chosen.count < count { chosen.append(contentsOf: full.prefix(count - chosen.count)) }
            for owner in chosen { load[owner] += 1 }
            return chosen
        }
    }

    /// Client `index`'s point: its bits reversed (the van der Corput sequence in base 2).
    static func point(ofClient index: Int) -> UInt64 {
        var bits = UInt64(index)
        bits = ((bits >> 1) & 0x5555_5555_5555_5555) | ((bits & 0x5555_5555_5555_5555) << 1)
        bits = ((bits >> 2) & 0x3333_3333_3333_3333) | ((bits & 0x3333_3333_3333_3333) << 2)
        bits = ((bits >> 4) & 0x0f0f_0f0f_0f0f_0f0f) | ((bits & 0x0f0f_0f0f_0f0f_0f0f) << 4)
        return bits.byteSwapped
    }

    /// FNV-1a, 64-bit, over the UTF-8 of `string`.
    static func hash(_ string: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in string.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// The SplitMix64 finaliser.
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
