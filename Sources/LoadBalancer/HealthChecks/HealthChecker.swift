import Logging
import ServiceLifecycle
import Synchronization

/// Active health checks: probes every instance of a set at an interval and takes the ones that
/// fail out of picks, through the ``OutlierDetector`` every balancer already honours.
///
/// ```swift
/// let detector = OutlierDetector(cache)
/// let balancer = P2CBalancer(cache, ejection: detector)
/// let checker = try HealthChecker(detector, check: HTTPHealthCheck(client: client, path: "/health"))
/// // Run it beside the cache, e.g. in the same ServiceGroup.
/// ```
///
/// The rules, each a ``Configuration`` value:
/// - Each instance is checked every ``Configuration/interval``, each pause drawn at random from
///   `interval x (1 ± jitter)` (``Configuration/jitter``), and its first check at a random time
///   within ``Configuration/initialJitter``: many clients starting together do not probe in
///   lockstep, and drift apart from there.
/// - A check that throws, or takes longer than ``Configuration/timeout``, fails.
/// - ``Configuration/unhealthyThreshold`` failures in a row take a healthy instance out of picks;
///   ``Configuration/healthyThreshold`` passes in a row bring it back (then slow start, if the
///   balancer has one, ramps it up). An instance new to the set waits for its first check, which
///   decides at once (``Configuration/newInstancesWaitForCheck``).
/// - A failing check removes the instance whatever the detector's ejection cap; the detector's
///   panic threshold still applies (when too few instances are healthy, all take traffic).
/// - A passing check ends a passive ejection only if ``Configuration/passingCheckEndsEjection``.
///
/// Changes are ``OutlierDetector/Event``s (`failingHealthCheck`, `passingHealthCheck`) and metrics
/// of the cache's ``LoadBalancerInstrumentation`` (`loadbalancer_health_checks_total`,
/// `loadbalancer_instances_failing_health_check`).
///
/// The checker composes with a registry's own health: a Consul publisher that asks for passing
/// instances leaves the others out of the set, and the checker checks what remains.
///
/// It is a `Service`: ``run()`` checks until cancelled or until graceful shutdown, then forgets
/// every instance's check state (they take traffic as passive ejection allows) and releases what
/// the check held. One checker per detector.
public final class HealthChecker<C: Clock>: Service, Sendable where C.Duration == Duration {
    /// How the checker checks and judges.
    public struct Configuration: Sendable, Hashable {
        /// Time between two checks of an instance (on average). Default 5 s.
        public var interval: Duration = .seconds(5)
        /// How long a check may take before it fails. Default 1 s.
        public var timeout: Duration = .seconds(1)
        /// Each pause is drawn from `interval x (1 - jitter)` to `interval x (1 + jitter)`, in `0..<1`.
        /// Default 0.1.
        public var jitter: Double = 0.1
        /// An instance's first check comes at a random time from zero to this (capped at
        /// ``interval``). Default 1 s.
        public var initialJitter: Duration = .seconds(1)
        /// Failures in a row that take a healthy instance out of picks. Default 2.
        public var unhealthyThreshold: Int = 2
        /// Passes in a row that bring an unhealthy instance back. Default 2.
        public var healthyThreshold: Int = 2
        /// Whether an instance new to the set takes no traffic until its first check passes
        /// (Envoy's and gRPC's rule). When `false` it is healthy until checked. Default `true`.
        public var newInstancesWaitForCheck: Bool = true
        /// Whether a passing check ends the instance's passive ejection at once. Default `false`:
        /// an instance can answer its health endpoint and still fail calls.
        public var passingCheckEndsEjection: Bool = false

        /// The default configuration.
        public init() {}

        /// The defaults, changed by `configure`.
        public static func defaults(_ configure: (inout Configuration) -> Void) -> Configuration {
            var configuration = Configuration()
            configure(&configuration)
            return configuration
        }

        /// Throws ``HealthCheckerError/invalidConfiguration(_:)`` for a value out of range.
        public func validate() throws(HealthCheckerError) {
            guard interval > .zero else { throw .invalidConfiguration("interval must be above zero, not \(interval)") }
            guard timeout > .zero else { throw .invalidConfiguration("timeout must be above zero, not \(timeout)") }
            guard jitter >= 0, jitter < 1 else { throw .invalidConfiguration("jitter must be in 0..<1, not \(jitter)") }
            guard initialJitter >= .zero else {
                throw .invalidConfiguration("initialJitter must not be negative, not \(initialJitter)")
            }
            guard unhealthyThreshold >= 1 else {
                throw .invalidConfiguration("unhealthyThreshold must be at least 1, not \(unhealthyThreshold)")
            }
            guard healthyThreshold >= 1 else {
                throw .invalidConfiguration("healthyThreshold must be at least 1, not \(healthyThreshold)")
            }
        }
    }

    /// What the checker knows of an instance.
    public enum Health: Sendable, Hashable {
        /// Not checked yet (it waits for its first check, or is healthy until then).
        case unchecked
        /// Passing: takes traffic.
        case healthy
        /// Failing: takes no traffic until it passes ``Configuration/healthyThreshold`` times.
        case unhealthy
    }

    /// An instance's check state.
    public struct Status: Sendable, Hashable {
        /// What the checks say.
        public var health: Health
        /// Passes in a row.
        public var consecutivePasses: Int
        /// Failures in a row.
        public var consecutiveFailures: Int
        /// Checks made.
        public var checks: Int
        /// Why the last failing check failed.
        public var lastFailure: String?
    }

    /// The rules.
    public let configuration: Configuration
    /// The detector the results go to.
    public let detector: OutlierDetector
    private let check: any HealthCheck
    private let clock: C
    private let random: RandomSource
    private let logger: Logger
    private let statusByID = Mutex<[String: Status]>([:])

    /// Creates a checker that tells `detector` what `check` finds.
    ///
    /// - Parameters:
    ///   - detector: The detector the balancers honour.
    ///   - check: How to check an instance.
    ///   - configuration: The rules. Default ``Configuration/init()``.
    ///   - clock: Measures the intervals and timeouts.
    ///   - seed: Makes the jitter reproducible. Default: random.
    ///   - logger: Where changes of health are logged. Default: a logger that discards everything.
    /// - Throws: ``HealthCheckerError/invalidConfiguration(_:)``.
    public init(
        _ detector: OutlierDetector,
        check: some HealthCheck,
        configuration: Configuration = Configuration(),
        clock: C,
        seed: UInt64? = nil,
        logger: Logger = Logger(label: "loadbalancer", factory: { _ in SwiftLogNoOpLogHandler() })
    ) throws(HealthCheckerError) {
        try configuration.validate()
        self.configuration = configuration
        self.detector = detector
        self.check = check
        self.clock = clock
        self.random = RandomSource(seed: seed)
        self.logger = logger
    }

    /// Each checked instance's state, by id.
    public var statuses: [String: Status] { statusByID.withLock { $0 } }

    /// Checks every instance of the detector's set, following the set, until the task is
    /// cancelled or graceful shutdown; then forgets every instance's check state.
    ///
    /// - Throws: ``HealthCheckerError/detectorHasChecker`` when another checker runs on the detector.
    public func run() async throws {
        let (sets, continuation) = AsyncStream.makeStream(of: EndpointSetView.self, bufferingPolicy: .bufferingNewest(1))
        let current = try detector.attachHealthChecker(newInstancesWaitForCheck: configuration.newInstancesWaitForCheck) { set in
            continuation.yield(set)
        }
        let probes = await cancelWhenGracefulShutdown { () -> Probes in
            var probes = Probes()
            self.follow(current, &probes)
            for await set in sets { self.follow(set, &probes) }
            return probes
        }
        continuation.finish()
        detector.detachHealthChecker()
        let all = Array(probes.running.values) + Array(probes.leaving.values)
        for probe in all { probe.task.cancel() }
        for probe in all { await probe.task.value }
    }

    // MARK: Probing

    /// One instance's check loop.
    private struct Probe: Sendable {
        var slot: UInt32
        var task: Task<Void, Never>
        /// Set when the loop has ended and released what the check held.
        var finished: FinishedFlag
    }

    private final class FinishedFlag: Sendable {
        let value = Atomic(false)
    }

    private struct Probes: Sendable {
        /// The loops of the current set's instances, by id.
        var running: [String: Probe] = [:]
        /// Loops cancelled that may not have ended yet, by id: an instance back in the set waits
        /// for its last loop's end, so that the old loop's release never undoes the new one's work.
        var leaving: [String: Probe] = [:]
    }

    /// Starts checking the instances new to `set` and stops checking those that left it.
    private func follow(_ set: EndpointSetView, _ probes: inout Probes) {
        probes.leaving = probes.leaving.filter { !$0.value.finished.value.load(ordering: .acquiring) }
        var current: [String: (Instance, UInt32)] = [:]
        for (instance, slot) in zip(set.instances, set.slots) { current[instance.id] = (instance, slot) }
        for (id, probe) in probes.running where current[id]?.1 != probe.slot {
            probe.task.cancel()
            probes.running[id] = nil
            probes.leaving[id] = probe
        }
        for (id, (instance, slot)) in current where probes.running[id] == nil {
            let previous = probes.leaving.removeValue(forKey: id)?.task
            let finished = FinishedFlag()
            let task = Task {
                await previous?.value
                await self.probeLoop(instance, slot: slot)
                finished.value.store(true, ordering: .releasing)
            }
            probes.running[id] = Probe(slot: slot, task: task, finished: finished)
        }
    }

    private enum Outcome {
        case passed
        case failed(String)
    }

    /// Checks one instance until cancelled.
    private func probeLoop(_ instance: Instance, slot: UInt32) async {
        var status = Status(
            health: configuration.newInstancesWaitForCheck ? .unchecked : .healthy,
            consecutivePasses: 0, consecutiveFailures: 0, checks: 0, lastFailure: nil)
        statusByID.withLock { $0[instance.id] = status }
        var pause = min(configuration.initialJitter, configuration.interval) * unitRandom()
        while !Task.isCancelled {
            do {
                try await clock.sleep(for: pause)
            } catch {
                break
            }
            let outcome = await probe(instance)
            if Task.isCancelled { break }
            judge(outcome, instance: instance, slot: slot, status: &status)
            statusByID.withLock { $0[instance.id] = status }
            pause = configuration.interval * (1 + configuration.jitter * (2 * unitRandom() - 1))
        }
        statusByID.withLock { statuses in
            if statuses[instance.id] == status { statuses[instance.id] = nil }
        }
        await check.forget(instance)
    }

    /// One check, failed when it throws or outlasts the timeout.
    private func probe(_ instance: Instance) async -> Outcome {
        let check = self.check
        let clock = self.clock
        let timeout = configuration.timeout
        return await withTaskGroup(of: Outcome?.self) { group in
            group.addTask {
                do {
                    try await check.check(instance, timeout: timeout)
                    return .passed
                } catch {
                    return .failed("\(error)")
                }
            }
            group.addTask {
                do {
                    try await clock.sleep(for: timeout)
                    return .failed("no answer within \(timeout)")
                } catch {
                    return nil
                }
            }
            var outcome: Outcome = .failed("cancelled")
            while let next = await group.next() {
                if let next {
                    outcome = next
                    break
                }
            }
            group.cancelAll()
            return outcome
        }
    }

    /// Applies one outcome to the instance's status, telling the detector when its health changes.
    private func judge(_ outcome: Outcome, instance: Instance, slot: UInt32, status: inout Status) {
        status.checks += 1
        switch outcome {
        case .passed:
            detector.healthChecked(passed: true)
            status.consecutivePasses += 1
            status.consecutiveFailures = 0
            if status.health != .healthy,
                status.health == .unchecked || status.consecutivePasses >= configuration.healthyThreshold
            {
                status.health = .healthy
                logger.info("instance passes its health check", metadata: ["loadbalancer.instance": "\(instance.id)"])
                detector.healthCheckChanged(
                    slot: slot, id: instance.id, passing: true, endsEjection: configuration.passingCheckEndsEjection)
            } else if status.health == .healthy, configuration.passingCheckEndsEjection {
                detector.healthCheckChanged(slot: slot, id: instance.id, passing: true, endsEjection: true)
            }
        case .failed(let reason):
            detector.healthChecked(passed: false)
            status.consecutiveFailures += 1
            status.consecutivePasses = 0
            status.lastFailure = reason
            if status.health != .unhealthy,
                status.health == .unchecked || status.consecutiveFailures >= configuration.unhealthyThreshold
            {
                status.health = .unhealthy
                logger.warning(
                    "instance fails its health check",
                    metadata: ["loadbalancer.instance": "\(instance.id)", "loadbalancer.error": "\(reason)"])
                detector.healthCheckChanged(slot: slot, id: instance.id, passing: false, endsEjection: false)
            }
        }
    }

    /// A uniform draw from `0..<1`.
    private func unitRandom() -> Double {
        Double(random.next() >> 11) * 0x1p-53
    }
}

extension HealthChecker where C == ContinuousClock {
    /// Creates a checker on `ContinuousClock` that tells `detector` what `check` finds.
    ///
    /// - Parameters:
    ///   - detector: The detector the balancers honour.
    ///   - check: How to check an instance.
    ///   - configuration: The rules. Default ``Configuration/init()``.
    ///   - seed: Makes the jitter reproducible. Default: random.
    ///   - logger: Where changes of health are logged. Default: a logger that discards everything.
    /// - Throws: ``HealthCheckerError/invalidConfiguration(_:)``.
    public convenience init(
        _ detector: OutlierDetector,
        check: some HealthCheck,
        configuration: Configuration = Configuration(),
        seed: UInt64? = nil,
        logger: Logger = Logger(label: "loadbalancer", factory: { _ in SwiftLogNoOpLogHandler() })
    ) throws(HealthCheckerError) {
        try self.init(detector, check: check, configuration: configuration, clock: ContinuousClock(), seed: seed, logger: logger)
    }
}
