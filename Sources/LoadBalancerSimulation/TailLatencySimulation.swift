import LoadBalancer
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Who chooses the backend in a simulation run.
public struct SimulatedPolicy: Sendable {
    /// The name in reports.
    public var name: String
    let kind: Kind

    enum Kind: Sendable {
        case balancer(
            @Sendable (_ endpoints: EndpointCache<Int, Int>, _ ejection: OutlierDetector?, _ now: @escaping @Sendable () -> Duration)
                -> AnyBalancer<Int, Int>,
            ejection: OutlierDetector.Configuration?
        )
        case oracle
    }

    /// A balancer of the library, made fresh for the run over endpoints standing for the backends.
    ///
    /// - Parameters:
    ///   - name: The name in reports.
    ///   - ejection: When set, an `OutlierDetector` with this configuration is made and given to the balancer.
    ///   - make: Makes the balancer; it must use `now` as its time source where it takes one.
    public static func balancer(
        _ name: String,
        ejection: OutlierDetector.Configuration? = nil,
        _ make:
            @escaping @Sendable (
                _ endpoints: EndpointCache<Int, Int>, _ ejection: OutlierDetector?, _ now: @escaping @Sendable () -> Duration
            ) -> AnyBalancer<Int, Int>
    ) -> SimulatedPolicy {
        SimulatedPolicy(name: name, kind: .balancer(make, ejection: ejection))
    }

    /// The oracle: knows each backend's true queue and current mean service time (and, with zones,
    /// the cross-zone penalty), sends each request where its expected completion is soonest, and
    /// never uses a failing backend.
    public static let oracle = SimulatedPolicy(name: "oracle", kind: .oracle)
}

/// What one policy achieved in a run.
public struct SimulationResult: Sendable, CustomStringConvertible {
    /// The policy's name.
    public var policy: String
    /// The number of requests that arrived in the run.
    public var requests: Int
    /// Latency percentiles of successful requests, arrival to completion.
    public var p50: Duration
    /// The 99th percentile.
    public var p99: Duration
    /// The 99.9th percentile.
    public var p999: Duration
    /// The slowest.
    public var max: Duration
    /// Failed requests over all requests.
    public var errorRate: Double
    /// Share of requests sent to each backend (the cold instance, if any, last).
    public var shares: [Double]
    /// Of the requests that arrived while the scenario's ``ColdInstance`` was cold, the share sent
    /// to it; `nil` without a cold instance.
    public var coldInstanceShare: Double?
    /// With the scenario's ``ZoneOutage``, each phase between two failures of the client's zone's
    /// backends (the first while they are all healthy, the last from the last failure on); `nil`
    /// without zones.
    public var zonePhases: [ZonePhase]?
    /// The latency distribution of successful requests: the latency at each probability of
    /// ``LatencyQuantile/probabilities`` (0.01 to 0.99 by 0.01, then 0.995, 0.999 and 1), computed
    /// as ``p50`` and the other percentiles are; empty when no request succeeded.
    public var latencyQuantiles: [LatencyQuantile] = []
    /// The run cut into ``ShareBucket/count`` equal spans by arrival time, with the requests sent
    /// to each backend in each, to chart each backend's share over time.
    public var sharesOverTime: [ShareBucket] = []

    /// The policy's name, its p50, p99 and p99.9 latencies, its error rate and, with a cold
    /// instance, the cold instance's share while cold, with zones each phase's local share.
    public var description: String {
        "\(policy): p50 \(p50) p99 \(p99) p99.9 \(p999) errors \(errorRate)"
            + (coldInstanceShare.map { " to the cold instance while cold \($0)" } ?? "")
            + (zonePhases.map { " local by phase \($0.map(\.localShare))" } ?? "")
    }
}

/// The latency below which a share of a run's successful requests completed.
public struct LatencyQuantile: Sendable, Hashable {
    /// The share, in `0...1`.
    public var probability: Double
    /// The latency at that share.
    public var latency: Duration

    /// The probabilities ``SimulationResult/latencyQuantiles`` are given at: 0.01 to 0.99 by
    /// 0.01, then 0.995, 0.999 and 1.
    public static let probabilities: [Double] = (1...99).map { Double($0) / 100 } + [0.995, 0.999, 1]
}

/// The requests that arrived in one span of a run, by the backend they were sent to.
public struct ShareBucket: Sendable, Hashable {
    /// How many spans a run is cut into: 50.
    public static let count = 50
    /// When the span starts, into the run.
    public var start: Duration
    /// When it ends.
    public var end: Duration
    /// The requests that arrived in it, by backend (the order of ``SimulationResult/shares``).
    public var requests: [Int]

    /// Each backend's share of the span's requests (all 0 when none arrived).
    public var shares: [Double] {
        let total = requests.reduce(0, +)
        return requests.map { total == 0 ? 0 : Double($0) / Double(total) }
    }
}

/// The percentile of sorted latencies (seconds) as the simulation reports them: the smallest
/// latency at or above a share `p` of them; zero when there is none.
func percentile(_ p: Double, ofSorted latencies: [Double]) -> Duration {
    guard !latencies.isEmpty else { return .zero }
    let index = min(latencies.count - 1, max(0, Int((p * Double(latencies.count)).rounded(.up)) - 1))
    return .nanoseconds(Int64(latencies[index] * 1e9))
}

/// The quantiles of sorted latencies (seconds) at ``LatencyQuantile/probabilities``.
func quantiles(ofSorted latencies: [Double]) -> [LatencyQuantile] {
    guard !latencies.isEmpty else { return [] }
    return LatencyQuantile.probabilities.map { LatencyQuantile(probability: $0, latency: percentile($0, ofSorted: latencies)) }
}

/// Counts arrivals per backend in ``ShareBucket/count`` equal spans of a run.
struct ShareTimeline {
    let duration: Double
    var counts: [[Int]]

    init(duration: Double, backends: Int) {
        self.duration = duration
        counts = [[Int]](repeating: [Int](repeating: 0, count: backends), count: ShareBucket.count)
    }

    mutating func sent(_ backend: Int, at time: Double) {
        guard duration > 0 else {
            counts[0][backend] += 1
            return
        }
        let bucket = min(ShareBucket.count - 1, max(0, Int(time / duration * Double(ShareBucket.count))))
        counts[bucket][backend] += 1
    }

    var buckets: [ShareBucket] {
        counts.indices.map { bucket in
            let span = duration / Double(ShareBucket.count)
            return ShareBucket(
                start: .nanoseconds(Int64(Double(bucket) * span * 1e9)),
                end: .nanoseconds(Int64(Double(bucket + 1) * span * 1e9)),
                requests: counts[bucket]
            )
        }
    }
}

/// What one policy achieved in one phase of a ``ZoneOutage``: the requests that arrived between
/// two failures of the client's zone's backends.
public struct ZonePhase: Sendable, Hashable {
    /// When the phase starts, into the run.
    public var start: Duration
    /// The backends of the client's zone not yet failing in the phase.
    public var healthyLocalBackends: Int
    /// The requests that arrived in the phase.
    public var requests: Int
    /// The share of them sent to a backend of the client's zone.
    public var localShare: Double
    /// Median latency of their successful calls, arrival to completion.
    public var p50: Duration
    /// The 99th percentile.
    public var p99: Duration
    /// Their failed calls over all of them.
    public var errorRate: Double
}

/// A deterministic discrete-event simulation of a ``TailLatencyScenario`` that drives the library's
/// real balancers and outlier detector in virtual time: each arrival calls `pick()` and
/// `willCall`, each completion `record` with the call's latency and outcome, exactly as
/// `Balancer.withEndpoint(isolation:_:)` does for real calls.
///
/// Arrivals and service-time draws come from the scenario's seed and are the same for every
/// policy, so policies are compared on identical traffic.
public enum TailLatencySimulation {
    /// The policies the reference report compares: every balancer of the library, the main ones
    /// also with outlier ejection, and the oracle.
    public static func standardPolicies() -> [SimulatedPolicy] {
        let ejection = OutlierDetector.Configuration()
        return [
            .oracle,
            .balancer("round-robin") { e, d, _ in AnyBalancer(RoundRobinBalancer(e, start: 0, ejection: d)) },
            .balancer("random") { e, d, _ in AnyBalancer(RandomBalancer(e, seed: 7, ejection: d)) },
            .balancer("weighted-round-robin") { e, d, _ in AnyBalancer(WeightedRoundRobinBalancer(e, start: 0, ejection: d)) },
            .balancer("weighted-random") { e, d, _ in AnyBalancer(WeightedRandomBalancer(e, seed: 7, ejection: d)) },
            .balancer("priority") { e, d, _ in AnyBalancer(PriorityBalancer(e, seed: 7, ejection: d)) },
            .balancer("consistent-hash") { e, d, _ in AnyBalancer(ConsistentHashBalancer(e, ejection: d)) },
            .balancer("p2c-least-outstanding") { e, d, now in
                AnyBalancer(P2CBalancer(e, metric: .leastOutstanding, seed: 7, ejection: d, now: now))
            },
            .balancer("p2c-peak-ewma") { e, d, now in
                AnyBalancer(P2CBalancer(e, metric: .peakEWMA(decayTime: .seconds(10)), seed: 7, ejection: d, now: now))
            },
            .balancer("p2c-peak-ewma-1s") { e, d, now in
                AnyBalancer(P2CBalancer(e, metric: .peakEWMA(decayTime: .seconds(1)), seed: 7, ejection: d, now: now))
            },
            .balancer("round-robin+ejection", ejection: ejection) { e, d, _ in
                AnyBalancer(RoundRobinBalancer(e, start: 0, ejection: d))
            },
            .balancer("random+ejection", ejection: ejection) { e, d, _ in AnyBalancer(RandomBalancer(e, seed: 7, ejection: d)) },
            .balancer("p2c-least-outstanding+ejection", ejection: ejection) { e, d, now in
                AnyBalancer(P2CBalancer(e, metric: .leastOutstanding, seed: 7, ejection: d, now: now))
            },
            .balancer("p2c-peak-ewma+ejection", ejection: ejection) { e, d, now in
                AnyBalancer(P2CBalancer(e, metric: .peakEWMA(decayTime: .seconds(10)), seed: 7, ejection: d, now: now))
            },
        ]
    }

    /// The policies the cold-instance report compares: round robin, P2C least-outstanding and P2C
    /// peak-EWMA (τ 10 s), each without and with `slowStart` (named with "+slow-start"), and the
    /// oracle. The simulation's clock replaces `slowStart`'s time source.
    public static func slowStartPolicies(_ slowStart: SlowStart = SlowStart(window: .seconds(30))) -> [SimulatedPolicy] {
        @Sendable func ramp(_ now: @escaping @Sendable () -> Duration) -> SlowStart {
            var ramp = slowStart
            ramp.now = now
            return ramp
        }
        return [
            .oracle,
            .balancer("round-robin") { e, d, _ in AnyBalancer(RoundRobinBalancer(e, start: 0, ejection: d)) },
            .balancer("round-robin+slow-start") { e, d, now in
                AnyBalancer(RoundRobinBalancer(e, start: 0, ejection: d, slowStart: ramp(now)))
            },
            .balancer("p2c-least-outstanding") { e, d, now in
                AnyBalancer(P2CBalancer(e, metric: .leastOutstanding, seed: 7, ejection: d, now: now))
            },
            .balancer("p2c-least-outstanding+slow-start") { e, d, now in
                AnyBalancer(P2CBalancer(e, metric: .leastOutstanding, seed: 7, ejection: d, slowStart: ramp(now), now: now))
            },
            .balancer("p2c-peak-ewma") { e, d, now in
                AnyBalancer(P2CBalancer(e, metric: .peakEWMA(decayTime: .seconds(10)), seed: 7, ejection: d, now: now))
            },
            .balancer("p2c-peak-ewma+slow-start") { e, d, now in
                AnyBalancer(
                    P2CBalancer(e, metric: .peakEWMA(decayTime: .seconds(10)), seed: 7, ejection: d, slowStart: ramp(now), now: now)
                )
            },
        ]
    }

    /// The policies the zones report compares: round robin and P2C peak-EWMA (τ 10 s), each without
    /// and with `routing` (named with "+zones"), all with outlier ejection by `ejection`, and the
    /// oracle (which also knows the cross-zone penalty and never uses a failing backend).
    ///
    /// - Parameters:
    ///   - routing: The zone rule. Default: the client in ``ZoneOutage/localZone``, clients spread
    ///     like the instances.
    ///   - ejection: The outlier detector's configuration. Default: the detector's defaults but at
    ///     most 50% of the instances ejected (its default 10% would leave all but one failing
    ///     backend of the client's zone in the set).
    public static func zonePolicies(
        _ routing: ZoneAwareRouting = ZoneAwareRouting(localZone: ZoneOutage.localZone),
        ejection: OutlierDetector.Configuration = {
            var configuration = OutlierDetector.Configuration()
            configuration.maxEjectionPercent = 50
            return configuration
        }()
    ) -> [SimulatedPolicy] {
        [
            .oracle,
            .balancer("round-robin", ejection: ejection) { e, d, _ in AnyBalancer(RoundRobinBalancer(e, start: 0, ejection: d)) },
            .balancer("round-robin+zones", ejection: ejection) { e, d, _ in
                AnyBalancer(RoundRobinBalancer(e, start: 0, ejection: d, zones: routing))
            },
            .balancer("p2c-peak-ewma", ejection: ejection) { e, d, now in
                AnyBalancer(P2CBalancer(e, metric: .peakEWMA(decayTime: .seconds(10)), seed: 7, ejection: d, now: now))
            },
            .balancer("p2c-peak-ewma+zones", ejection: ejection) { e, d, now in
                AnyBalancer(P2CBalancer(e, metric: .peakEWMA(decayTime: .seconds(10)), seed: 7, ejection: d, zones: routing, now: now))
            },
        ]
    }

    /// Runs every policy on the scenario.
    public static func run(_ scenario: TailLatencyScenario, policies: [SimulatedPolicy]) async -> [SimulationResult] {
        let traffic = Traffic(scenario)
        var results: [SimulationResult] = []
        for policy in policies {
            results.append(await run(scenario, traffic: traffic, policy: policy))
        }
        return results
    }

    /// Runs one policy on the scenario.
    public static func run(_ scenario: TailLatencyScenario, policy: SimulatedPolicy) async -> SimulationResult {
        await run(scenario, traffic: Traffic(scenario), policy: policy)
    }

    static func run(_ scenario: TailLatencyScenario, traffic: Traffic, policy: SimulatedPolicy) async -> SimulationResult {
        let clock = VirtualClock()
        let now: @Sendable () -> Duration = { clock.now }
        var chooser: Chooser
        switch policy.kind {
        case .oracle:
            chooser = .oracle(seed: scenario.seed)
        case .balancer(let make, let ejectionConfiguration):
            // Backend b is the instance on port 20000 + b; the cold instance joins later.
            let count = scenario.backends + (scenario.coldInstance == nil ? 0 : 1)
            let zones = scenario.zones
            let instances = (0..<count).map { b in
                // With zones, each backend in its zone; the cold instance, if any, in none.
                let zone = zones.flatMap { b < scenario.backends ? ZoneOutage.name($0.zone(of: b, backends: scenario.backends)) : nil }
                return try! Instance(host: "127.0.0.1", port: 20_000 + b, zone: zone)
            }
            let endpoints = EndpointCache<Int, Int>(factory: .calling { _, request in request })
            await endpoints.update(with: Array(instances.prefix(scenario.backends)))
            let detector = ejectionConfiguration.map { OutlierDetector(endpoints, configuration: $0, now: now) }
            var balanced = BalancedChooser(balancer: make(endpoints, detector, now), endpoints: endpoints, instances: instances)
            balanced.refresh()
            chooser = .balancer(balanced)
        }
        return await simulate(scenario, traffic: traffic, clock: clock, chooser: &chooser, name: policy.name)
    }

    private static func simulate(
        _ scenario: TailLatencyScenario,
        traffic: Traffic,
        clock: VirtualClock,
        chooser: inout Chooser,
        name: String
    ) async -> SimulationResult {
        let n = traffic.arrivals.count
        let c = scenario.concurrency
        let windowStart = seconds(scenario.duration) * scenario.slowWindow.lowerBound
        let windowEnd = seconds(scenario.duration) * scenario.slowWindow.upperBound
        let meanService = scenario.meanServiceTime
        // The cold instance, if any: backend `scenario.backends`, present from `joinTime`, cold until `coldEnd`.
        let cold = scenario.coldInstance
        let coldBackend = scenario.backends
        let joinTime = cold.map { seconds(scenario.duration) * $0.joinsAt } ?? .infinity
        let coldEnd = cold.map { joinTime + seconds($0.coldFor) } ?? .infinity
        let count = scenario.backends + (cold == nil ? 0 : 1)
        var present = scenario.backends
        var busy = [Int](repeating: 0, count: count)
        var inFlight = [Int](repeating: 0, count: count)
        var queues = [[Int]](repeating: [], count: count)
        var queueHeads = [Int](repeating: 0, count: count)
        var backendOf = [Int](repeating: 0, count: n)
        var picks = [EndpointPick](repeating: EndpointPick(index: 0, generation: 0), count: n)
        var failed = [Bool](repeating: false, count: n)
        var sent = [Int](repeating: 0, count: count)
        var timeline = ShareTimeline(duration: seconds(scenario.duration), backends: count)
        var arrivedWhileCold = 0
        var sentWhileCold = 0
        var latencies: [Double] = []
        latencies.reserveCapacity(n)
        var failures = 0
        var completions = EventHeap()
        // Zones: each backend's cross-zone penalty and the time it starts failing every call; the
        // phases between those failures, by arrival.
        let zones = scenario.zones
        let penalty = (0..<count).map { b in
            guard let zones, b < scenario.backends, zones.zone(of: b, backends: scenario.backends) != 0 else { return 0.0 }
            return seconds(zones.crossZoneLatency)
        }
        var failsFrom = [Double](repeating: .infinity, count: count)
        if let zones {
            let local = (0..<scenario.backends).filter { zones.zone(of: $0, backends: scenario.backends) == 0 }
            for (backend, share) in zip(local, zones.failuresAt) { failsFrom[backend] = seconds(scenario.duration) * share }
        }
        let localBackends =
            zones.map { z in (0..<scenario.backends).filter { z.zone(of: $0, backends: scenario.backends) == 0 }.count } ?? 0
        let phaseStarts = [0.0] + (zones?.failuresAt.prefix(localBackends).map { seconds(scenario.duration) * $0 }.sorted() ?? [])
        func phase(at time: Double) -> Int { max(0, phaseStarts.lastIndex { $0 <= time } ?? 0) }
        var phaseLatencies = [[Double]](repeating: [], count: phaseStarts.count)
        var phaseRequests = [Int](repeating: 0, count: phaseStarts.count)
        var phaseLocal = [Int](repeating: 0, count: phaseStarts.count)
        var phaseFailures = [Int](repeating: 0, count: phaseStarts.count)

        func isSlow(_ backend: Int, at time: Double) -> Bool {
            backend == scenario.slowBackend && time >= windowStart && time < windowEnd
        }

        func isCold(_ backend: Int, at time: Double) -> Bool {
            cold != nil && backend == coldBackend && time >= joinTime && time < coldEnd
        }

        /// How many times slower than normal `backend` is at `time`.
        func slowdown(_ backend: Int, at time: Double) -> Double {
            if isSlow(backend, at: time) { return scenario.slowdown }
            if let cold, isCold(backend, at: time) { return cold.slowdown }
            return 1
        }

        func start(_ request: Int, on backend: Int, at time: Double) {
            busy[backend] += 1
            if (backend == scenario.failingBackend && traffic.uniforms[request] < scenario.failureRate) || time >= failsFrom[backend] {
                failed[request] = true
                completions.push(time + seconds(scenario.failureLatency), request)
            } else {
                var service = exp(scenario.mu + scenario.sigma * traffic.normals[request])
                let factor = slowdown(backend, at: time)
                if factor != 1 { service *= factor }
                completions.push(time + service, request)
            }
        }

        var next = 0
        while next < n || !completions.isEmpty {
            let arrival = next < n ? traffic.arrivals[next] : .infinity
            if present < count, min(arrival, completions.peekTime ?? .infinity) >= joinTime {
                // The cold instance joins: the balancer is given the set with it.
                clock.set(seconds: joinTime)
                await chooser.publishAll()
                present = count
            }
            if let top = completions.peekTime, top <= arrival {
                let (time, event) = completions.pop()
                clock.set(seconds: time)
                // An event past the requests: a cross-zone response reaching the client.
                let request = event < n ? event : event - n
                let backend = backendOf[request]
                if event < n {
                    // The backend is done with it (the oracle's view of its queue).
                    busy[backend] -= 1
                    inFlight[backend] -= 1
                }
                if event < n, penalty[backend] > 0 {
                    completions.push(time + penalty[backend], request + n)
                } else {
                    let latency = time - traffic.arrivals[request]
                    if failed[request] { failures += 1 } else { latencies.append(latency) }
                    if zones != nil {
                        let p = phase(at: traffic.arrivals[request])
                        if failed[request] { phaseFailures[p] += 1 } else { phaseLatencies[p].append(latency) }
                    }
                    chooser.completed(picks[request], backend: backend, failed: failed[request], latency: latency)
                }
                if event < n, queueHeads[backend] < queues[backend].count {
                    let waiting = queues[backend][queueHeads[backend]]
                    queueHeads[backend] += 1
                    start(waiting, on: backend, at: time)
                }
            } else {
                let request = next
                next += 1
                clock.set(seconds: arrival)
                let (backend, pick) = chooser.choose(
                    inFlight: inFlight,
                    present: present,
                    meanService: { b in meanService * slowdown(b, at: arrival) },
                    concurrency: c,
                    penalty: penalty,
                    avoid: { b in b == scenario.failingBackend || arrival >= failsFrom[b] }
                )
                backendOf[request] = backend
                picks[request] = pick
                sent[backend] += 1
                timeline.sent(backend, at: arrival)
                if arrival >= joinTime, arrival < coldEnd {
                    arrivedWhileCold += 1
                    if backend == coldBackend { sentWhileCold += 1 }
                }
                if zones != nil {
                    let p = phase(at: arrival)
                    phaseRequests[p] += 1
                    if penalty[backend] == 0 { phaseLocal[p] += 1 }
                }
                inFlight[backend] += 1
                if busy[backend] < c {
                    start(request, on: backend, at: arrival)
                } else {
                    queues[backend].append(request)
                }
            }
        }

        latencies.sort()
        func percentile(_ p: Double, of latencies: [Double]) -> Duration {
            guard !latencies.isEmpty else { return .zero }
            let index = min(latencies.count - 1, max(0, Int((p * Double(latencies.count)).rounded(.up)) - 1))
            return .nanoseconds(Int64(latencies[index] * 1e9))
        }
        func percentile(_ p: Double) -> Duration { percentile(p, of: latencies) }
        let zonePhases: [ZonePhase]? = zones.map { _ in
            phaseStarts.indices.map { p in
                let sorted = phaseLatencies[p].sorted()
                return ZonePhase(
                    start: .nanoseconds(Int64(phaseStarts[p] * 1e9)),
                    healthyLocalBackends: max(0, localBackends - p),
                    requests: phaseRequests[p],
                    localShare: Double(phaseLocal[p]) / Double(max(1, phaseRequests[p])),
                    p50: percentile(0.5, of: sorted),
                    p99: percentile(0.99, of: sorted),
                    errorRate: Double(phaseFailures[p]) / Double(max(1, phaseRequests[p]))
                )
            }
        }
        return SimulationResult(
            policy: name,
            requests: n,
            p50: percentile(0.5),
            p99: percentile(0.99),
            p999: percentile(0.999),
            max: percentile(1),
            errorRate: Double(failures) / Double(n),
            shares: sent.map { Double($0) / Double(n) },
            coldInstanceShare: cold == nil ? nil : Double(sentWhileCold) / Double(max(1, arrivedWhileCold)),
            zonePhases: zonePhases,
            latencyQuantiles: quantiles(ofSorted: latencies),
            sharesOverTime: timeline.buckets
        )
    }
}

/// The randomness of one scenario, shared by every policy.
struct Traffic: Sendable {
    var arrivals: [Double]
    var normals: [Double]
    var uniforms: [Double]

    init(_ scenario: TailLatencyScenario) {
        var random = SplitMix64(seed: scenario.seed)
        let rate = scenario.arrivalRate
        let end = seconds(scenario.duration)
        var time = 0.0
        var arrivals: [Double] = []
        arrivals.reserveCapacity(Int(rate * end * 1.05))
        while true {
            time += -log(1 - random.nextDouble()) / rate
            if time >= end { break }
            arrivals.append(time)
        }
        self.arrivals = arrivals
        var normals: [Double] = []
        normals.reserveCapacity(arrivals.count)
        while normals.count < arrivals.count {
            // Box–Muller.
            let u1 = 1 - random.nextDouble()
            let u2 = random.nextDouble()
            let radius = (-2 * log(u1)).squareRoot()
            normals.append(radius * cos(2 * Double.pi * u2))
            normals.append(radius * sin(2 * Double.pi * u2))
        }
        normals.removeLast(normals.count - arrivals.count)
        self.normals = normals
        self.uniforms = arrivals.map { _ in random.nextDouble() }
    }
}

/// Who picks, and what they learn.
enum Chooser {
    case balancer(BalancedChooser)
    case oracle(seed: UInt64)

    /// Chooses a backend among the first `present`.
    mutating func choose(
        inFlight: [Int],
        present: Int,
        meanService: (Int) -> Double,
        concurrency: Int,
        penalty: [Double],
        avoid: (Int) -> Bool
    ) -> (backend: Int, pick: EndpointPick) {
        switch self {
        case .balancer(let balanced):
            let pick = try! balanced.balancer.pick()
            let backend = balanced.backendOf[pick.index]
            balanced.balancer.willCall(pick, slot: balanced.slots[backend])
            return (backend, pick)
        case .oracle(let seed):
            var random = SplitMix64(seed: seed)
            var best = -1
            var bestCost = Double.infinity
            for backend in 0..<present where !avoid(backend) {
                let queued = Double(max(0, inFlight[backend] - concurrency + 1)) / Double(concurrency)
                let cost = meanService(backend) * (1 + queued) + penalty[backend]
                if cost < bestCost
                    || (cost == bestCost
                        && (inFlight[backend] < inFlight[best]
                            || (inFlight[backend] == inFlight[best] && random.next() & 1 == 0)))
                {
                    best = backend
                    bestCost = cost
                }
            }
            self = .oracle(seed: random.state)
            return (best, EndpointPick(index: best, generation: 0))
        }
    }

    func completed(_ pick: EndpointPick, backend: Int, failed: Bool, latency: Double) {
        guard case .balancer(let balanced) = self else { return }
        balanced.balancer.record(
            CallRecord(
                pick: pick,
                instanceID: balanced.ids[backend],
                slot: balanced.slots[backend],
                outcome: failed ? .failure : .success,
                latency: .nanoseconds(Int64(latency * 1e9))
            )
        )
    }

    /// Publishes every backend's instance to the balancer (the cold instance joins).
    mutating func publishAll() async {
        guard case .balancer(var balanced) = self else { return }
        await balanced.endpoints.update(with: balanced.instances)
        balanced.refresh()
        self = .balancer(balanced)
    }
}

/// A balancer of the library over the cache that stands for the backends.
struct BalancedChooser {
    let balancer: AnyBalancer<Int, Int>
    let endpoints: EndpointCache<Int, Int>
    /// Every backend's instance (backend b on port 20000 + b), published or not yet.
    let instances: [Instance]
    /// The backend at each position of the published set.
    var backendOf: [Int] = []
    /// Each published backend's slot and instance id, by backend (a call picked from an older set
    /// is recorded by them).
    var slots: [UInt32] = []
    var ids: [String] = []

    init(balancer: AnyBalancer<Int, Int>, endpoints: EndpointCache<Int, Int>, instances: [Instance]) {
        self.balancer = balancer
        self.endpoints = endpoints
        self.instances = instances
        slots = [UInt32](repeating: 0, count: instances.count)
        ids = instances.map(\.id)
    }

    /// Reads the published set's positions and slots.
    mutating func refresh() {
        let set = endpoints.snapshot
        backendOf = set.instances.map { $0.port - 20_000 }
        for (backend, slot) in zip(backendOf, set.slots) { slots[backend] = slot }
    }
}

/// Virtual time, read by the balancers and the detector through their `now` closures.
final class VirtualClock: Sendable {
    private let nanos = Atomic<Int64>(0)
    var now: Duration { .nanoseconds(nanos.load(ordering: .relaxed)) }
    func set(seconds: Double) { nanos.store(Int64(seconds * 1e9), ordering: .relaxed) }
}

/// A binary min-heap of (time, request) completions.
struct EventHeap {
    private var times: [Double] = []
    private var requests: [Int] = []

    var isEmpty: Bool { times.isEmpty }
    var peekTime: Double? { times.first }

    mutating func push(_ time: Double, _ request: Int) {
        times.append(time)
        requests.append(request)
        var child = times.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if times[parent] <= times[child] { break }
            times.swapAt(parent, child)
            requests.swapAt(parent, child)
            child = parent
        }
    }

    mutating func pop() -> (Double, Int) {
        let top = (times[0], requests[0])
        let lastTime = times.removeLast()
        let lastRequest = requests.removeLast()
        if !times.isEmpty {
            times[0] = lastTime
            requests[0] = lastRequest
            var parent = 0
            while true {
                let left = 2 * parent + 1
                if left >= times.count { break }
                let right = left + 1
                let child = right < times.count && times[right] < times[left] ? right : left
                if times[parent] <= times[child] { break }
                times.swapAt(parent, child)
                requests.swapAt(parent, child)
                parent = child
            }
        }
        return top
    }
}

/// SplitMix64, for reproducible scenario randomness (and this package's tests' seeded draws).
package struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    package init(seed: UInt64) { state = seed }
    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func nextDouble() -> Double { Double(next() >> 11) * 0x1.0p-53 }
}
