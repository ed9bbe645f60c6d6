import LoadBalancer

/// A recorded run of real calls: the instance sets the client saw and every call it made, to
/// replay in virtual time with ``TailLatencySimulation/replay(_:policies:)``.
public struct RecordedRun: Sendable, Hashable {
    /// An instance of a recorded set.
    public struct Member: Sendable, Hashable {
        /// The instance's id.
        public var id: String
        /// Its weight (as `Instance.weight`). Default 1.
        public var weight: Int
        /// Its priority (as `Instance.priority`). Default 0.
        public var priority: Int
        /// Its zone (as `Instance.zone`). Default none.
        public var zone: String?

        /// An instance of a set.
        public init(id: String, weight: Int = 1, priority: Int = 0, zone: String? = nil) {
            self.id = id
            self.weight = weight
            self.priority = priority
            self.zone = zone
        }
    }

    /// The whole set of instances from a time on.
    public struct SetChange: Sendable, Hashable {
        /// When the set took effect, into the run.
        public var at: Duration
        /// The instances.
        public var members: [Member]

        /// The set `members` from `at` into the run on.
        public init(at: Duration, members: [Member]) {
            self.at = at
            self.members = members
        }
    }

    /// One call to one instance.
    public struct Call: Sendable, Hashable {
        /// The id of the instance called.
        public var instance: String
        /// When the call started, into the run.
        public var start: Duration
        /// How long it took.
        public var latency: Duration
        /// Whether it failed.
        public var failed: Bool

        /// A call to `instance` that started `start` into the run and took `latency`.
        public init(instance: String, start: Duration, latency: Duration, failed: Bool) {
            self.instance = instance
            self.start = start
            self.latency = latency
            self.failed = failed
        }
    }

    /// The set changes, in time order. Without any, the set is every instance called, from the start.
    public var sets: [SetChange]
    /// The calls, in any order.
    public var calls: [Call]

    /// The most instances a replay takes (the simulation gives each a loopback port of its own,
    /// from 20,000 up).
    public static let maximumInstances = 65_535 - 20_000

    /// A recorded run of `sets` and `calls`.
    public init(sets: [SetChange], calls: [Call]) {
        self.sets = sets
        self.calls = calls
    }

    /// Every instance of the run, in the order it first appears in a set, then the instances
    /// only calls name, in the order of their first call. The order of
    /// ``SimulationResult/shares`` in a replay.
    public var instances: [String] {
        var seen: Set<String> = []
        var ordered: [String] = []
        for id in sets.flatMap({ $0.members.map(\.id) }) + calls.map(\.instance) where seen.insert(id).inserted {
            ordered.append(id)
        }
        return ordered
    }
}

/// A replay of a ``RecordedRun``: the recorded call starts arrive in virtual time, each policy
/// chooses an instance, and the call takes a latency and outcome drawn from what that instance
/// showed around that time in the recording.
///
/// The run is cut into windows of ``window``. A call sent to an instance at a time takes the
/// latency and outcome of one of the calls recorded to that instance in the same window, drawn
/// with the seeded generator (so a replay learns the instance's latency distribution and failure
/// rate window by window, a slow spell included). Where the recording has no call to that
/// instance in that window, the nearest window that has one is used; an instance never called
/// takes the calls of every instance in the window.
///
/// By default an instance serves any number of calls at once (a recorded latency is taken as it
/// is, whatever the load); with ``instanceConcurrency`` it serves that many, the rest waiting in
/// a FIFO queue, and a recorded latency is the service time.
public struct ReplayScenario: Sendable, Hashable {
    /// The recorded run.
    public var run: RecordedRun
    /// The span over which each instance's behaviour is taken as steady. Default 1 s.
    public var window: Duration = .seconds(1)
    /// Calls an instance serves at once, or `nil` for no limit. Default `nil`.
    public var instanceConcurrency: Int? = nil
    /// Seed of the draws (shared by every policy). Default 1.
    public var seed: UInt64 = 1

    /// A replay of `run`.
    public init(_ run: RecordedRun, window: Duration = .seconds(1), instanceConcurrency: Int? = nil, seed: UInt64 = 1) {
        self.run = run
        self.window = window
        self.instanceConcurrency = instanceConcurrency
        self.seed = seed
    }
}

extension TailLatencySimulation {
    /// Replays a recorded run with every policy: the recorded call starts are the arrivals, the
    /// recorded set changes are published to the balancer when they happen, and each call's
    /// latency and outcome are drawn from the recording (see ``ReplayScenario``). The draws come
    /// from the scenario's seed and are the same for every policy; the same scenario gives the
    /// same results.
    ///
    /// The oracle knows, in each window, each instance's mean recorded latency and failure rate:
    /// it sends each call to an instance with the lowest failure rate in the set, the one where
    /// the call's expected completion is soonest. A call that arrives while the set is empty
    /// fails at once. ``SimulationResult/shares`` are in the order of ``RecordedRun/instances``.
    public static func replay(_ scenario: ReplayScenario, policies: [SimulatedPolicy]) async -> [SimulationResult] {
        let model = ReplayModel(scenario)
        var results: [SimulationResult] = []
        for policy in policies {
            results.append(await replay(model, policy: policy))
        }
        return results
    }

    private static func replay(_ model: ReplayModel, policy: SimulatedPolicy) async -> SimulationResult {
        let clock = VirtualClock()
        let now: @Sendable () -> Duration = { clock.now }
        let instances = model.instances
        var chooser: Chooser
        switch policy.kind {
        case .oracle:
            chooser = .oracle(seed: model.seed)
        case .balancer(let make, let ejectionConfiguration):
            let endpoints = EndpointCache<Int, Int>(factory: .calling { _, request in request })
            let detector = ejectionConfiguration.map { OutlierDetector(endpoints, configuration: $0, now: now) }
            var balanced = BalancedChooser(balancer: make(endpoints, detector, now), endpoints: endpoints, instances: instances)
            balanced.refresh()
            chooser = .balancer(balanced)
        }

        let n = model.arrivals.count
        let count = instances.count
        let c = model.concurrency
        var inSet = [Bool](repeating: false, count: count)
        var setIsEmpty = true
        var nextSet = 0
        var busy = [Int](repeating: 0, count: count)
        var inFlight = [Int](repeating: 0, count: count)
        var queues = [[Int]](repeating: [], count: count)
        var queueHeads = [Int](repeating: 0, count: count)
        var backendOf = [Int](repeating: -1, count: n)
        var picks = [EndpointPick](repeating: EndpointPick(index: 0, generation: 0), count: n)
        var failed = [Bool](repeating: false, count: n)
        var sent = [Int](repeating: 0, count: count)
        var timeline = ShareTimeline(duration: model.duration, backends: count)
        var latencies: [Double] = []
        latencies.reserveCapacity(n)
        var failures = 0
        var completions = EventHeap()

        func start(_ request: Int, on backend: Int, at time: Double) {
            busy[backend] += 1
            let sample = model.sample(backend, at: time, uniform: model.uniforms[request])
            failed[request] = sample.failed
            completions.push(time + sample.latency, request)
        }

        var next = 0
        while next < n || !completions.isEmpty {
            let arrival = next < n ? model.arrivals[next] : .infinity
            let due = min(arrival, completions.peekTime ?? .infinity)
            while nextSet < model.sets.count, model.sets[nextSet].at <= due {
                // The set changes: the balancer is given the new one.
                let change = model.sets[nextSet]
                nextSet += 1
                clock.set(seconds: change.at)
                await chooser.publish(change.members)
                inSet = [Bool](repeating: false, count: count)
                for member in change.members { inSet[member.port - 20_000] = true }
                setIsEmpty = change.members.isEmpty
            }
            if let top = completions.peekTime, top <= arrival {
                let (time, request) = completions.pop()
                clock.set(seconds: time)
                let backend = backendOf[request]
                busy[backend] -= 1
                inFlight[backend] -= 1
                let latency = time - model.arrivals[request]
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
                if setIsEmpty {
                    // No instance to send it to: it fails at once.
                    failures += 1
                    continue
                }
                let window = model.window(at: arrival)
                let lowestFailureRate = (0..<count).filter { inSet[$0] }.map { model.failureRate($0, window: window) }.min() ?? 0
                let (backend, pick) = chooser.choose(
                    inFlight: inFlight,
                    present: count,
                    meanService: { b in model.meanLatency(b, window: window) },
                    concurrency: c,
                    penalty: [Double](repeating: 0, count: count),
                    avoid: { b in !inSet[b] || model.failureRate(b, window: window) > lowestFailureRate }
                )
                backendOf[request] = backend
                picks[request] = pick
                sent[backend] += 1
                timeline.sent(backend, at: arrival)
                inFlight[backend] += 1
                if busy[backend] < c {
                    start(request, on: backend, at: arrival)
                } else {
                    queues[backend].append(request)
                }
            }
        }

        latencies.sort()
        return SimulationResult(
            policy: policy.name,
            requests: n,
            p50: percentile(0.5, ofSorted: latencies),
            p99: percentile(0.99, ofSorted: latencies),
            p999: percentile(0.999, ofSorted: latencies),
            max: percentile(1, ofSorted: latencies),
            errorRate: n == 0 ? 0 : Double(failures) / Double(n),
            shares: sent.map { n == 0 ? 0 : Double($0) / Double(n) },
            coldInstanceShare: nil,
            zonePhases: nil,
            latencyQuantiles: quantiles(ofSorted: latencies),
            sharesOverTime: timeline.buckets
        )
    }
}

/// A replay's arrivals, sets and draws, shared by every policy.
struct ReplayModel: Sendable {
    /// One recorded call's latency (seconds) and outcome.
    struct Sample: Sendable {
        var latency: Double
        var failed: Bool
    }

    /// A set change, with the instances to publish.
    struct Change: Sendable {
        var at: Double
        var members: [Instance]
    }

    let seed: UInt64
    /// Every instance, backend b on port 20000 + b, with the recorded id.
    let instances: [Instance]
    let sets: [Change]
    /// The recorded call starts, in order (seconds).
    let arrivals: [Double]
    /// A uniform draw per arrival.
    let uniforms: [Double]
    /// The run's length: the last arrival (seconds).
    let duration: Double
    /// Calls an instance serves at once.
    let concurrency: Int
    let windowLength: Double
    /// The samples each instance (index) uses in each window.
    private let samples: [[[Sample]]]
    /// Mean latency and failure rate per instance and window.
    private let means: [[Double]]
    private let failureRates: [[Double]]

    init(_ scenario: ReplayScenario) {
        seed = scenario.seed
        let run = scenario.run
        let ids = run.instances
        precondition(
            ids.count <= RecordedRun.maximumInstances,
            "a replay takes at most \(RecordedRun.maximumInstances) instances; this run has \(ids.count)")
        let index = Dictionary(uniqueKeysWithValues: ids.enumerated().map { ($0.element, $0.offset) })
        func instance(_ member: RecordedRun.Member) -> Instance {
            let b = index[member.id]!
            let port = 20_000 + b
            return
                (try? Instance(
                    host: "127.0.0.1", port: port, weight: member.weight, priority: member.priority, zone: member.zone, id: member.id))
                ?? (try! Instance(host: "127.0.0.1", port: port))
        }
        instances = ids.map { instance(RecordedRun.Member(id: $0)) }
        if run.sets.isEmpty {
            sets = [Change(at: 0, members: instances)]
        } else {
            sets = run.sets.enumerated()
                .sorted { ($0.element.at, $0.offset) < ($1.element.at, $1.offset) }
                .map { Change(at: max(0, $0.element.at.secondsValue), members: $0.element.members.map(instance)) }
        }
        let calls = run.calls.enumerated()
            .sorted { ($0.element.start, $0.offset) < ($1.element.start, $1.offset) }
            .map(\.element)
        arrivals = calls.map { max(0, $0.start.secondsValue) }
        duration = arrivals.last ?? 0
        concurrency = max(1, scenario.instanceConcurrency ?? 1 << 40)
        windowLength = max(1e-6, scenario.window.secondsValue)
        var random = SplitMix64(seed: scenario.seed)
        uniforms = arrivals.map { _ in random.nextDouble() }

        // The recorded calls by instance and window, then each empty cell filled from the nearest
        // window of the same instance, else from every instance's calls in the window.
        let windows = Int(duration / windowLength) + 1
        var recorded = [[[Sample]]](repeating: [[Sample]](repeating: [], count: windows), count: ids.count)
        var everyInstance = [[Sample]](repeating: [], count: windows)
        for call in calls {
            let sample = Sample(latency: max(0, call.latency.secondsValue), failed: call.failed)
            let w = min(windows - 1, Int(max(0, call.start.secondsValue) / windowLength))
            recorded[index[call.instance]!][w].append(sample)
            everyInstance[w].append(sample)
        }
        let allCalls = everyInstance.flatMap { $0 }
        var samples = recorded
        for b in ids.indices {
            // The nearest window with calls to the instance, earlier on a tie: one pass each way.
            var before = [Int?](repeating: nil, count: windows)
            var after = [Int?](repeating: nil, count: windows)
            var last: Int?
            for w in 0..<windows {
                if !recorded[b][w].isEmpty { last = w }
                before[w] = last
            }
            last = nil
            for w in (0..<windows).reversed() {
                if !recorded[b][w].isEmpty { last = w }
                after[w] = last
            }
            for w in 0..<windows where recorded[b][w].isEmpty {
                let nearest: Int? =
                    switch (before[w], after[w]) {
                    case (let earlier?, let later?): w - earlier <= later - w ? earlier : later
                    case (let earlier?, nil): earlier
                    case (nil, let later?): later
                    case (nil, nil): nil
                    }
                if let nearest {
                    samples[b][w] = recorded[b][nearest]
                } else if !everyInstance[w].isEmpty {
                    samples[b][w] = everyInstance[w]
                } else {
                    samples[b][w] = allCalls
                }
            }
        }
        self.samples = samples
        means = samples.map { cells in
            cells.map { cell in
                let succeeded = cell.filter { !$0.failed }
                let used = succeeded.isEmpty ? cell : succeeded
                return used.isEmpty ? 0 : used.map(\.latency).reduce(0, +) / Double(used.count)
            }
        }
        failureRates = samples.map { cells in
            cells.map { cell in cell.isEmpty ? 0 : Double(cell.filter(\.failed).count) / Double(cell.count) }
        }
    }

    /// The window of a time.
    func window(at time: Double) -> Int {
        min(samples.first.map { $0.count - 1 } ?? 0, max(0, Int(time / windowLength)))
    }

    /// A call's latency and outcome on `backend` at `time`, chosen by `uniform`.
    func sample(_ backend: Int, at time: Double, uniform: Double) -> Sample {
        let cell = samples[backend][window(at: time)]
        guard !cell.isEmpty else { return Sample(latency: 0, failed: false) }
        return cell[min(cell.count - 1, Int(uniform * Double(cell.count)))]
    }

    func meanLatency(_ backend: Int, window: Int) -> Double { means[backend][window] }

    func failureRate(_ backend: Int, window: Int) -> Double { failureRates[backend][window] }
}

extension Chooser {
    /// Publishes `instances` as the whole set (a recorded set change).
    mutating func publish(_ instances: [Instance]) async {
        guard case .balancer(var balanced) = self else { return }
        await balanced.endpoints.update(with: instances)
        balanced.refresh()
        self = .balancer(balanced)
    }
}
