import LoadBalancer

/// The tail-latency scenario the balancers are judged on.
///
/// Backends serve a fixed number of calls at a time with a FIFO queue behind; service times are
/// log-normal; requests arrive as a Poisson process at a share of the healthy cluster's capacity.
/// One backend turns slow for the middle third of the run; another fails a share of its calls
/// quickly. Defaults are the project's reference scenario: 10 backends × 4 slots, median 10 ms and
/// p99 40 ms, 60% load, 100 s, backend 0 ten times slower in the middle third, backend 1 failing
/// 20% of calls after 1 ms.
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

func seconds(_ duration: Duration) -> Double { duration.secondsValue }

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif
