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

    /// The oracle: knows each backend's true queue and current mean service time, sends each
    /// request where its expected completion is soonest, and never uses the failing backend.
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
    /// Share of requests sent to each backend.
    public var shares: [Double]

    /// The policy's name, its p50, p99 and p99.9 latencies and its error rate.
    public var description: String {
        "\(policy): p50 \(p50) p99 \(p99) p99.9 \(p999) errors \(errorRate)"
    }
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
            let instances = (0..<scenario.backends).map { try! Instance(host: "127.0.0.1", port: 20_000 + $0) }
            let endpoints = await EndpointCache(
                endpoints: instances.map { instance in Endpoint<Int, Int>(instance: instance) { $0 } }
            )
            let detector = ejectionConfiguration.map { OutlierDetector(endpoints, configuration: $0, now: now) }
            let balancer = make(endpoints, detector, now)
            let set = endpoints.snapshot
            chooser = .balancer(
                balancer,
                backendOf: set.instances.map { $0.port - 20_000 },
                slots: set.slots,
                ids: set.instances.map(\.id)
            )
        }
        return simulate(scenario, traffic: traffic, clock: clock, chooser: &chooser, name: policy.name)
    }

    private static func simulate(
        _ scenario: TailLatencyScenario,
        traffic: Traffic,
        clock: VirtualClock,
        chooser: inout Chooser,
        name: String
    ) -> SimulationResult {
        let n = traffic.arrivals.count
        let c = scenario.concurrency
        let windowStart = seconds(scenario.duration) * scenario.slowWindow.lowerBound
        let windowEnd = seconds(scenario.duration) * scenario.slowWindow.upperBound
        let meanService = scenario.meanServiceTime
        var busy = [Int](repeating: 0, count: scenario.backends)
        var inFlight = [Int](repeating: 0, count: scenario.backends)
        var queues = [[Int]](repeating: [], count: scenario.backends)
        var queueHeads = [Int](repeating: 0, count: scenario.backends)
        var backendOf = [Int](repeating: 0, count: n)
        var picks = [EndpointPick](repeating: EndpointPick(index: 0, generation: 0), count: n)
        var failed = [Bool](repeating: false, count: n)
        var sent = [Int](repeating: 0, count: scenario.backends)
        var latencies: [Double] = []
        latencies.reserveCapacity(n)
        var failures = 0
        var completions = EventHeap()

        func isSlow(_ backend: Int, at time: Double) -> Bool {
            backend == scenario.slowBackend && time >= windowStart && time < windowEnd
        }

        func start(_ request: Int, on backend: Int, at time: Double) {
            busy[backend] += 1
            if backend == scenario.failingBackend, traffic.uniforms[request] < scenario.failureRate {
                failed[request] = true
                completions.push(time + seconds(scenario.failureLatency), request)
            } else {
                var service = exp(scenario.mu + scenario.sigma * traffic.normals[request])
                if isSlow(backend, at: time) { service *= scenario.slowdown }
                completions.push(time + service, request)
            }
        }

        var next = 0
        while next < n || !completions.isEmpty {
            let arrival = next < n ? traffic.arrivals[next] : .infinity
            if let top = completions.peekTime, top <= arrival {
                let (time, request) = completions.pop()
                clock.set(seconds: time)
                let backend = backendOf[request]
                busy[backend] -= 1
                inFlight[backend] -= 1
                let latency = time - traffic.arrivals[request]
                if failed[request] { failures += 1 } else { latencies.append(latency) }
                chooser.completed(picks[request], backend: backend, failed: failed[request], latency: latency)
                if queueHeads[backend] < queues[backend].count {
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
                    meanService: { b in isSlow(b, at: arrival) ? meanService * scenario.slowdown : meanService },
                    concurrency: c,
                    avoid: scenario.failingBackend
                )
                backendOf[request] = backend
                picks[request] = pick
                sent[backend] += 1
                inFlight[backend] += 1
                if busy[backend] < c {
                    start(request, on: backend, at: arrival)
                } else {
                    queues[backend].append(request)
                }
            }
        }

        latencies.sort()
        func percentile(_ p: Double) -> Duration {
            guard !latencies.isEmpty else { return .zero }
            let index = min(latencies.count - 1, max(0, Int((p * Double(latencies.count)).rounded(.up)) - 1))
            return .nanoseconds(Int64(latencies[index] * 1e9))
        }
        return SimulationResult(
            policy: name,
            requests: n,
            p50: percentile(0.5),
            p99: percentile(0.99),
            p999: percentile(0.999),
            max: percentile(1),
            errorRate: Double(failures) / Double(n),
            shares: sent.map { Double($0) / Double(n) }
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
    case balancer(AnyBalancer<Int, Int>, backendOf: [Int], slots: [UInt32], ids: [String])
    case oracle(seed: UInt64)

    mutating func choose(
        inFlight: [Int],
        meanService: (Int) -> Double,
        concurrency: Int,
        avoid: Int?
    ) -> (backend: Int, pick: EndpointPick) {
        switch self {
        case .balancer(let balancer, let backendOf, let slots, _):
            let pick = try! balancer.pick()
            balancer.willCall(pick, slot: slots[pick.index])
            return (backendOf[pick.index], pick)
        case .oracle(let seed):
            var random = SplitMix64(seed: seed)
            var best = -1
            var bestCost = Double.infinity
            for backend in inFlight.indices where backend != avoid {
                let queued = Double(max(0, inFlight[backend] - concurrency + 1)) / Double(concurrency)
                let cost = meanService(backend) * (1 + queued)
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
        guard case .balancer(let balancer, _, let slots, let ids) = self else { return }
        balancer.record(
            CallRecord(
                pick: pick,
                instanceID: ids[pick.index],
                slot: slots[pick.index],
                outcome: failed ? .failure : .success,
                latency: .nanoseconds(Int64(latency * 1e9))
            )
        )
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

/// SplitMix64, for reproducible scenario randomness.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func nextDouble() -> Double { Double(next() >> 11) * 0x1.0p-53 }
}
