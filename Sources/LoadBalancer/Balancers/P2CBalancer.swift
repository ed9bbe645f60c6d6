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
/// Weights (``Instance/weight``) count when the usable instances' weights differ: the two
/// samples are drawn in proportion to weight and each cost is divided by the instance's weight,
/// so that in balance the calls in flight, and the shares of instances of equal latency, follow the
/// weights. A weight-0 instance is used only when every usable instance has weight 0. When all
/// weights are equal, picks are exactly those of the unweighted balancer.
///
/// The balancer learns from calls made through ``Balancer/withEndpoint(isolation:_:)`` (or
/// ``Retry``); `pick()` stays synchronous and allocation-free: it reads the snapshot's usable
/// instances and their loads, and uses the time of a recent completed call as "now" instead of
/// reading a clock. Calls in flight are counted in shards (summed when read), so calls on
/// different cores do not write one counter.
public final class P2CBalancer<Request: Sendable, Response: Sendable>: CoreBalancer {
    /// What the balancer compares.
    public typealias LoadMetric = P2CLoadMetric

    @usableFromInline let core: BalancerCore<Request, Response, Strategy>
    /// The cache the balancer follows, if any.
    public let cache: EndpointCache<Request, Response>?
    /// The load metric.
    public var metric: LoadMetric { core.strategy.metric }

    /// Creates a P2C balancer.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - metric: What to compare. Default ``P2CLoadMetric/peakEWMA(decayTime:)`` with τ = 10 s.
    ///   - configuration: Failure-awareness tuning.
    ///   - seed: Makes the sampling reproducible. Default: random per thread.
    ///   - ejection: Outlier ejection to honour. Default: none.
    ///   - slowStart: Ramps the share of instances new to the set or back from ejection. Default: none.
    ///   - zones: Keeps traffic in the client's zone while it has the capacity (Envoy's zone-aware
    ///     routing); the balancer picks inside the zone chosen. Default: none.
    ///   - now: The time source for latency decay (monotonic, any origin). Default: `ContinuousClock`.
    public convenience init(
        _ endpoints: EndpointCache<Request, Response>,
        metric: LoadMetric = .peakEWMA(),
        configuration: P2CConfiguration = P2CConfiguration(),
        seed: UInt64? = nil,
        ejection: OutlierDetector? = nil,
        slowStart: SlowStart? = nil, zones: ZoneAwareRouting? = nil,
        now: (@Sendable () -> Duration)? = nil
    ) {
        self.init(
            source: .cache(endpoints), metric: metric, configuration: configuration, seed: seed, ejection: ejection, slowStart: slowStart,
            zones: zones,
            now: now)
    }

    /// Creates a P2C balancer over a fixed array of endpoints.
    ///
    /// - Parameters:
    ///   - endpoints: The endpoints to choose among.
    ///   - metric: What to compare. Default ``P2CLoadMetric/peakEWMA(decayTime:)`` with τ = 10 s.
    ///   - configuration: Failure-awareness tuning.
    ///   - seed: Makes the sampling reproducible. Default: random per thread.
    ///   - ejection: Outlier ejection to honour. Default: none.
    ///   - slowStart: Ramps the share of instances new to the set or back from ejection. Default: none.
    ///   - zones: Keeps traffic in the client's zone while it has the capacity (Envoy's zone-aware
    ///     routing); the balancer picks inside the zone chosen. Default: none.
    ///   - now: The time source for latency decay (monotonic, any origin). Default: `ContinuousClock`.
    public convenience init(
        endpoints: [Endpoint<Request, Response>],
        metric: LoadMetric = .peakEWMA(),
        configuration: P2CConfiguration = P2CConfiguration(),
        seed: UInt64? = nil,
        ejection: OutlierDetector? = nil,
        slowStart: SlowStart? = nil, zones: ZoneAwareRouting? = nil,
        now: (@Sendable () -> Duration)? = nil
    ) {
        self.init(
            source: .fixed(endpoints), metric: metric, configuration: configuration, seed: seed, ejection: ejection, slowStart: slowStart,
            zones: zones,
            now: now)
    }

    init(
        source: SnapshotSource<Request, Response>,
        metric: LoadMetric,
        configuration: P2CConfiguration,
        seed: UInt64?,
        ejection: OutlierDetector?,
        slowStart: SlowStart?, zones: ZoneAwareRouting?,
        now: (@Sendable () -> Duration)?
    ) {
        self.cache = source.cache
        let strategy: Strategy
        if let now {
            strategy = Strategy(metric: metric, configuration: configuration, now: now, origin: nil)
        } else {
            let origin = ContinuousClock.now
            strategy = Strategy(metric: metric, configuration: configuration, now: { ContinuousClock.now - origin }, origin: origin)
        }
        self.core = BalancerCore(
            for: Self.self, source: source, ejection: ejection, strategy: strategy, seed: seed, slowStart: slowStart, zones: zones)
    }

    /// `true`: the balancer learns every call's latency and outcome.
    public var observesCalls: Bool { true }

    /// Counts the call as in flight on its instance (for callers that pick and call by themselves).
    public func willCall(_ pick: EndpointPick, slot: UInt32) {
        core.load(for: pick, instanceID: nil)?.started(shard: 0)
    }

    /// Learns the call's outcome: ends its in-flight count, passes the outcome to the ejection
    /// detector (if any), and, unless the call was cancelled, updates the instance's failure average
    /// and its latency estimate (a failed call may raise the estimate, never lower it).
    public func record(_ call: CallRecord) {
        core.ejection?.record(call)
        guard let load = core.load(for: call.pick, instanceID: call.instanceID) else { return }
        load.finished(shard: 0)
        core.strategy.learn(load.view, outcome: call.outcome, latency: call.latency, endedAt: nil)
    }

    /// e^(−x), as the balancer computes it (for tests of its accuracy).
    package static func decayFactor(_ x: Double) -> Double { expNegative(x) }

    /// The table is the usable positions and every position's load (kept across sets by instance
    /// id); the costs are computed at pick time from the loads.
    @usableFromInline
    final class Strategy: PickStrategy {
        @usableFromInline
        struct Table: Sendable {
            @usableFromInline var usable: [Int]
            /// The loads (owned here, so that `views` stay valid).
            @usableFromInline var loads: [InstanceLoad]
            /// The loads' words, which picks read without reference counting.
            @usableFromInline var views: [InstanceLoadView]
            /// When the usable instances' weights differ: samples in proportion to weight, and each
            /// position's weight relative to the largest (a cost is divided by it). Empty, the
            /// unweighted path: uniform samples, costs compared as they are.
            @usableFromInline var weighted: AliasTable
            @usableFromInline var weights: [Double]
        }

        @usableFromInline let metric: LoadMetric
        @usableFromInline let tauNanos: Double
        @usableFromInline let failureTauNanos: Double
        @usableFromInline let failureWeight: Double
        let now: @Sendable () -> Duration
        /// When `now` is `ContinuousClock`'s time since this instant: a call's end instant gives the
        /// time without reading the clock again.
        let origin: ContinuousClock.Instant?
        /// The loads of the instances of the newest table, by id.
        private let loadsByID = LoadsByID()
        /// The time (ns) of a recent completed call, the "now" of picks (written at most every
        /// 50 µs, so completions on many threads rarely write it).
        @usableFromInline let clock = InstanceLoad()
        /// `clock`'s words, read by picks without reference counting.
        @usableFromInline let clockView: InstanceLoadView

        // Stat words of an InstanceLoad.
        @inlinable static var latency: Int { 0 }
        @inlinable static var latencyStamp: Int { 1 }
        @inlinable static var failure: Int { 2 }
        @inlinable static var failureStamp: Int { 3 }
        /// The cost of an instance with calls in flight but no latency observed yet (Finagle's penalty).
        @inlinable static var penalty: Double { 1e12 }

        init(
            metric: LoadMetric, configuration: P2CConfiguration, now: @escaping @Sendable () -> Duration, origin: ContinuousClock.Instant?
        ) {
            self.metric = metric
            self.tauNanos = max(1, metric.decayTime.nanosecondsValue)
            self.failureTauNanos = max(1, configuration.failureDecayTime.nanosecondsValue)
            self.failureWeight = min(1, max(0, configuration.failureWeight))
            self.now = now
            self.origin = origin
            self.clockView = clock.view
        }

        @usableFromInline
        func makeTable(_ set: EndpointSetView, usable: [Int]) -> Table {
            let loads = loadsByID.loads(for: set)
            var table = Table(usable: usable, loads: loads, views: loads.map(\.view), weighted: AliasTable(), weights: [])
            let weights = TableBuilders.effectiveWeights(set, usable)
            if let first = weights.first, weights.contains(where: { $0 != first }) {
                table.weighted = TableBuilders.aliasTable(set, usable)
                let largest = Double(weights.max() ?? 1)
                table.weights = [Double](repeating: 0, count: set.count)
                for (position, weight) in zip(usable, weights) { table.weights[position] = Double(weight) / largest }
            }
            return table
        }

        @usableFromInline
        func load(_ table: Table, at index: Int) -> InstanceLoad? { table.loads[index] }

        /// Samples two distinct usable positions and returns the cheaper one.
        @inlinable @inline(__always)
        func choose(_ table: Table, _ state: inout PickState) -> Int? {
            let n = table.usable.count
            guard n > 0 else { return nil }
            if n == 1 { return table.usable[0] }
            guard let (a, b) = candidates(table, &state) else { return nil }
            if b == a { return a }
            let pickNow = Double(Int64(bitPattern: clockView.stat(0)))
            return cheaper(table, a, cost(table.views[a], now: pickNow), b, cost(table.views[b], now: pickNow))
        }

        /// A pick's two candidates (of two or more usable positions): two distinct positions drawn
        /// uniformly, or, weighted, two drawn in proportion to weight (a second draw that lands on
        /// the first sample is drawn once more; a third same draw keeps it: then both are one, and
        /// an instance that heavy wins most pairs anyway).
        @inlinable @inline(__always)
        func candidates(_ table: Table, _ state: inout PickState) -> (Int, Int)? {
            if !table.weighted.isEmpty {
                guard let a = table.weighted.pick(state.next()) else { return nil }
                var b = table.weighted.pick(state.next()) ?? a
                if b == a { b = table.weighted.pick(state.next()) ?? a }
                return (a, b)
            }
            let n = table.usable.count
            let (first, rest) = state.next().multipliedFullWidth(by: UInt64(n))
            var second = rest.multipliedFullWidth(by: UInt64(n - 1)).high
            if second >= first { second &+= 1 }
            return (table.usable[Int(truncatingIfNeeded: first)], table.usable[Int(truncatingIfNeeded: second)])
        }

        /// The candidate of lower cost (load / health), `a` on a tie. Weighted P2C compares the cost
        /// per unit of weight (Envoy's weighted least request divides by weight alike): in balance,
        /// calls in flight, and so the shares of instances of equal latency, follow the weights.
        @inlinable @inline(__always)
        func cheaper(_ table: Table, _ a: Int, _ costA: (Double, Double), _ b: Int, _ costB: (Double, Double)) -> Int {
            let (loadA, healthA) = costA
            let (loadB, healthB) = costB
            // loadA / (healthA × weightA) <= loadB / (healthB × weightB), without dividing.
            if table.weighted.isEmpty { return loadA * healthB <= loadB * healthA ? a : b }
            return loadA * healthB * table.weights[b] <= loadB * healthA * table.weights[a] ? a : b
        }

        /// ``choose(_:_:)`` with the same draws, recording the two candidates and their costs.
        @usableFromInline
        func explainedChoice(
            _ table: Table, _ state: inout PickState, _ set: EndpointSetView, _ explanation: inout PickExplanation
        ) -> Int? {
            guard table.usable.count > 1 else { return choose(table, &state) }
            guard let (a, b) = candidates(table, &state) else { return nil }
            if b == a { return a }
            let pickNow = Double(Int64(bitPattern: clockView.stat(0)))
            let costA = cost(table.views[a], now: pickNow)
            let costB = cost(table.views[b], now: pickNow)
            let weighted = !table.weighted.isEmpty
            explanation.candidates = [
                candidate(table, set, a, load: costA.0, health: costA.1, weight: weighted ? table.weights[a] : 1, now: pickNow),
                candidate(table, set, b, load: costB.0, health: costB.1, weight: weighted ? table.weights[b] : 1, now: pickNow),
            ]
            return cheaper(table, a, costA, b, costB)
        }

        private func candidate(
            _ table: Table, _ set: EndpointSetView, _ position: Int, load: Double, health: Double, weight: Double, now: Double
        ) -> PickExplanation.Candidate {
            let view = table.views[position]
            return PickExplanation.Candidate(
                instanceID: set.instances[position].id,
                cost: load / max(health, 1e-12) / max(weight, 1e-12),
                inFlight: Int(view.outstanding),
                successRate: health.squareRoot(),
                latencyEstimate: latencyEstimate(view, now: now)
            )
        }

        /// The peak-EWMA estimate decayed to `now` (ns), or `nil` (no estimate, or least-outstanding).
        private func latencyEstimate(_ view: InstanceLoadView, now: Double) -> Duration? {
            guard metric.kind == .peakEWMA else { return nil }
            let estimate = Double(bitPattern: view.stat(Self.latency))
            guard estimate > 0 else { return nil }
            let decayed = estimate * decay((now - Double(view.stat(Self.latencyStamp))) / tauNanos)
            return .nanoseconds(Int64(decayed.rounded()))
        }

        /// Calls in flight, the latency estimate and the success average, decayed to now.
        @usableFromInline
        func describe(_ table: Table, at index: Int, _ state: inout InstanceState) {
            let view = table.views[index]
            let time = Double(now().nanosecondsValue)
            state.inFlight = Int(view.outstanding)
            state.latencyEstimate = latencyEstimate(view, now: time)
            let failureBits = view.stat(Self.failure)
            // A learned call stamps the latency; a failure also the failure average (a success at
            // average 0 leaves it, and its stamp, alone).
            guard failureBits != 0 || view.stat(Self.failureStamp) != 0 || view.stat(Self.latencyStamp) != 0 else { return }
            let failure = Double(bitPattern: failureBits)
            state.successRate = 1 - failure * decay((time - Double(view.stat(Self.failureStamp))) / failureTauNanos)
        }

        /// The load of an instance and its health in `(0, 1]`: the cost is load / health, lower is
        /// better (returned apart so that comparing two costs needs no division).
        @inlinable @inline(__always)
        func cost(_ load: InstanceLoadView, now pickNow: Double) -> (load: Double, health: Double) {
            let outstanding = load.outstanding
            let failureBits = load.stat(Self.failure)
            var health = 1.0
            if failureBits != 0 {
                let failure = Double(bitPattern: failureBits)
                let stamp = Double(load.stat(Self.failureStamp))
                let success = max(0.001, 1 - failure * decay((pickNow - stamp) / failureTauNanos))
                // Squared, so that a fast-failing instance's cost cannot settle level with healthy ones.
                health = success * success
            }
            switch metric.kind {
            case .leastOutstanding:
                return (outstanding + 1, health)
            case .peakEWMA:
                let estimate = Double(bitPattern: load.stat(Self.latency))
                if estimate == 0 {
                    return (outstanding == 0 ? 0 : Self.penalty + outstanding, health)
                }
                let stamp = Double(load.stat(Self.latencyStamp))
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

        /// Updates the instance's failure average and latency estimate (not for a cancelled call).
        @usableFromInline
        func learn(
            _ load: InstanceLoadView, outcome: CallRecord.Outcome, latency callLatency: Duration, endedAt end: ContinuousClock.Instant?
        ) {
            let time: Double
            if let origin, let end {
                time = (end - origin).nanosecondsValue
            } else {
                time = now().nanosecondsValue
            }
            let lastTime = Double(Int64(bitPattern: clockView.stat(0)))
            if time - lastTime >= 50_000 || time < lastTime {
                clockView.setStat(0, UInt64(bitPattern: Int64(time)))
            }
            guard outcome != .cancelled else { return }

            let failed = outcome == .failure
            // Failure average: decay toward 0 since its last update, then move toward this outcome.
            // At 0 a success leaves it at 0 (its stamp is read only while it is not 0).
            let oldFailure = Double(bitPattern: load.stat(Self.failure))
            if oldFailure != 0 || failed {
                let failureAge = time - Double(load.stat(Self.failureStamp))
                let decayed = oldFailure * expNegative(failureAge / failureTauNanos)
                let newFailure = decayed * (1 - failureWeight) + (failed ? failureWeight : 0)
                load.setStat(Self.failure, newFailure.bitPattern)
                load.setStat(Self.failureStamp, UInt64(time))
            }

            // Latency estimate (peak EWMA). A failure never lowers it: failing fast must not look fast.
            let latency = callLatency.nanosecondsValue
            let estimate = Double(bitPattern: load.stat(Self.latency))
            let age = time - Double(load.stat(Self.latencyStamp))
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
            load.setStat(Self.latency, updated.bitPattern)
            load.setStat(Self.latencyStamp, UInt64(time))
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
