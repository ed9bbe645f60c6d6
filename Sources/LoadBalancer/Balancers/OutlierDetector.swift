import Synchronization

/// Passive outlier ejection: watches every call's outcome and takes misbehaving instances out of
/// rotation for a while, as Envoy's outlier detection does.
///
/// Two rules eject an instance:
/// - **Consecutive failures**: ``Configuration/consecutiveFailures`` failures in a row.
/// - **Failure rate**: at the end of each ``Configuration/interval``, an instance that served at
///   least ``FailureRateRule/minimumRequests`` calls and failed at least
///   ``FailureRateRule/threshold`` of them, and at least ``FailureRateRule/relativeFactor`` times
///   the mean failure rate of its peers. A backend failing 20% of its calls is caught here, where
///   a run of 5 consecutive failures would take thousands of calls to happen.
///
/// An ejected instance stays out for ``Configuration/baseEjectionTime`` times the number of times
/// it has been ejected (capped at ``Configuration/maxEjectionTime``). Then it is *probed back*: it
/// takes traffic again, a single failure re-ejects it at once, and
/// ``Configuration/probeSuccesses`` successes in a row make it healthy. Each interval in which a
/// healthy instance does not fail lowers its ejection multiplier by one.
///
/// At most ``Configuration/maxEjectionPercent`` of the instances are ejected at a time (at least
/// one), except in a set of several priority levels (``Instance/priority``): there an instance may
/// be ejected past the cap while an instance of another level is not ejected, so that a failing
/// level's calls can fail over (``PriorityBalancer``); the cap holds again once only one level has
/// healthy instances left. When fewer than ``Configuration/panicThreshold`` of the instances are
/// healthy, balancers ignore ejection and balance over all of them (panic mode;
/// ``PriorityBalancer`` applies its own panic rule per level instead).
///
/// ## Active health checks
///
/// A ``HealthChecker`` attached to the detector adds a second judge: an instance whose active check
/// fails (``HealthChecker/Configuration/unhealthyThreshold`` times in a row) is out of picks until
/// it passes again, whatever the cap: the cap limits what passive ejection may guess from calls,
/// not what a failing check shows. The panic rule counts it as unhealthy like an ejected instance.
/// A passing check ends a passive ejection early only when
/// ``HealthChecker/Configuration/passingCheckEndsEjection`` says so. Both judges' changes appear in
/// ``events`` and in the cache's metrics.
///
/// Give the same detector to a balancer at creation (`RoundRobinBalancer(cache, ejection: detector)`);
/// every balancer of the library honours it. Time comes from an injected clock.
public final class OutlierDetector: EndpointSetObserver, @unchecked Sendable {
    /// The failure-rate rule.
    public struct FailureRateRule: Sendable, Hashable {
        /// Calls an instance must have served in the interval to be judged. Default 20.
        public var minimumRequests: Int = 20
        /// The lowest failure rate that ejects, in `0...1`. Default 0.1.
        public var threshold: Double = 0.1
        /// How many times the peers' mean failure rate an instance must reach. Default 2: when every
        /// instance fails alike (the service, not an instance, is broken) nobody is ejected.
        public var relativeFactor: Double = 2

        /// Creates the rule.
        public init(minimumRequests: Int = 20, threshold: Double = 0.1, relativeFactor: Double = 2) {
            self.minimumRequests = minimumRequests
            self.threshold = threshold
            self.relativeFactor = relativeFactor
        }
    }

    /// How the detector judges and ejects.
    public struct Configuration: Sendable, Hashable {
        /// Failures in a row that eject an instance; 0 turns the rule off. Default 5.
        public var consecutiveFailures: Int = 5
        /// The failure-rate rule; `nil` turns it off. Default on.
        public var failureRate: FailureRateRule? = FailureRateRule()
        /// How often failure rates are judged and multipliers lowered. Default 1 s.
        public var interval: Duration = .seconds(1)
        /// The first ejection's length; the n-th lasts n times as long. Default 30 s.
        public var baseEjectionTime: Duration = .seconds(30)
        /// The longest ejection. Default 300 s.
        public var maxEjectionTime: Duration = .seconds(300)
        /// The most instances ejected at once, in percent of the set (at least one). Default 10.
        public var maxEjectionPercent: Int = 10
        /// When fewer than this share of instances are healthy, ejection is ignored. Default 0.5.
        public var panicThreshold: Double = 0.5
        /// Successes in a row that end an instance's probation after an ejection. Default 3.
        public var probeSuccesses: Int = 3

        /// The default configuration.
        public init() {}

        /// The defaults, changed by `configure`.
        public static func defaults(_ configure: (inout Configuration) -> Void) -> Configuration {
            var configuration = Configuration()
            configure(&configuration)
            return configuration
        }
    }

    /// Why an instance was ejected.
    public enum Reason: Sendable, Hashable {
        /// ``Configuration/consecutiveFailures`` failures in a row.
        case consecutiveFailures
        /// The interval's failure rate broke the ``FailureRateRule``.
        case failureRate
        /// A call failed while the instance was on probation after an ejection.
        case failedProbe
    }

    /// An ejection or return, for observation and tests.
    public struct Event: Sendable, Hashable {
        /// What happened.
        public enum Kind: Sendable, Hashable {
            /// The instance was ejected, until the given time of the detector's clock.
            case ejected(Reason, until: Duration)
            /// The instance's ejection ended: it takes traffic again, on probation.
            case returned
            /// The instance's active health check failed ``HealthChecker/Configuration/unhealthyThreshold``
            /// times in a row: it takes no traffic until the check passes again.
            case failingHealthCheck
            /// The instance's active health check passed ``HealthChecker/Configuration/healthyThreshold``
            /// times in a row (once, for an instance not checked before): it takes traffic again.
            case passingHealthCheck
        }
        /// The instance's id.
        public var instanceID: String
        /// What happened.
        public var kind: Kind
        /// When it happened, on the detector's clock.
        public var time: Duration
    }

    // Per-slot words.
    private static let consecutive = 0
    private static let requests = 1
    private static let failures = 2
    private static let flags = 3 // bit 0: ejected, bit 1: probing
    private static let probeStreak = 4
    private static let health = 5 // 1: failing its active health check (or not checked yet)
    private static let wordsPerSlot = 6

    /// The rules the detector applies.
    public let configuration: Configuration
    private let now: @Sendable () -> Duration
    private let storage = SlotStorage(wordsPerSlot: OutlierDetector.wordsPerSlot)
    private let nextDeadline = Atomic<Int64>(0)
    /// Increases with every change of who is ejected; balancers rebuild their snapshot when it moves.
    private let changes = Atomic<UInt64>(0)

    private struct Ejection {
        var until: Duration
        var multiplier: Int
        var reason: Reason
    }

    private struct State {
        var view = EndpointSetView(generation: 0, instances: [], slots: [])
        var idBySlot: [UInt32: String] = [:]
        var ejections: [UInt32: Ejection] = [:] // ejected now
        var multipliers: [UInt32: Int] = [:] // ejection count, decays while healthy
        var intervalEnd: Duration = .zero
        var events: [Event] = []
        /// The attached health checker's view of new instances: whether they wait for a first
        /// passing check; `nil` when no checker is attached.
        var newInstancesWaitForCheck: Bool?
        /// Slots whose active health check fails now (or that wait for their first check).
        var failingChecks: Set<UInt32> = []
        /// Told every set the detector follows (the attached health checker).
        var setListener: (@Sendable (EndpointSetView) -> Void)?
    }

    private let state = Mutex(State())
    /// The cache's instruments: ejections are counted there.
    private let instruments: Instruments?

    /// Creates a detector for the instances of `cache`.
    ///
    /// - Parameters:
    ///   - cache: The cache whose instances are judged.
    ///   - configuration: The rules. Default ``Configuration/init()``.
    public convenience init<Request, Response>(
        _ cache: EndpointCache<Request, Response>,
        configuration: Configuration = Configuration()
    ) {
        let start = ContinuousClock.now
        self.init(cache, configuration: configuration, now: { ContinuousClock.now - start })
    }

    /// Creates a detector whose time comes from `now` (monotonic, from any origin).
    public init<Request, Response>(
        _ cache: EndpointCache<Request, Response>,
        configuration: Configuration = Configuration(),
        now: @escaping @Sendable () -> Duration
    ) {
        self.configuration = configuration
        self.now = now
        self.instruments = cache.instruments
        let start = now()
        state.withLock { $0.intervalEnd = start + configuration.interval }
        nextDeadline.store((start + configuration.interval).wholeNanoseconds, ordering: .relaxed)
        cache.addObserver(self)
    }

    /// Creates a detector for a balancer over a fixed array of endpoints (the balancer tells it the
    /// set when it is made).
    ///
    /// - Parameters:
    ///   - configuration: The rules. Default ``Configuration/init()``.
    ///   - now: The time source (monotonic, any origin). Default: `ContinuousClock`.
    public init(configuration: Configuration = Configuration(), now: (@Sendable () -> Duration)? = nil) {
        self.configuration = configuration
        if let now {
            self.now = now
        } else {
            let origin = ContinuousClock.now
            self.now = { ContinuousClock.now - origin }
        }
        self.instruments = nil
        let start = self.now()
        state.withLock { $0.intervalEnd = start + configuration.interval }
        nextDeadline.store((start + configuration.interval).wholeNanoseconds, ordering: .relaxed)
    }

    /// Changes with every ejection and return (one atomic load): balancers derive a new snapshot
    /// when it moves.
    public var version: UInt64 { changes.load(ordering: .acquiring) }

    // MARK: Reading

    /// Whether the instance in `slot` is ejected now.
    @inlinable
    public func isEjected(slot: UInt32) -> Bool {
        isEjectedWord(slot)
    }

    @usableFromInline
    func isEjectedWord(_ slot: UInt32) -> Bool {
        guard let words = storage.words(slot) else { return false }
        return words[Self.flags].load(ordering: .relaxed) & 1 == 1 || words[Self.health].load(ordering: .relaxed) == 1
    }

    /// The ids of the instances ejected now.
    public var ejectedInstanceIDs: [String] {
        state.withLock { state in state.ejections.keys.compactMap { state.idBySlot[$0] }.sorted() }
    }

    /// The ids of the instances whose active health check fails now, or that wait for their first
    /// check (empty without a ``HealthChecker``).
    public var failingHealthCheckIDs: [String] {
        state.withLock { state in state.failingChecks.compactMap { state.idBySlot[$0] }.sorted() }
    }

    /// Every ejection and return so far (the last 1,000).
    public var events: [Event] { state.withLock { $0.events } }

    /// What the detector holds about one instance now, for ``BalancerState``.
    package struct SlotState: Sendable {
        /// The ejection in force: until when (on the detector's clock), why, and the how-manieth.
        package var ejection: (until: Duration, reason: Reason, count: Int)?
        /// Back from an ejection, not yet through ``Configuration/probeSuccesses`` successes.
        package var probation: Bool
        /// Failing its active health check (or waiting for its first one).
        package var failingCheck: Bool
        /// Calls and failed calls in the current interval.
        package var requests: UInt64
        package var failures: UInt64
    }

    /// The state of `slots` now, the detector's time, and whether a health checker is attached:
    /// one pass under the detector's lock (not on any pick path).
    package func slotStates(_ slots: [UInt32]) -> (states: [SlotState], now: Duration, healthChecked: Bool) {
        let time = now()
        return state.withLock { state in
            let states = slots.map { slot -> SlotState in
                let words = storage.words(slot)
                let ejection = state.ejections[slot].map { ($0.until, $0.reason, $0.multiplier) }
                return SlotState(
                    ejection: ejection,
                    probation: ejection == nil && (words?[Self.flags].load(ordering: .relaxed) ?? 0) & 2 == 2,
                    failingCheck: state.failingChecks.contains(slot),
                    requests: words?[Self.requests].load(ordering: .relaxed) ?? 0,
                    failures: words?[Self.failures].load(ordering: .relaxed) ?? 0
                )
            }
            return (states, time, state.setListener != nil)
        }
    }

    /// The positions of `view` that may take traffic: the healthy ones, or all of them in panic mode
    /// (too few healthy, or none).
    package func usablePositions(in view: EndpointSetView) -> [Int] {
        let healthy = view.slots.indices.filter { !isEjectedWord(view.slots[$0]) }
        if panics(healthy: healthy.count, of: view.count) { return Array(view.slots.indices) }
        return healthy
    }

    /// The panic rule: whether `healthy` of `count` instances are too few (below
    /// ``Configuration/panicThreshold``, or none), so that every instance takes traffic.
    package func panics(healthy: Int, of count: Int) -> Bool {
        healthy == 0 || Double(healthy) < configuration.panicThreshold * Double(count)
    }

    // MARK: Learning

    /// Follows the cache's set changes: a slot given to another instance starts clean, and removed
    /// instances are forgotten. The cache calls it; do not call it yourself.
    public func endpointSetWillPublish(_ set: EndpointSetView) {
        let listener = state.withLock { state -> (@Sendable (EndpointSetView) -> Void)? in
            // An older set arriving late (an observer added during an update) changes nothing.
            if !state.idBySlot.isEmpty || state.view.generation != 0,
                Int32(bitPattern: set.generation &- state.view.generation) < 0
            {
                return nil
            }
            var newIDs: [UInt32: String] = [:]
            for (slot, instance) in zip(set.slots, set.instances) {
                newIDs[slot] = instance.id
                if state.idBySlot[slot] != instance.id {
                    // A slot given to a new instance starts clean (and, under a health checker
                    // that says so, waits for its first passing check).
                    storage.reset(slot)
                    state.ejections[slot] = nil
                    state.multipliers[slot] = nil
                    state.failingChecks.remove(slot)
                    if state.newInstancesWaitForCheck == true {
                        storage.words(slot)?[Self.health].store(1, ordering: .relaxed)
                        state.failingChecks.insert(slot)
                    }
                }
            }
            for slot in state.idBySlot.keys where newIDs[slot] == nil {
                state.ejections[slot] = nil
                state.multipliers[slot] = nil
                state.failingChecks.remove(slot)
                storage.words(slot)?[Self.flags].store(0, ordering: .relaxed)
                storage.words(slot)?[Self.health].store(0, ordering: .relaxed)
            }
            state.idBySlot = newIDs
            state.view = set
            instruments?.ejectedNow(state.ejections.count)
            instruments?.failingHealthChecksNow(state.failingChecks.count)
            return state.setListener
        }
        listener?(set)
    }

    // MARK: Active health checks

    /// Attaches a health checker: from now on `listener` is told every set, and (when
    /// `newInstancesWaitForCheck`) instances new to the set wait for their first passing check, as
    /// do the instances of the current set. Returns the current set.
    package func attachHealthChecker(
        newInstancesWaitForCheck: Bool,
        listener: @escaping @Sendable (EndpointSetView) -> Void
    ) throws(HealthCheckerError) -> EndpointSetView {
        let view = try state.withLock { state throws(HealthCheckerError) -> EndpointSetView in
            guard state.setListener == nil else { throw .detectorHasChecker }
            state.newInstancesWaitForCheck = newInstancesWaitForCheck
            state.setListener = listener
            if newInstancesWaitForCheck {
                for slot in state.view.slots {
                    storage.words(slot)?[Self.health].store(1, ordering: .relaxed)
                    state.failingChecks.insert(slot)
                }
            }
            instruments?.failingHealthChecksNow(state.failingChecks.count)
            notifyObservers()
            return state.view
        }
        return view
    }

    /// Detaches the health checker: every instance's check state is forgotten (they take traffic
    /// as passive ejection allows).
    package func detachHealthChecker() {
        state.withLock { state in
            for slot in state.failingChecks { storage.words(slot)?[Self.health].store(0, ordering: .relaxed) }
            state.failingChecks = []
            state.newInstancesWaitForCheck = nil
            state.setListener = nil
            instruments?.failingHealthChecksNow(0)
            notifyObservers()
        }
    }

    /// The active check of the instance `id` in `slot` turned failing (`passing == false`) or
    /// passing. Ignored when the slot holds another instance now. A passing check ends a passive
    /// ejection when `endsEjection`.
    package func healthCheckChanged(slot: UInt32, id: String, passing: Bool, endsEjection: Bool) {
        state.withLock { state in
            guard state.idBySlot[slot] == id, state.setListener != nil, let words = storage.words(slot) else { return }
            let time = now()
            var changed = false
            if passing {
                if state.failingChecks.remove(slot) != nil {
                    words[Self.health].store(0, ordering: .relaxed)
                    log(&state, slot: slot, .passingHealthCheck, at: time)
                    changed = true
                }
                if endsEjection, state.ejections.removeValue(forKey: slot) != nil {
                    words[Self.consecutive].store(0, ordering: .relaxed)
                    words[Self.probeStreak].store(0, ordering: .relaxed)
                    words[Self.flags].store(2, ordering: .relaxed)
                    log(&state, slot: slot, .returned, at: time)
                    instruments?.ejectedNow(state.ejections.count)
                    changed = true
                }
            } else {
                let wasPending = state.failingChecks.contains(slot)
                state.failingChecks.insert(slot)
                words[Self.health].store(1, ordering: .relaxed)
                log(&state, slot: slot, .failingHealthCheck, at: time)
                changed = !wasPending
            }
            instruments?.failingHealthChecksNow(state.failingChecks.count)
            if changed { notifyObservers() }
        }
    }

    /// Counts one check's result in the cache's metrics.
    package func healthChecked(passed: Bool) {
        instruments?.healthChecked(passed: passed)
    }

    /// Learns one call's outcome. Balancers call this from their `record(_:)`.
    public func record(_ call: CallRecord) {
        guard call.outcome != .cancelled, let words = storage.words(call.slot) else {
            checkDeadlines()
            return
        }
        let failed = call.outcome == .failure
        words[Self.requests].add(1, ordering: .relaxed)
        var ejectReason: Reason?
        if failed {
            words[Self.failures].add(1, ordering: .relaxed)
            words[Self.probeStreak].store(0, ordering: .relaxed)
            let run = words[Self.consecutive].add(1, ordering: .relaxed).newValue
            let flags = words[Self.flags].load(ordering: .relaxed)
            if flags & 2 == 2 {
                ejectReason = .failedProbe
            } else if configuration.consecutiveFailures > 0, run >= UInt64(configuration.consecutiveFailures) {
                ejectReason = .consecutiveFailures
            }
        } else {
            words[Self.consecutive].store(0, ordering: .relaxed)
            if words[Self.flags].load(ordering: .relaxed) & 2 == 2 {
                let streak = words[Self.probeStreak].add(1, ordering: .relaxed).newValue
                if streak >= UInt64(configuration.probeSuccesses) {
                    words[Self.flags].bitwiseAnd(~2, ordering: .relaxed)
                }
            }
        }
        if let ejectReason {
            state.withLock { state in
                if eject(call.slot, reason: ejectReason, at: now(), state: &state) { notifyObservers() }
            }
        }
        checkDeadlines()
    }

    private func checkDeadlines() {
        let time = now()
        guard time.wholeNanoseconds >= nextDeadline.load(ordering: .relaxed) else { return }
        state.withLock { state in
            var changed = false
            // Returns: ejections whose time is up go on probation.
            for (slot, ejection) in state.ejections where ejection.until <= time {
                state.ejections[slot] = nil
                if let words = storage.words(slot) {
                    words[Self.consecutive].store(0, ordering: .relaxed)
                    words[Self.probeStreak].store(0, ordering: .relaxed)
                    words[Self.flags].store(2, ordering: .relaxed)
                }
                log(&state, slot: slot, .returned, at: time)
                changed = true
            }
            if time >= state.intervalEnd {
                changed = judgeInterval(at: time, state: &state) || changed
                state.intervalEnd = time + configuration.interval
            }
            if changed { instruments?.ejectedNow(state.ejections.count) }
            let nextReturn = state.ejections.values.map(\.until).min() ?? state.intervalEnd
            nextDeadline.store(min(nextReturn, state.intervalEnd).wholeNanoseconds, ordering: .relaxed)
            if changed { notifyObservers() }
        }
    }

    /// Judges the interval's failure rates, lowers healthy multipliers, and resets the counters.
    private func judgeInterval(at time: Duration, state: inout State) -> Bool {
        var rates: [(slot: UInt32, requests: UInt64, rate: Double)] = []
        for slot in state.view.slots {
            guard let words = storage.words(slot) else { continue }
            let requests = words[Self.requests].exchange(0, ordering: .relaxed)
            let failures = words[Self.failures].exchange(0, ordering: .relaxed)
            let rate = requests == 0 ? 0 : Double(failures) / Double(requests)
            rates.append((slot, requests, rate))
            if state.ejections[slot] == nil, failures == 0, let m = state.multipliers[slot] {
                state.multipliers[slot] = m > 1 ? m - 1 : nil
            }
        }
        guard let rule = configuration.failureRate else { return false }
        let judged = rates.filter { $0.requests >= UInt64(rule.minimumRequests) }
        guard !judged.isEmpty else { return false }
        var changed = false
        for candidate in judged.sorted(by: { $0.rate > $1.rate }) where candidate.rate >= rule.threshold {
            let peers = judged.filter { $0.slot != candidate.slot }
            let peerMean = peers.isEmpty ? 0 : peers.map(\.rate).reduce(0, +) / Double(peers.count)
            guard candidate.rate >= rule.relativeFactor * peerMean else { continue }
            if state.ejections[candidate.slot] == nil {
                changed = eject(candidate.slot, reason: .failureRate, at: time, state: &state) || changed
            }
        }
        return changed
    }

    /// Whether an instance of another priority level than `slot`'s is not ejected: then `slot`'s
    /// calls can fail over, and the cap does not hold `slot` in.
    private func otherLevelIsHealthy(than slot: UInt32, state: State) -> Bool {
        let view = state.view
        guard let position = view.slots.firstIndex(of: slot) else { return false }
        let level = view.instances[position].priority
        return view.instances.indices.contains { other in
            view.instances[other].priority != level && state.ejections[view.slots[other]] == nil
        }
    }

    /// Ejects `slot` unless the cap forbids it. Returns whether it did.
    private func eject(_ slot: UInt32, reason: Reason, at time: Duration, state: inout State) -> Bool {
        guard state.ejections[slot] == nil, state.idBySlot[slot] != nil else { return false }
        let total = state.view.count
        let cap = max(1, total * configuration.maxEjectionPercent / 100)
        guard state.ejections.count < cap || otherLevelIsHealthy(than: slot, state: state) else { return false }
        let multiplier = (state.multipliers[slot] ?? 0) + 1
        state.multipliers[slot] = multiplier
        let length = min(configuration.baseEjectionTime * multiplier, configuration.maxEjectionTime)
        let until = time + length
        state.ejections[slot] = Ejection(until: until, multiplier: multiplier, reason: reason)
        if let words = storage.words(slot) {
            words[Self.flags].store(1, ordering: .relaxed)
            words[Self.consecutive].store(0, ordering: .relaxed)
        }
        let next = nextDeadline.load(ordering: .relaxed)
        if until.wholeNanoseconds < next { nextDeadline.store(until.wholeNanoseconds, ordering: .relaxed) }
        log(&state, slot: slot, .ejected(reason, until: until), at: time)
        if let instruments, let id = state.idBySlot[slot] {
            instruments.ejected(id)
            instruments.ejectedNow(state.ejections.count)
        }
        return true
    }

    private func log(_ state: inout State, slot: UInt32, _ kind: Event.Kind, at time: Duration) {
        state.events.append(Event(instanceID: state.idBySlot[slot] ?? "slot \(slot)", kind: kind, time: time))
        if state.events.count > 1_000 { state.events.removeFirst(state.events.count - 1_000) }
    }

    /// Moves ``version`` on. Called inside the critical section that made the change, so that a
    /// reader who sees the change (``ejectedIDs``, ``events``) and then reads the version sees the
    /// new one: a balancer's next pick honours every change a caller could have observed.
    private func notifyObservers() {
        changes.wrappingAdd(1, ordering: .releasing)
    }
}
