import Synchronization

/// Power of two choices: each pick samples two distinct usable instances at random and takes the
/// one with the lower load, as Finagle's and tower's balancers do.
///
/// Two load metrics (``LoadMetric``):
/// - ``P2CLoadMetric/leastOutstanding``: the number of calls in flight.
/// - ``P2CLoadMetric/peakEWMA(decayTime:)``: a peak-sensitive moving average of latency times
///   (calls in flight + 1). A latency above the estimate replaces it at once; below, the estimate
///   moves toward it with weight 1 − e^(−Δt/τ), and between observations it decays toward 0 so an
///   idle instance is tried again.
///
/// Both divide the load by the square of the instance's recent success rate (an average that
/// forgets failures over ``P2CConfiguration/failureDecayTime``), and a failed call never lowers the latency estimate,
/// so an instance that fails fast looks *expensive*, not fast: no black hole.
///
/// The balancer learns from calls made through ``Balancer/withEndpoint(isolation:_:)`` (or
/// ``Retry``); `pick()` stays synchronous, lock-free and allocation-free: it reads a table of usable
/// instances and their per-instance counters, and uses the time of the latest completed call as
/// "now" instead of reading a clock.
public final class P2CBalancer<Request: Sendable, Response: Sendable>: Balancer {
    /// What the balancer compares.
    public typealias LoadMetric = P2CLoadMetric
    /// Tuning of the failure-awareness.
    public typealias Configuration = P2CConfiguration

    /// The endpoints the balancer chooses among.
    public let endpoints: EndpointCache<Request, Response>
    /// The load metric.
    public let metric: LoadMetric
    /// The ejection this balancer honours, if any.
    public let ejection: OutlierDetector?

    /// The random stream of picks (on a cache line of its own).
    @usableFromInline let random: PickRandom
    /// The time (ns) of the latest completed call, which is the "now" of picks, in word 0 of a cache
    /// line of its own, so that picking threads never write a line holding read-only fields.
    @usableFromInline nonisolated(unsafe) let clock: UnsafeMutablePointer<Atomic<UInt64>>
    /// Keeps the table observer alive; ``tableStorage`` is what `pick()` reads.
    let table: BalancerTable
    /// The table's storage, referenced without reference counting (`table` keeps it alive).
    @usableFromInline let tableStorage: Unmanaged<SeqLockTable>
    /// Per-instance counters, addressed from the table.
    let stats = SlotStorage(wordsPerSlot: 5)
    @usableFromInline let tauNanos: Double
    @usableFromInline let failureTauNanos: Double
    @usableFromInline let failureWeight: Double
    private let now: @Sendable () -> Duration

    // Per-slot words.
    @usableFromInline static var outstanding: Int { 0 }
    @usableFromInline static var latency: Int { 1 }
    @usableFromInline static var latencyStamp: Int { 2 }
    @usableFromInline static var failure: Int { 3 }
    @usableFromInline static var failureStamp: Int { 4 }
    /// The cost of an instance with calls in flight but no latency observed yet (Finagle's penalty).
    @usableFromInline static var penalty: Double { 1e12 }

    /// Creates a P2C balancer.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - metric: What to compare. Default ``P2CLoadMetric/peakEWMA(decayTime:)`` with τ = 10 s.
    ///   - configuration: Failure-awareness tuning.
    ///   - seed: Makes the sampling reproducible. Default: random.
    ///   - ejection: Outlier ejection to honour. Default: none.
    ///   - now: The time source for latency decay (monotonic, any origin). Default: `ContinuousClock`.
    public init(
        _ endpoints: EndpointCache<Request, Response>,
        metric: LoadMetric = .peakEWMA(),
        configuration: Configuration = Configuration(),
        seed: UInt64? = nil,
        ejection: OutlierDetector? = nil,
        now: (@Sendable () -> Duration)? = nil
    ) {
        self.endpoints = endpoints
        self.metric = metric
        self.ejection = ejection
        self.random = PickRandom(seed: seed)
        self.clock = allocateWords(8)
        self.tauNanos = max(1, Self.nanos(metric.decayTime))
        self.failureTauNanos = max(1, Self.nanos(configuration.failureDecayTime))
        self.failureWeight = min(1, max(0, configuration.failureWeight))
        if let now {
            self.now = now
        } else {
            let origin = ContinuousClock.now
            self.now = { ContinuousClock.now - origin }
        }
        let stats = self.stats
        // Slots given to new instances start clean (registered before the table, so a slot is
        // reset before a table naming it is published).
        let reset = SlotResetter(stats: stats)
        endpoints.addObserver(reset)
        self.resetter = reset
        (table, tableStorage) = BalancerTable.attached(to: endpoints, ejection: ejection) { view, usable in
            usable.flatMap { position -> [UInt64] in
                let slot = view.slots[position]
                stats.ensure(slot)
                let address = stats.words(slot).map { UInt64(UInt(bitPattern: $0)) } ?? 0
                return [UInt64(position), address]
            }
        }
    }

    private let resetter: SlotResetter

    deinit {
        random.deallocate()
        clock.deinitialize(count: 8)
        UnsafeMutableRawPointer(clock).deallocate()
    }

    /// Table entries are two words: the position, and the address of the instance's counters
    /// (slot storage never moves or frees them), so a pick reaches the counters in one load.
    /// No pick executes a locked instruction (see `PickRandom`).
    @inlinable
    public func pick() throws(LoadBalancerError) -> EndpointPick {
        let r = random.next()
        return try resolveTableRead(choose(r), endpoints.shape, r)
    }

    /// Samples two distinct entries with `r` and returns the cheaper one.
    @inlinable @inline(__always)
    func choose(_ r: UInt64) -> EndpointPick?? {
        tableStorage._withUnsafeGuaranteedRef {
            $0.read { generation, count, words -> EndpointPick? in
                let n = count >> 1
                guard n > 0 else { return nil }
                if n == 1 {
                    return EndpointPick(index: Int(truncatingIfNeeded: words[0].load(ordering: .relaxed)), generation: generation)
                }
                let (first, rest) = r.multipliedFullWidth(by: UInt64(n))
                var second = rest.multipliedFullWidth(by: UInt64(n - 1)).high
                if second >= first { second &+= 1 }
                let a = 2 &* Int(truncatingIfNeeded: first)
                let b = 2 &* Int(truncatingIfNeeded: second)
                let (loadA, healthA) = cost(words[a &+ 1].load(ordering: .relaxed))
                let (loadB, healthB) = cost(words[b &+ 1].load(ordering: .relaxed))
                // loadA / healthA <= loadB / healthB, without dividing.
                let chosen = loadA * healthB <= loadB * healthA ? a : b
                return EndpointPick(index: Int(truncatingIfNeeded: words[chosen].load(ordering: .relaxed)), generation: generation)
            }
        }
    }

    /// The "now" of picks: the time (ns) of the latest completed call (read only when an
    /// instance's counters need decaying).
    @inlinable @inline(__always)
    var pickNow: Double { Double(Int64(bitPattern: clock[0].load(ordering: .relaxed))) }

    /// The load of the instance whose counters are at `address`, and its health in `(0, 1]`: the
    /// cost is load / health, lower is better (returned apart so that comparing two costs needs no
    /// division).
    @inlinable @inline(__always)
    func cost(_ address: UInt64) -> (load: Double, health: Double) {
        guard let words = UnsafeMutablePointer<Atomic<UInt64>>(bitPattern: UInt(truncatingIfNeeded: address)) else {
            return (0, 1)
        }
        let outstanding = Double(max(0, Int64(bitPattern: words[Self.outstanding].load(ordering: .relaxed))))
        let failureBits = words[Self.failure].load(ordering: .relaxed)
        var health = 1.0
        if failureBits != 0 {
            let failure = Double(bitPattern: failureBits)
            let stamp = Double(words[Self.failureStamp].load(ordering: .relaxed))
            let success = max(0.001, 1 - failure * decay((pickNow - stamp) / failureTauNanos))
            // Squared, so that a fast-failing instance's cost cannot settle level with healthy ones.
            health = success * success
        }
        switch metric.kind {
        case .leastOutstanding:
            return (outstanding + 1, health)
        case .peakEWMA:
            let estimate = Double(bitPattern: words[Self.latency].load(ordering: .relaxed))
            if estimate == 0 {
                return (outstanding == 0 ? 0 : Self.penalty + outstanding, health)
            }
            let stamp = Double(words[Self.latencyStamp].load(ordering: .relaxed))
            return (estimate * decay((pickNow - stamp) / tauNanos) * (outstanding + 1), health)
        }
    }

    /// e^(−x), with a short series for the common case of a small x (the time since an instance's
    /// last update is usually a tiny fraction of the decay time).
    @inlinable @inline(__always)
    func decay(_ x: Double) -> Double {
        if x < 0.01 { return x <= 0 ? 1 : 1 - x + x * x * 0.5 }
        return expNegative(x)
    }

    /// `true`: the balancer learns every call's latency and outcome.
    public var observesCalls: Bool { true }

    /// Counts the call as in flight on its instance.
    public func willCall(_ pick: EndpointPick, slot: UInt32) {
        stats.words(slot)?[Self.outstanding].wrappingAdd(1, ordering: .relaxed)
    }

    /// Learns the call's outcome: ends its in-flight count, passes the outcome to the ``ejection``
    /// detector (if any), and, unless the call was cancelled, updates the instance's failure average
    /// and its latency estimate (a failed call may raise the estimate, never lower it).
    public func record(_ call: CallRecord) {
        ejection?.record(call)
        guard let words = stats.words(call.slot) else { return }
        words[Self.outstanding].wrappingSubtract(1, ordering: .relaxed)
        let time = Self.nanos(now())
        clock[0].store(UInt64(bitPattern: Int64(time)), ordering: .relaxed)
        guard call.outcome != .cancelled else { return }

        let failed = call.outcome == .failure
        // Failure average: decay toward 0 since its last update, then move toward this outcome.
        let oldFailure = Double(bitPattern: words[Self.failure].load(ordering: .relaxed))
        let failureAge = time - Double(words[Self.failureStamp].load(ordering: .relaxed))
        let decayed = oldFailure * expNegative(failureAge / failureTauNanos)
        let newFailure = decayed * (1 - failureWeight) + (failed ? failureWeight : 0)
        words[Self.failure].store(newFailure.bitPattern, ordering: .relaxed)
        words[Self.failureStamp].store(UInt64(time), ordering: .relaxed)

        // Latency estimate (peak EWMA). A failure never lowers it: failing fast must not look fast.
        let latency = Self.nanos(call.latency)
        let estimate = Double(bitPattern: words[Self.latency].load(ordering: .relaxed))
        let age = time - Double(words[Self.latencyStamp].load(ordering: .relaxed))
        let weight = expNegative(age / tauNanos)
        let current = estimate * weight
        let updated: Double
        if latency > current {
            updated = latency
        } else if failed {
            updated = current
        } else {
            updated = current * weight + latency * (1 - weight)
        }
        words[Self.latency].store(updated.bitPattern, ordering: .relaxed)
        words[Self.latencyStamp].store(UInt64(time), ordering: .relaxed)
    }

    /// e^(−x), as the balancer computes it (for tests of its accuracy).
    package static func decayFactor(_ x: Double) -> Double { expNegative(x) }

    static func nanos(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) * 1e9 + Double(attoseconds) / 1e9
    }
}

/// Clears a slot's counters when the cache gives it to a new instance.
final class SlotResetter: EndpointSetObserver, @unchecked Sendable {
    private let stats: SlotStorage
    private let ids = Mutex<[UInt32: String]>([:])

    init(stats: SlotStorage) { self.stats = stats }

    func endpointSetWillPublish(_ set: EndpointSetView) {
        ids.withLock { ids in
            var next: [UInt32: String] = [:]
            for (slot, instance) in zip(set.slots, set.instances) {
                next[slot] = instance.id
                if ids[slot] != instance.id { stats.reset(slot) }
            }
            ids = next
        }
    }
}

/// What a ``P2CBalancer`` compares.
public struct P2CLoadMetric: Sendable, Hashable {
    @usableFromInline
    enum Kind: Sendable, Hashable {
        case leastOutstanding
        case peakEWMA
    }
    @usableFromInline let kind: Kind
    @usableFromInline let decayTime: Duration

    /// Calls in flight.
    public static let leastOutstanding = P2CLoadMetric(kind: .leastOutstanding, decayTime: .seconds(10))

    /// Peak-EWMA latency × (calls in flight + 1), with decay time τ (default 10 s).
    public static func peakEWMA(decayTime: Duration = .seconds(10)) -> P2CLoadMetric {
        P2CLoadMetric(kind: .peakEWMA, decayTime: decayTime)
    }
}

/// Tuning of the failure-awareness.
public struct P2CConfiguration: Sendable, Hashable {
    /// How fast a failure is forgotten (the failure average decays by e^(−Δt/τ)). Default 10 s.
    public var failureDecayTime: Duration = .seconds(10)
    /// How much one call moves the failure average, in `0...1`. Default 0.1.
    public var failureWeight: Double = 0.1
    /// The default tuning.
    public init() {}
}

