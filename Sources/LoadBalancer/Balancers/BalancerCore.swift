import Synchronization

/// How a balancer chooses: a table derived from each endpoint set, and a choice over that table.
///
/// The table is built off the pick path (while the cache publishes a new set; after an ejection
/// change, by the first pick that sees it, once for all threads) and never changes after; `choose` is a pure function of the table and the calling
/// shard's own ``PickState``.
@usableFromInline
package protocol PickStrategy: Sendable {
    /// What the strategy derives from a set (a schedule, an alias table, a ring, usable positions).
    associatedtype Table: Sendable

    /// Builds the table for `set`, of which only the positions `usable` may take traffic (never
    /// empty when the set is not). Builds are serialised per balancer.
    func makeTable(_ set: EndpointSetView, usable: [Int]) -> Table

    /// Builds the table for the positions `scope` of `set` (a zone's, with zone-aware routing), of
    /// which `usable` may take traffic. Default: ``makeTable(_:usable:)``, which looks at `usable`
    /// only; a strategy that reads the instances' own ejection flags (priority levels) limits
    /// itself to `scope`.
    func makeTable(_ set: EndpointSetView, usable: [Int], scope: [Int]) -> Table

    /// Chooses a position of the set, or `nil` when there is none to choose.
    func choose(_ table: Table, _ state: inout PickState) -> Int?

    /// The per-instance load a call of position `index` reports to, if the strategy keeps one.
    func load(_ table: Table, at index: Int) -> InstanceLoad?

    /// Learns the outcome of a call counted in `load` (the in-flight count is already ended) that
    /// ended at `end`, when known.
    func learn(_ load: InstanceLoadView, outcome: CallRecord.Outcome, latency: Duration, endedAt end: ContinuousClock.Instant?)

    /// For an observer that explains picks (never on the plain pick path): chooses exactly as
    /// ``choose(_:_:)`` does, with the same draws, and fills in why. Default: ``choose(_:_:)``
    /// alone (a rotation or a draw has no other reason).
    func explainedChoice(_ table: Table, _ state: inout PickState, _ set: EndpointSetView, _ explanation: inout PickExplanation) -> Int?

    /// For an observer that explains picks: where a keyed pick's `hash` falls. Default: nothing.
    func explainKey(_ table: Table, hash: UInt64, _ set: EndpointSetView, _ explanation: inout PickExplanation)

    /// For an observer: what the strategy knows of position `index` (calls in flight, latency,
    /// success). Default: the calls in flight of ``load(_:at:)``, if any.
    func describe(_ table: Table, at index: Int, _ state: inout InstanceState)

    /// For an observer: the priority levels the table spreads traffic over. Default: none.
    func levels(_ table: Table) -> [PriorityLevelState]
}

extension PickStrategy {
    @usableFromInline package func makeTable(_ set: EndpointSetView, usable: [Int], scope: [Int]) -> Table {
        makeTable(set, usable: usable)
    }
    @usableFromInline package func load(_ table: Table, at index: Int) -> InstanceLoad? { nil }
    @usableFromInline package func learn(
        _ load: InstanceLoadView, outcome: CallRecord.Outcome, latency: Duration, endedAt end: ContinuousClock.Instant?
    ) {}
    @usableFromInline package func explainedChoice(
        _ table: Table, _ state: inout PickState, _ set: EndpointSetView, _ explanation: inout PickExplanation
    ) -> Int? {
        choose(table, &state)
    }
    @usableFromInline package func explainKey(_ table: Table, hash: UInt64, _ set: EndpointSetView, _ explanation: inout PickExplanation) {}
    @usableFromInline package func describe(_ table: Table, at index: Int, _ state: inout InstanceState) {
        if let load = load(table, at: index) { state.inFlight = Int(load.outstanding) }
    }
    @usableFromInline package func levels(_ table: Table) -> [PriorityLevelState] { [] }
}

/// The mutable part of a pick, kept per shard: a random stream and a rotation counter.
@usableFromInline
package struct PickState: Sendable {
    /// The wyrand state.
    @usableFromInline package var random: UInt64
    /// The round-robin position.
    @usableFromInline package var counter: UInt64

    /// The next 64 random bits (wyrand: a Weyl sequence mixed by a 128-bit multiply).
    @inlinable @inline(__always)
    package mutating func next() -> UInt64 {
        random &+= WyRand.increment
        return WyRand.mix(random)
    }

    /// The next position of a rotation over `count` places (`count` > 0): the counter kept in
    /// `0..<count`, so that a pick wraps it with a compare instead of a division (one division
    /// only when `count` shrank, or on the first pick from a random start).
    @inlinable @inline(__always)
    package mutating func rotate(count: Int) -> Int {
        var position = Int(truncatingIfNeeded: counter)
        if UInt(bitPattern: position) >= UInt(bitPattern: count) {
            position = Int(truncatingIfNeeded: counter % UInt64(truncatingIfNeeded: count))
        }
        let next = position &+ 1
        counter = UInt64(truncatingIfNeeded: next == count ? 0 : next)
        return position
    }
}

/// One immutable snapshot a balancer picks from: the endpoint set and what the balancer derived
/// from it (and from the ejections in force), built once per change.
@usableFromInline
package final class BalancerSnapshot<Request: Sendable, Response: Sendable, Table: Sendable>: Sendable {
    /// The endpoints, instances and slots.
    @usableFromInline package let set: EndpointSet<Request, Response>
    /// What the strategy derived.
    @usableFromInline package let table: Table
    /// The source's version the set came with.
    @usableFromInline package let setVersion: UInt64
    /// The ejection detector's version the table honours.
    @usableFromInline package let ejectionVersion: UInt64
    /// With slow start: when each position's ramp began (`nil`: not ramping); `nil` when none is.
    @usableFromInline package let ramps: [Duration?]?
    /// When the last of `ramps` ends.
    @usableFromInline package let rampsEnd: Duration
    /// The balancer's ramp epoch the snapshot was built in (moved on when the ramps end).
    @usableFromInline package let rampEpoch: UInt64
    /// With zone-aware routing in force: a table per zone that takes calls; `nil` otherwise.
    @usableFromInline package let zones: ZoneTables<Table>?

    init(
        set: EndpointSet<Request, Response>,
        table: Table,
        setVersion: UInt64,
        ejectionVersion: UInt64,
        ramps: [Duration?]? = nil,
        rampsEnd: Duration = .zero,
        rampEpoch: UInt64 = 0,
        zones: ZoneTables<Table>? = nil
    ) {
        self.set = set
        self.table = table
        self.setVersion = setVersion
        self.ejectionVersion = ejectionVersion
        self.ramps = ramps
        self.rampsEnd = rampsEnd
        self.rampEpoch = rampEpoch
        self.zones = zones
    }
}

/// What a call holds while it runs: the endpoint it was given and where its outcome goes.
///
/// The built-in balancers make leases per shard (one object per endpoint per shard, reused by
/// every call of that shard to that endpoint), so the reference count a call takes is on an object
/// that only its own thread normally touches, never on the endpoint all threads share.
public final class EndpointLease<Request: Sendable, Response: Sendable>: Sendable {
    /// The endpoint to call.
    public let endpoint: Endpoint<Request, Response>
    /// The pick, in the snapshot the endpoint came from.
    public let pick: EndpointPick
    /// The instance's stable slot.
    public let slot: UInt32
    /// Whether nothing needs to hear of the call's outcome (no load, no ejection, no metrics or
    /// tracing, no recording): the call is then just the endpoint's.
    @usableFromInline
    package let isPlain: Bool
    /// The load the call is counted in, for load-aware balancers.
    @usableFromInline package let load: InstanceLoad?
    /// `load`'s words, which a call updates without touching the load's reference count.
    @usableFromInline package let loadView: InstanceLoadView?
    /// The shard of the load's in-flight count this lease adds to.
    @usableFromInline package let loadShard: Int

    /// Creates a lease of `endpoint` for a call that reports to the balancer unless `isPlain`.
    @usableFromInline
    package init(
        endpoint: Endpoint<Request, Response>,
        pick: EndpointPick,
        slot: UInt32,
        isPlain: Bool,
        load: InstanceLoad? = nil,
        loadShard: Int = 0
    ) {
        self.endpoint = endpoint
        self.pick = pick
        self.slot = slot
        self.isPlain = isPlain
        self.load = load
        self.loadView = load?.view
        self.loadShard = loadShard
    }

    /// The record of a call made with this lease.
    public func record(_ outcome: CallRecord.Outcome, latency: Duration) -> CallRecord {
        CallRecord(pick: pick, instanceID: endpoint.id, slot: slot, outcome: outcome, latency: latency)
    }
}

/// Where a balancer's sets come from: an ``EndpointCache`` it follows, or a fixed set.
package enum SnapshotSource<Request: Sendable, Response: Sendable>: Sendable {
    case cache(EndpointCache<Request, Response>)
    case fixed(EndpointSet<Request, Response>)

    /// The version of the current set (one atomic load for a cache, a constant for a fixed set).
    @inline(__always)
    var version: UInt64 {
        switch self {
        case .cache(let cache): cache.version
        case .fixed: 0
        }
    }

    var current: (set: EndpointSet<Request, Response>, version: UInt64) {
        switch self {
        case .cache(let cache): cache.versionedSnapshot
        case .fixed(let set): (set, 0)
        }
    }

    var cache: EndpointCache<Request, Response>? {
        if case .cache(let cache) = self { return cache }
        return nil
    }

    /// A fixed set of `endpoints`, deduplicated by id (the first wins) and ordered by id, as a
    /// cache would publish it.
    static func fixed(_ endpoints: [Endpoint<Request, Response>]) -> Self {
        var seen = Set<String>()
        let unique = endpoints.filter { seen.insert($0.id).inserted }.sorted { $0.instance < $1.instance }
        return .fixed(
            EndpointSet(
                endpoints: unique,
                instances: unique.map(\.instance),
                slots: unique.indices.map { UInt32($0) },
                generation: 1
            )
        )
    }
}

/// The machinery every built-in balancer shares: following the source and the ejections,
/// deriving a snapshot per change, and per-shard pick state and leases.
///
/// ## Scaling
///
/// Nothing a pick or a call writes is shared by all threads. State is split over shards (a power
/// of two, chosen by the calling thread's stack address): each holds, behind a flag of its own on
/// cache lines of its own, the snapshot it last used, its random stream and rotation counter, and
/// its leases. A pick takes its shard's flag (one atomic exchange; a pick that finds it held, when
/// two threads land on one shard, takes the next shard), checks two versions (the source's and the ejection detector's: plain loads of words that change only
/// with the set), and chooses. When a version has moved, the shard takes the balancer's newest
/// snapshot, which the first shard to need it builds.
@usableFromInline
package final class BalancerCore<Request: Sendable, Response: Sendable, Strategy: PickStrategy>: EndpointSetObserver, Sendable {
    @usableFromInline package typealias Snapshot = BalancerSnapshot<Request, Response, Strategy.Table>

    package let source: SnapshotSource<Request, Response>
    /// The source's cache, apart (reading a stored reference costs no reference count; matching
    /// the enum would).
    @usableFromInline let cache: EndpointCache<Request, Response>?
    @usableFromInline package let ejection: OutlierDetector?
    /// The cache's metrics and tracing, if any.
    let instruments: Instruments?
    /// Whether picks are counted in metrics.
    @usableFromInline let counts: Bool
    /// The balancer type and name that picks are counted under.
    private let balancerType: Any.Type
    let balancerName: String
    @usableFromInline package let strategy: Strategy
    /// The shards, owned here; `shardRefs` reaches them without reference counting (a retain and
    /// release per pick cost more than the rest of a round-robin pick).
    let shards: [Shard]
    @usableFromInline let shardRefs: [Unmanaged<Shard>]
    @usableFromInline let shardShift: UInt64
    /// The newest snapshot built, and the lock that serialises builds.
    private let newest = Mutex<Builds>(Builds())

    /// The snapshots built: the newest one picks take, and the one built for a set about to be
    /// published (taken by picks once it is).
    struct Builds {
        var newest: Snapshot?
        var upcoming: Snapshot?
    }
    /// Slow start, if any, and its clock.
    @usableFromInline let slowStart: SlowStart?
    @usableFromInline let slowStartNow: @Sendable () -> Duration
    /// The ids usable at the last build (`nil` before the first) and the ramps under way, by id.
    private let ramping = Mutex<(usable: Set<String>?, starts: [String: Duration])>((nil, [:]))
    /// Moved on when the ramps of the current snapshot have all ended, so that it is rebuilt
    /// without them (and picks stop reading the clock).
    @usableFromInline let rampEpoch = Atomic<UInt64>(0)
    /// Zone-aware routing, if any.
    let zoneRouting: ZoneAwareRouting?
    /// The observers attached (by id) and the explanation period each asked for (0: none).
    let observers = Mutex<[ObjectIdentifier: Int]>([:])
    /// The explanations recorded and not yet taken, oldest first (trimmed to the newest
    /// `explanationLimit` whenever twice that many are kept).
    let explanations = Mutex<[PickExplanation]>([])
    /// How many explanations an observer reads at most (the newest).
    package static var explanationLimit: Int { 1024 }

    @usableFromInline
    struct ShardState: Sendable {
        @usableFromInline var snapshot: Snapshot?
        /// The versions `snapshot` was derived for (copied here, so the check reads no shared object).
        @usableFromInline var setVersion: UInt64 = .max
        @usableFromInline var ejectionVersion: UInt64 = .max
        @usableFromInline var rampEpoch: UInt64 = .max
        @usableFromInline var pick: PickState
        /// This shard's leases, by position in `snapshot`'s set (made on first use).
        @usableFromInline var leases: [EndpointLease<Request, Response>?] = []
        /// Whether an observer is attached: picks are counted (and maybe explained) on the
        /// observed path. Set under the shard's lock, so the plain path reads no shared word.
        @usableFromInline var observing = false
        /// With an observer that explains: one pick in `explainEvery` is explained; 0: none.
        @usableFromInline var explainEvery = 0
        @usableFromInline var explainCountdown = 0
        /// This shard's picks while observed, by slot (summed over shards when read).
        @usableFromInline var picksBySlot: [UInt64] = []

        init(snapshot: Snapshot?, pick: PickState) {
            self.snapshot = snapshot
            self.pick = pick
        }
    }

    /// One shard: its state, a flag held while a thread uses it, and padding so that two shards'
    /// hot words never share a cache line.
    ///
    /// The flag is only ever tried, never waited on: taking it is one atomic exchange and giving
    /// it back a plain store (release), where a `Mutex` costs two atomic read-modify-writes and a
    /// thread-id read, most of a round-robin pick (callpath, BENCHMARKS.md "The shard's flag"). A
    /// pick that finds its shard held takes the next free one; the rare paths that must reach one
    /// given shard (dropping snapshots, attaching an observer) retry until it is free. The state
    /// is reached through a pointer, so that no dynamic exclusivity check runs per pick.
    @usableFromInline
    final class Shard: @unchecked Sendable {
        /// Set while a thread uses `state`.
        @usableFromInline let held = Atomic<Bool>(false)
        /// Read and written only by the thread that set `held`.
        @usableFromInline let state: UnsafeMutablePointer<ShardState>
        @usableFromInline let index: Int
        // 128 bytes of padding after the hot fields.
        let padding:
            (
                UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64
            ) =
                (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

        init(_ state: ShardState, index: Int) {
            self.state = .allocate(capacity: 1)
            self.state.initialize(to: state)
            self.index = index
        }

        deinit {
            state.deinitialize(count: 1)
            state.deallocate()
        }

        /// Takes the shard if no other thread holds it; `false` when one does. A taken shard's
        /// `state` is the caller's until ``release()``.
        @inlinable @inline(__always)
        func tryHold() -> Bool {
            !held.exchange(true, ordering: .acquiring)
        }

        /// Gives the shard back.
        @inlinable @inline(__always)
        func release() {
            held.store(false, ordering: .releasing)
        }

        /// Runs `body` on the state, waiting (spinning) while another thread holds it: for paths
        /// off the pick path, which wait at most for one pick (or one snapshot build).
        func withState<Result>(_ body: (inout ShardState) -> Result) -> Result {
            while !tryHold() {
                while held.load(ordering: .relaxed) {}
            }
            defer { release() }
            return body(&state.pointee)
        }
    }

    /// The number of shards when the state is sharded: enough that threads rarely share one.
    package static var defaultShardCount: Int { 32 }

    /// - Parameters:
    ///   - source: Where sets come from.
    ///   - ejection: Outlier ejection to honour.
    ///   - strategy: How to choose.
    ///   - seed: The random stream's seed and the rotation's start. With a seed the balancer keeps
    ///     one shard, so that a sequence of picks is reproducible (at the cost of scaling).
    ///   - start: The rotation's start, when it is given apart from the seed.
    package init<B: Balancer>(
        for balancer: B.Type,
        source: SnapshotSource<Request, Response>,
        ejection: OutlierDetector?,
        strategy: Strategy,
        seed: UInt64?,
        start: UInt64? = nil,
        slowStart: SlowStart? = nil,
        zones: ZoneAwareRouting? = nil
    ) {
        self.zoneRouting = zones
        self.slowStart = slowStart
        if let now = slowStart?.now {
            self.slowStartNow = now
        } else {
            let origin = ContinuousClock.now
            self.slowStartNow = { ContinuousClock.now - origin }
        }
        self.source = source
        self.cache = source.cache
        self.instruments = source.cache?.instruments
        self.counts = source.cache?.instruments != nil
        self.balancerType = balancer
        let full = String(describing: balancer)
        self.balancerName = full.firstIndex(of: "<").map { String(full[..<$0]) } ?? full
        self.ejection = ejection
        self.strategy = strategy
        // A seeded balancer (or a rotation with a given start) keeps one shard, so that a sequence
        // of picks is reproducible.
        let count = seed == nil && start == nil ? Self.defaultShardCount : 1
        self.shardShift = UInt64(64 - count.trailingZeroBitCount)
        var generator = SystemRandomNumberGenerator()
        func makeShard(_ index: Int) -> Shard {
            let random = seed.map { $0 &+ UInt64(index) &* 0x9e37_79b9_7f4a_7c15 } ?? generator.next()
            let counter = start ?? seed ?? generator.next()
            return Shard(ShardState(snapshot: nil, pick: PickState(random: random, counter: counter)), index: index)
        }
        self.shards = (0..<count).map { makeShard($0) }
        self.shardRefs = shards.map { Unmanaged.passUnretained($0) }
        if case .fixed(let set) = source { ejection?.endpointSetWillPublish(set.view) }
        source.cache?.addObserver(self)
    }

    /// Builds the snapshot of a set about to be published, off the pick path: picks go on with the
    /// current snapshot meanwhile (they never wait for this build), and take the new one at once
    /// when the set is published. The cache calls this from its update, outside its lock.
    @usableFromInline package func endpointSetWillPublish(_ set: EndpointSetView) {
        guard let publishing = cache?.publishing, publishing.set.generation == set.generation else { return }
        // Built outside the lock: a pick that takes the newest snapshot meanwhile (its shard's
        // first pick after the previous set was published) must not wait for this build, which
        // at 10,000 instances takes milliseconds.
        let upcoming = build(publishing.set, setVersion: publishing.version)
        newest.withLock { $0.upcoming = upcoming }
    }

    /// Drops every snapshot of an older set, so that removed endpoints are not kept alive by
    /// shards that do not pick again; the next pick of each shard takes the new set (built before
    /// it was published). Takes each lock briefly, one at a time (the cache calls this outside its
    /// own lock).
    @usableFromInline package func endpointSetDidPublish(_ set: EndpointSetView) {
        newest.withLock { builds in
            builds.newest = builds.upcoming.flatMap { isCurrent($0) ? $0 : nil }
            builds.upcoming = nil
        }
        func drop(_ state: inout ShardState) {
            state.snapshot = nil
            state.leases = []
            state.setVersion = .max
        }
        for shard in shards {
            shard.withState { drop(&$0) }
        }
    }

    /// The shard index of the calling thread.
    @inlinable @inline(__always)
    var shardIndex: Int {
        var marker: UInt8 = 0
        // Threads' stacks lie far apart; frames of one thread lie close together. Bits from 128 KiB
        // up tell threads apart; the multiply spreads them over the shards.
        let address = withUnsafeMutablePointer(to: &marker) { UInt64(UInt(bitPattern: $0)) }
        let mixed = (address >> 17) &* 0x9e37_79b9_7f4a_7c15
        return shardShift < 64 ? Int(truncatingIfNeeded: mixed >> shardShift) : 0
    }

    /// The versions a snapshot must match to be current.
    @inlinable @inline(__always)
    func isCurrent(_ snapshot: Snapshot?) -> Bool {
        guard let snapshot else { return false }
        return snapshot.setVersion == (cache?.version ?? 0) && snapshot.ejectionVersion == (ejection?.version ?? 0)
            && snapshot.rampEpoch == currentRampEpoch
    }

    /// The ramp epoch now (0 without slow start: no load).
    @inlinable @inline(__always)
    var currentRampEpoch: UInt64 { slowStart == nil ? 0 : rampEpoch.load(ordering: .relaxed) }

    /// The ramps of a snapshot of `view` whose usable positions are `usable`: an id usable now and
    /// not at the previous build starts one (not at the first build); ramps that ended, or whose
    /// instance is no longer usable, are dropped. None when every usable instance would ramp.
    private func ramps(_ view: EndpointSetView, usable: [Int]) -> (ramps: [Duration?]?, end: Duration) {
        guard let slowStart else { return (nil, .zero) }
        let now = slowStartNow()
        let usableIDs = Set(usable.map { view.instances[$0].id })
        return ramping.withLock { state -> ([Duration?]?, Duration) in
            if let previous = state.usable {
                for id in usableIDs.subtracting(previous) { state.starts[id] = now }
            }
            state.usable = usableIDs
            state.starts = state.starts.filter { usableIDs.contains($0.key) && now - $0.value < slowStart.window }
            if state.starts.count >= usableIDs.count {
                // Every usable instance is new (a first set, or one that replaced all): none is held back.
                state.starts = [:]
            }
            guard let latest = state.starts.values.max() else { return (nil, .zero) }
            return (view.instances.map { state.starts[$0.id] }, latest + slowStart.window)
        }
    }

    /// `first`, or with slow start a position chosen again while the chosen one is ramping and a
    /// draw falls above its share (at most 8 draws): a ramping instance gets its share of what it
    /// would get. Once the ramps have ended, the epoch moves on and the snapshot is rebuilt.
    @usableFromInline
    func rampedChoice(_ first: Int, in snapshot: Snapshot, _ state: inout PickState) -> Int {
        admitted(first, in: snapshot, draw: { state.next() }, again: { choose(snapshot, &state) })
    }

    /// ``rampedChoice(_:in:_:)`` for a keyed pick: the draws come from the key's hash, so that a key
    /// goes on reaching the same instance, and as a ramp's share grows the keys that move to the
    /// ramping instance stay there. A key refused by a ramping instance looks up a rehash of itself.
    @usableFromInline
    func keyedRampedChoice(_ first: Int, hash: UInt64, in snapshot: Snapshot, _ lookup: (Strategy.Table, UInt64) -> Int?) -> Int {
        var key = hash
        return admitted(
            first, in: snapshot,
            draw: { WyRand.mix(key ^ 0x2545_f491_4f6c_dd1d) },
            again: {
                key = WyRand.mix(key &+ WyRand.increment)
                return lookup(snapshot.table, key)
            })
    }

    /// The ramp admission both choices share: keeps `first` unless it is ramping and `draw()` falls
    /// above its share, then tries `again()` (at most 8 draws); moves the epoch on once the ramps ended.
    private func admitted(_ first: Int, in snapshot: Snapshot, draw: () -> UInt64, again: () -> Int?) -> Int {
        guard let slowStart, let ramps = snapshot.ramps else { return first }
        let now = slowStartNow()
        if now >= snapshot.rampsEnd {
            _ = rampEpoch.compareExchange(expected: snapshot.rampEpoch, desired: snapshot.rampEpoch &+ 1, ordering: .relaxed)
            return first
        }
        var index = first
        for _ in 0..<8 {
            guard let start = ramps[index] else { return index }
            if Double(draw() >> 11) * 0x1p-53 < slowStart.share(after: now - start) { return index }
            guard let next = again() else { return index }
            index = next
        }
        return index
    }

    /// The newest snapshot, built if the set or the ejections changed since the last build.
    @usableFromInline
    package func currentSnapshot() -> Snapshot {
        newest.withLock { builds in
            if let newest = builds.newest, isCurrent(newest) { return newest }
            if let upcoming = builds.upcoming, isCurrent(upcoming) {
                // Published since it was built (a pick got here before the cache told the observers).
                builds.newest = upcoming
                builds.upcoming = nil
                return upcoming
            }
            let (set, setVersion) = source.current
            let built = build(set, setVersion: setVersion)
            builds.newest = built
            return built
        }
    }

    /// The newest snapshot built, without building one (for tests).
    package var builtSnapshot: Snapshot? { newest.withLock { $0.newest } }

    /// Derives the snapshot of `set` (whose source version is `setVersion`) under the ejections in
    /// force now. Builds of the picks are serialised by the `newest` lock; the build of a set about
    /// to be published runs beside them (what builds share, the per-id memos, slow start's ramps
    /// and the detector's state, is behind locks of their own).
    private func build(_ set: EndpointSet<Request, Response>, setVersion: UInt64) -> Snapshot {
        let ejectionVersion = ejection?.version ?? 0
        let epoch = currentRampEpoch
        let view = set.view
        let usable = set.isEmpty ? [] : ejection?.usablePositions(in: view) ?? Array(view.instances.indices)
        let table = strategy.makeTable(view, usable: usable)
        let (ramps, rampsEnd) = ramps(view, usable: usable)
        return Snapshot(
            set: set, table: table, setVersion: setVersion, ejectionVersion: ejectionVersion,
            ramps: ramps, rampsEnd: rampsEnd, rampEpoch: epoch, zones: zoneTables(view, usable: usable))
    }

    /// With zone-aware routing: the shares of the zones by ``ZoneAwareRouting``'s rule, and a table
    /// per zone that takes calls (its usable instances); `nil` when zones do not count.
    func zoneTables(_ view: EndpointSetView, usable: [Int]) -> ZoneTables<Strategy.Table>? {
        guard let zoneRouting, !usable.isEmpty else { return nil }
        var total: [String: Int] = [:]
        var scopes: [String: [Int]] = [:]
        for (position, instance) in view.instances.enumerated() {
            total[instance.zone ?? "", default: 0] += 1
            scopes[instance.zone ?? "", default: []].append(position)
        }
        var healthyPositions: [String: [Int]] = [:]
        // The detector's own flags: in panic mode `usable` is every position, and zones then
        // count every instance as healthy too.
        for position in usable { healthyPositions[view.instances[position].zone ?? "", default: []].append(position) }
        guard let shares = zoneRouting.shares(healthy: healthyPositions.mapValues(\.count), total: total) else { return nil }
        var tables: [Strategy.Table] = []
        var weights: [UInt64] = []
        var names: [String] = []
        for (zone, share) in shares.sorted(by: { $0.key < $1.key }) where share > 0 {
            guard let positions = healthyPositions[zone], !positions.isEmpty else { continue }
            tables.append(strategy.makeTable(view, usable: positions, scope: scopes[zone] ?? positions))
            weights.append(UInt64(share * 1_000_000_000))
            names.append(zone)
        }
        guard !tables.isEmpty else { return nil }
        let sum = Double(weights.reduce(0, +))
        return ZoneTables(
            tables: tables, choice: TableBuilders.aliasTable(values: Array(tables.indices), weights: weights), names: names,
            shares: weights.map { sum > 0 ? Double($0) / sum : 0 })
    }

    /// The strategy's choice in `snapshot`: in a zone chosen by its share when zones count.
    @inlinable @inline(__always)
    func choose(_ snapshot: Snapshot, _ state: inout PickState) -> Int? {
        guard let zones = snapshot.zones else { return strategy.choose(snapshot.table, &state) }
        if zones.tables.count == 1 { return strategy.choose(zones.tables[0], &state) }
        guard let zone = zones.choice.pick(state.next()) else { return nil }
        return strategy.choose(zones.tables[zone], &state)
    }

    /// A pick's choice: `keyed`'s lookup of its hash, or else the strategy's choice (``choose(_:_:)``),
    /// moved on by slow start's ramps while any are in force.
    @inlinable @inline(__always)
    func plainChoice(
        _ snapshot: Snapshot,
        _ state: inout PickState,
        keyed: (hash: UInt64, lookup: (Strategy.Table, UInt64) -> Int?)?
    ) -> Int? {
        if let keyed {
            guard let found = keyed.lookup(snapshot.table, keyed.hash) else { return nil }
            return snapshot.ramps == nil ? found : keyedRampedChoice(found, hash: keyed.hash, in: snapshot, keyed.lookup)
        }
        guard let chosen = choose(snapshot, &state) else { return nil }
        return snapshot.ramps == nil ? chosen : rampedChoice(chosen, in: snapshot, &state)
    }

    /// Runs `body` on the calling thread's shard state, refreshed to the current snapshot.
    /// `body` does not throw (a pick that finds no endpoint returns `nil`), so that nothing is
    /// wrapped on the way out.
    @inlinable @inline(__always)
    func withShard<Result: Sendable>(_ body: (inout ShardState, Snapshot, Int) -> Result) -> Result {
        let setVersion = cache?.version ?? 0
        let ejectionVersion = ejection?.version ?? 0
        let epoch = currentRampEpoch
        let count = shardRefs.count
        var index = shardIndex
        // A shard another thread holds (two threads whose stacks map to one shard, or a thread
        // preempted in its pick) is passed for the next.
        while !shardRefs[index]._withUnsafeGuaranteedRef({ $0.tryHold() }) {
            index = index &+ 1 == count ? 0 : index &+ 1
        }
        return shardRefs[index]._withUnsafeGuaranteedRef { shard in
            defer { shard.release() }
            let state = shard.state
            if state.pointee.setVersion != setVersion || state.pointee.ejectionVersion != ejectionVersion
                || state.pointee.rampEpoch != epoch || state.pointee.snapshot == nil
            {
                let snapshot = currentSnapshot()
                state.pointee.snapshot = snapshot
                state.pointee.setVersion = snapshot.setVersion
                state.pointee.ejectionVersion = snapshot.ejectionVersion
                state.pointee.rampEpoch = snapshot.rampEpoch
                state.pointee.leases = []
            }
            // The shard's state holds the snapshot, and it cannot change while the shard is held:
            // borrow it without a reference count (a retain here would write the shared snapshot's
            // count from every thread on every pick).
            return Unmanaged.passUnretained(state.pointee.snapshot.unsafelyUnwrapped)._withUnsafeGuaranteedRef { snapshot in
                body(&state.pointee, snapshot, shard.index)
            }
        }
    }

    /// Chooses an endpoint of the current set.
    @inlinable
    package func pick() throws(LoadBalancerError) -> EndpointPick {
        let pick = withShard { (state: inout ShardState, snapshot: Snapshot, _: Int) -> EndpointPick? in
            if _slowPath(state.observing) {
                return observedChoice(&state, snapshot, keyed: nil).map { EndpointPick(index: $0, generation: snapshot.set.generation) }
            }
            guard let index = plainChoice(snapshot, &state.pick, keyed: nil) else { return nil }
            return EndpointPick(index: index, generation: snapshot.set.generation)
        }
        guard let pick else { throw .noEndpoints }
        return pick
    }

    /// Chooses the position `lookup` gives for `hash` (a keyed choice) instead of the strategy's own.
    @inlinable
    package func pick(
        hash: UInt64,
        _ lookup: (Strategy.Table, UInt64) -> Int?
    ) throws(LoadBalancerError) -> EndpointPick {
        let pick = withShard { (state: inout ShardState, snapshot: Snapshot, _: Int) -> EndpointPick? in
            if _slowPath(state.observing) {
                let index = withoutActuallyEscaping(lookup) { lookup in observedChoice(&state, snapshot, keyed: (hash, lookup)) }
                return index.map { EndpointPick(index: $0, generation: snapshot.set.generation) }
            }
            guard var index = lookup(snapshot.table, hash) else { return nil }
            if snapshot.ramps != nil { index = keyedRampedChoice(index, hash: hash, in: snapshot, lookup) }
            return EndpointPick(index: index, generation: snapshot.set.generation)
        }
        guard let pick else { throw .noEndpoints }
        return pick
    }

    /// Chooses an endpoint and returns the lease of the call, counting the call as in flight on a
    /// load-aware strategy's instance. With `keyed`, its lookup of its hash replaces the strategy's
    /// choice (keyed picks).
    @inlinable
    package func lease(
        keyed: (hash: UInt64, lookup: (Strategy.Table, UInt64) -> Int?)? = nil
    ) throws(LoadBalancerError) -> EndpointLease<Request, Response> {
        if counts { return try countedLease(keyed) }
        return try uncountedLease(keyed)
    }

    @usableFromInline
    func countedLease(
        _ keyed: (hash: UInt64, lookup: (Strategy.Table, UInt64) -> Int?)?
    ) throws(LoadBalancerError) -> EndpointLease<Request, Response> {
        guard let instruments = cache?.instruments else { return try uncountedLease(keyed) }
        do {
            let lease = try uncountedLease(keyed)
            instruments.picked(by: balancerType) { balancerName }
            return lease
        } catch {
            instruments.foundNoEndpoint(balancerType) { balancerName }
            throw error
        }
    }

    @inlinable
    func uncountedLease(
        _ keyed: (hash: UInt64, lookup: (Strategy.Table, UInt64) -> Int?)?
    ) throws(LoadBalancerError) -> EndpointLease<Request, Response> {
        let lease = withShard { (state: inout ShardState, snapshot: Snapshot, shard: Int) -> EndpointLease<Request, Response>? in
            let chosen =
                if _slowPath(state.observing) {
                    observedChoice(&state, snapshot, keyed: keyed)
                } else {
                    plainChoice(snapshot, &state.pick, keyed: keyed)
                }
            guard let chosen else { return nil }
            return makeLease(at: chosen, in: snapshot, shard: shard, leases: &state.leases)
        }
        guard let lease else { throw .noEndpoints }
        lease.loadView?.started(shard: lease.loadShard)
        return lease
    }

    /// A lease for a position the caller chose in the current snapshot, from its set and the
    /// strategy's table (for picks that must avoid some instances), or `nil` when `choose` finds none.
    @inlinable
    package func lease(
        choosingIn choose: (EndpointSet<Request, Response>, Strategy.Table) -> Int?
    ) throws(LoadBalancerError) -> EndpointLease<Request, Response>? {
        let lease = withShard { (state: inout ShardState, snapshot: Snapshot, shard: Int) -> EndpointLease<Request, Response>? in
            guard let index = choose(snapshot.set, snapshot.table) else { return nil }
            if _slowPath(state.observing) { countPick(&state, slot: snapshot.set.slots[index]) }
            return makeLease(at: index, in: snapshot, shard: shard, leases: &state.leases)
        }
        if let lease { lease.loadView?.started(shard: lease.loadShard) }
        return lease
    }

    @inlinable
    func makeLease(
        at index: Int,
        in snapshot: Snapshot,
        shard: Int,
        leases: inout [EndpointLease<Request, Response>?]
    ) -> EndpointLease<Request, Response> {
        if leases.isEmpty { leases = Array(repeating: nil, count: snapshot.set.count) }
        if let lease = leases[index] { return lease }
        let load = strategy.load(snapshot.table, at: index)
        let lease = EndpointLease(
            endpoint: snapshot.set.endpoints[index],
            pick: EndpointPick(index: index, generation: snapshot.set.generation),
            slot: snapshot.set.slots[index],
            isPlain: load == nil && ejection == nil && !counts,
            load: load,
            loadShard: shard & (InstanceLoad.shardCount - 1)
        )
        leases[index] = lease
        return lease
    }

    /// Ends a call made with `lease`: its in-flight count, what the strategy learns, the ejection.
    @inlinable
    package func finish(
        _ lease: EndpointLease<Request, Response>, outcome: CallRecord.Outcome, latency: Duration, endedAt end: ContinuousClock.Instant?
    ) {
        if let load = lease.loadView {
            load.finished(shard: lease.loadShard)
            strategy.learn(load, outcome: outcome, latency: latency, endedAt: end)
        }
        ejection?.record(lease.record(outcome, latency: latency))
    }

    /// The load of the instance a pick (of any recent snapshot) or an id refers to, for callers
    /// that report with ``Balancer/willCall(_:slot:)`` and ``Balancer/record(_:)``.
    package func load(for pick: EndpointPick, instanceID: String?) -> InstanceLoad? {
        let snapshot = currentSnapshot()
        let set = snapshot.set
        if set.generation == pick.generation, pick.index >= 0, pick.index < set.count,
            instanceID == nil || set.instances[pick.index].id == instanceID
        {
            return strategy.load(snapshot.table, at: pick.index)
        }
        guard let instanceID, let index = set.instances.firstIndex(where: { $0.id == instanceID }) else { return nil }
        return strategy.load(snapshot.table, at: index)
    }

    /// The current set.
    package var snapshot: EndpointSet<Request, Response> { currentSnapshot().set }
}

/// The load of one instance as a load-aware balancer sees it: calls in flight, kept in shards that
/// are summed when read (each shard on a cache line of its own, so calls on different threads never
/// write one line), and the latency and failure averages.
@usableFromInline
package final class InstanceLoad: @unchecked Sendable {
    /// Shards of the in-flight count.
    @usableFromInline package static let shardCount = 8
    /// Words: shard i's in-flight count at i * 8; then latency, latency stamp, failure, failure stamp.
    @usableFromInline let words: UnsafeMutablePointer<Atomic<UInt64>>
    @usableFromInline static let stats = shardCount * 8

    package init() {
        words = allocateWords(Self.stats + 8)
    }

    deinit {
        words.deinitialize(count: Self.stats + 8)
        UnsafeMutableRawPointer(words).deallocate()
    }

    @usableFromInline
    package func started(shard: Int) { view.started(shard: shard) }

    @usableFromInline
    package func finished(shard: Int) { view.finished(shard: shard) }

    /// Calls in flight: the shards' sum.
    @inlinable
    package var outstanding: Double { view.outstanding }

    /// A word of the averages: 0 latency, 1 latency stamp, 2 failure, 3 failure stamp.
    @inlinable
    package func stat(_ index: Int) -> UInt64 { view.stat(index) }

    /// The words, for reading without a reference count while something else keeps this alive.
    @inlinable
    package var view: InstanceLoadView { InstanceLoadView(words: words) }
}

/// The loads of a load-aware strategy's instances, kept by instance id across sets, so that calls
/// in flight and averages survive a set change.
package typealias LoadsByID = ByID<InstanceLoad>

extension ByID where Value == InstanceLoad {
    /// The load of each instance of `set`, in order: the same object for an id the last set had,
    /// a new one otherwise.
    package func loads(for set: EndpointSetView) -> [InstanceLoad] {
        values(for: set) { _ in InstanceLoad() }
    }
}

/// Values derived per instance (a load, a hash) kept by instance id from one set to the next, so
/// that a set change makes values only for the instances it brings.
package final class ByID<Value: Sendable>: Sendable {
    /// The instances of the last set (its array as it was given: one reference, not a copy of its
    /// ids) and their values.
    private let last = Mutex<(instances: [Instance], values: [Value], ordered: Bool)>(([], [], true))

    package init() {}

    /// The value of each instance of `set`, in order: the last set's for an id it had, `make`'s
    /// otherwise. Ids no longer in the set are forgotten.
    ///
    /// Sets ordered by id (as caches publish them) are matched by walking both in step, without
    /// hashing an id (an unchanged instance's id is the same string, compared by identity);
    /// others through a dictionary.
    package func values(for set: EndpointSetView, make: (Instance) -> Value) -> [Value] {
        last.withLock { last in
            let ordered = set.isKnownOrderedByID || Instance.isOrderedByID(set.instances)
            var values: [Value] = []
            values.reserveCapacity(set.count)
            if ordered, last.ordered {
                let previousValues = last.values
                // Borrowed through buffer pointers, not copied (see Instance.isOrderedByID).
                set.instances.withUnsafeBufferPointer { instances in
                    last.instances.withUnsafeBufferPointer { previous in
                        var old = 0
                        for instance in instances.indices {
                            while old < previous.count, previous[old].id < instances[instance].id { old += 1 }
                            if old < previous.count, previous[old].id == instances[instance].id {
                                values.append(previousValues[old])
                            } else {
                                values.append(make(instances[instance]))
                            }
                        }
                    }
                }
            } else {
                var byID: [String: Value] = [:]
                for (instance, value) in zip(last.instances, last.values) { byID[instance.id] = value }
                values = set.instances.map { byID[$0.id] ?? make($0) }
            }
            last = (set.instances, values, ordered)
            return values
        }
    }
}

/// An ``InstanceLoad``'s words, read without touching its reference count (every thread's picks
/// read the same loads: a retain and release per read would write one shared line from all of
/// them). Valid while the load is alive: a P2C table holds both.
@usableFromInline
package struct InstanceLoadView: @unchecked Sendable {
    @usableFromInline let words: UnsafeMutablePointer<Atomic<UInt64>>

    @inlinable
    init(words: UnsafeMutablePointer<Atomic<UInt64>>) { self.words = words }

    /// Calls in flight: the shards' sum.
    @inlinable
    package var outstanding: Double {
        var sum: UInt64 = 0
        for shard in 0..<InstanceLoad.shardCount { sum &+= words[shard &* 8].load(ordering: .relaxed) }
        return Double(max(0, Int64(bitPattern: sum)))
    }

    /// A word of the averages: 0 latency, 1 latency stamp, 2 failure, 3 failure stamp.
    @inlinable
    package func stat(_ index: Int) -> UInt64 { words[InstanceLoad.stats &+ index].load(ordering: .relaxed) }

    @inlinable
    package func setStat(_ index: Int, _ value: UInt64) { words[InstanceLoad.stats &+ index].store(value, ordering: .relaxed) }

    @inlinable
    package func started(shard: Int) { words[shard &* 8].wrappingAdd(1, ordering: .relaxed) }

    @inlinable
    package func finished(shard: Int) { words[shard &* 8].wrappingSubtract(1, ordering: .relaxed) }
}

/// The first value of a balancer's counter or random state: `seed`, or random.
func initialState(_ seed: UInt64?) -> UInt64 {
    if let seed { return seed }
    var generator = SystemRandomNumberGenerator()
    return generator.next()
}

/// The wyrand generator's constants and mixing step.
@usableFromInline
enum WyRand {
    @usableFromInline static let increment: UInt64 = 0xa076_1d64_78bd_642f
    @usableFromInline static let mixer: UInt64 = 0xe703_7ed1_a0b4_28db

    @inlinable
    static func mix(_ s: UInt64) -> UInt64 {
        let product = s.multipliedFullWidth(by: s ^ mixer)
        return product.high ^ product.low
    }
}
