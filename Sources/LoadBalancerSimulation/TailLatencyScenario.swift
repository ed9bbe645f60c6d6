import LoadBalancer

/// The tail-latency scenario the balancers are judged on.
///
/// Backends serve a fixed number of calls at a time with a FIFO queue behind; service times are
/// log-normal; requests arrive as a Poisson process at a share of the healthy cluster's capacity.
/// One backend turns slow for the middle third of the run; another fails a share of its calls
/// quickly. Defaults are the project's reference scenario: 10 backends × 4 slots, median 10 ms and
/// p99 40 ms, 60% load, 100 s, backend 0 ten times slower in the middle third, backend 1 failing
/// 20% of calls after 1 ms. A ``ColdInstance`` may join mid-run (none by default).
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
    /// Arrivals per second.
    var arrivalRate: Double { load * Double(backends * concurrency) / meanServiceTime }
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

func seconds(_ duration: Duration) -> Double { duration.secondsValue }

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif
