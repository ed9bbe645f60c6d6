import LoadBalancer

/// The tail-latency scenario the balancers are judged on.
///
/// Backends serve a fixed number of calls at a time with a FIFO queue behind; service times are
/// log-normal; requests arrive as a Poisson process at a share of the healthy cluster's capacity.
/// One backend turns slow for the middle third of the run; another fails a share of its calls
/// quickly. Defaults are the project's reference scenario: 10 backends × 4 slots, median 10 ms and
/// p99 40 ms, 60% load, 100 s, backend 0 ten times slower in the middle third, backend 1 failing
/// 20% of calls after 1 ms. A ``ColdInstance`` may join mid-run, and the backends may be spread
/// over zones with a ``ZoneOutage`` (neither by default).
public struct TailLatencyScenario: Sendable, Hashable {
    /// Number of backends. Default 10.
    public var backends = 10
    /// Calls a backend serves at once. Default 4.
    public var concurrency = 4
    /// Median service time. Default 10 ms.
    public var medianServiceTime: Duration = .milliseconds(10)
    /// 99th percentile of the service time. Default 40 ms.
    public var p99ServiceTime: Duration = .milliseconds(40)
    /// Offered load as a share of the healthy cluster's capacity. Default 0.6.
    public var load = 0.6
    /// Simulated run length. Default 100 s.
    public var duration: Duration = .seconds(100)
    /// The backend that turns slow. Default 0.
    public var slowBackend: Int? = 0
    /// How much slower it turns. Default 10.
    public var slowdown = 10.0
    /// The share of the run, from/to, during which it is slow. Default the middle third.
    public var slowWindow: ClosedRange<Double> = (1.0 / 3)...(2.0 / 3)
    /// The backend that fails calls. Default 1.
    public var failingBackend: Int? = 1
    /// The share of its calls that fail. Default 0.2.
    public var failureRate = 0.2
    /// How long a failing call takes. Default 1 ms.
    public var failureLatency: Duration = .milliseconds(1)
    /// Seed of arrivals and service-time draws (shared by every policy). Default 1.
    public var seed: UInt64 = 1
    /// An instance that joins the set mid-run and is slow at first. Default none.
    public var coldInstance: ColdInstance? = nil
    /// The backends spread over zones, with a cross-zone latency penalty and the client's zone
    /// failing backend by backend. Default none (no zones, no penalty).
    public var zones: ZoneOutage? = nil

    /// The reference scenario (the defaults of every property).
    public init() {}

    /// The reference scenario, changed by `configure`.
    public static func reference(_ configure: (inout TailLatencyScenario) -> Void = { _ in }) -> TailLatencyScenario {
        var scenario = TailLatencyScenario()
        configure(&scenario)
        return scenario
    }

    /// σ of the log-normal service time: ln(p99 / median) / z₀.₉₉.
    var sigma: Double { log(seconds(p99ServiceTime) / seconds(medianServiceTime)) / 2.326_347_874_040_841 }
    /// μ of the log-normal service time (seconds).
    var mu: Double { log(seconds(medianServiceTime)) }
    /// Mean service time (seconds).
    var meanServiceTime: Double { exp(mu + sigma * sigma / 2) }
    /// The backends whose capacity ``load`` is a share of: all of them, or with zones the client's zone's.
    var loadedBackends: Int {
        guard let zones else { return backends }
        return (0..<backends).filter { zones.zone(of: $0, backends: backends) == 0 }.count
    }
    /// Arrivals per second.
    var arrivalRate: Double { load * Double(loadedBackends * concurrency) / meanServiceTime }
}

/// An instance that joins the set mid-run, slow for a while after it joins (empty caches, a JIT
/// not yet warm), then as fast as the others.
///
/// It is one more backend, numbered ``TailLatencyScenario/backends`` (after the others), with the
/// same number of slots; the offered load stays a share of the other backends' capacity, so it adds
/// capacity once warm. The simulation publishes the set with it to the balancer when it joins; a
/// request that starts service on it while it is cold takes ``slowdown`` times as long.
public struct ColdInstance: Sendable, Hashable {
    /// When it joins, as a share of the run. Default 1/3.
    public var joinsAt = 1.0 / 3
    /// How long it stays cold after it joins. Default 30 s.
    public var coldFor: Duration = .seconds(30)
    /// How much slower it is while cold. Default 10.
    public var slowdown = 10.0

    /// A cold instance joining `joinsAt` into the run (a share of it), `slowdown` times slower for
    /// its first `coldFor`. The defaults: a third into the run, ten times slower for 30 s.
    public init(joinsAt: Double = 1.0 / 3, coldFor: Duration = .seconds(30), slowdown: Double = 10) {
        self.joinsAt = joinsAt
        self.coldFor = coldFor
        self.slowdown = slowdown
    }
}

/// The backends spread over zones, the client in the first, a latency penalty on every call to
/// another zone, and the client's zone losing its backends one after another.
///
/// The zones are named `"a"`, `"b"`, `"c"`, … and take the backends in blocks of equal size, in
/// order: with 12 backends and 3 zones, backends 0–3 are in zone `"a"` (the client's), 4–7 in
/// `"b"` and 8–11 in `"c"`. The simulation publishes each backend's `Instance.zone`. A call to a
/// backend outside zone `"a"` takes ``crossZoneLatency`` longer, on the way (the backend's slots
/// are not held for it). The k-th backend of zone `"a"` fails every call (in the scenario's
/// ``TailLatencyScenario/failureLatency``) from `failuresAt[k]` into the run on, so the local zone
/// goes from all its backends healthy to none; ``SimulationResult/zonePhases`` reports each phase
/// between two failures.
///
/// The simulated client stands for the clients of zone `"a"`: with zones, requests arrive at
/// ``TailLatencyScenario/load`` of the capacity of zone `"a"`'s backends (the other zones' own
/// clients are not simulated, so their backends serve only what zone `"a"` sends them). The
/// client's zone should hold at least as many backends as there are entries in ``failuresAt``.
public struct ZoneOutage: Sendable, Hashable {
    /// Number of zones. Default 3.
    public var zones = 3
    /// Added to every call to a backend outside the client's zone. Default 5 ms.
    public var crossZoneLatency: Duration = .milliseconds(5)
    /// When each backend of the client's zone starts failing every call, as shares of the run, in
    /// order of the zone's backends. Default 1/5, 2/5, 3/5 and 4/5.
    public var failuresAt: [Double] = [0.2, 0.4, 0.6, 0.8]

    /// Zones of the backends: `zones` of them, a `crossZoneLatency` penalty, and the client's zone's
    /// backends failing every call from `failuresAt` on (shares of the run). The defaults: 3 zones,
    /// 5 ms, failures at 1/5, 2/5, 3/5 and 4/5 of the run.
    public init(zones: Int = 3, crossZoneLatency: Duration = .milliseconds(5), failuresAt: [Double] = [0.2, 0.4, 0.6, 0.8]) {
        self.zones = zones
        self.crossZoneLatency = crossZoneLatency
        self.failuresAt = failuresAt
    }

    /// The client's zone, `"a"`.
    public static let localZone = "a"

    /// The name of zone `index`: `"a"`, `"b"`, …
    static func name(_ index: Int) -> String { String(UnicodeScalar(UInt8(97 + index % 26))) }

    /// The zone index of `backend` among `backends`.
    func zone(of backend: Int, backends: Int) -> Int {
        let count = max(1, zones)
        return min(count - 1, backend * count / max(1, backends))
    }
}

func seconds(_ duration: Duration) -> Double { duration.secondsValue }

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif
