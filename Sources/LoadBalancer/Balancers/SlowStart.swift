/// Slow start: an instance new to the set, or back from ejection, takes traffic ramping from a
/// minimum share of its full weight to all of it over a window (Envoy's slow start), so that a
/// cold instance (empty caches, a JIT not yet warm, a pool not yet filled) is not given a full
/// share at once: load-aware balancers would otherwise find it idle and send it most calls.
///
/// The share `elapsed` into the window is `max(minimumShare, (elapsed / window)^(1 / aggression))`:
/// aggression 1 ramps linearly, above 1 faster at first, below 1 slower at first.
public struct SlowStart: Sendable {
    /// How long the ramp lasts.
    public var window: Duration
    /// The share an instance gets at the start of its ramp, in `0...1`. Default 0.1.
    public var minimumShare: Double
    /// The curve's shape, above 0. Default 1 (linear).
    public var aggression: Double
    /// The time source (monotonic, any origin). Default: `ContinuousClock`.
    public var now: (@Sendable () -> Duration)?

    /// Creates a slow-start rule.
    ///
    /// - Parameters:
    ///   - window: How long the ramp lasts.
    ///   - minimumShare: The share at the start, in `0...1`. Default 0.1.
    ///   - aggression: The curve's shape, above 0. Default 1 (linear).
    ///   - now: The time source (monotonic, any origin). Default: `ContinuousClock`.
    public init(window: Duration, minimumShare: Double = 0.1, aggression: Double = 1, now: (@Sendable () -> Duration)? = nil) {
        self.window = window
        self.minimumShare = minimumShare
        self.aggression = aggression
        self.now = now
    }

    /// The share of its full weight an instance gets `elapsed` into its ramp: 1 from the end of the
    /// window on (and for a window of zero or less).
    public func share(after elapsed: Duration) -> Double {
        guard window > .zero, elapsed < window else { return 1 }
        let minimum = min(1, max(0, minimumShare))
        let progress = max(0, elapsed / window)
        guard progress > 0 else { return minimum }
        let curve = aggression == 1 || !(aggression > 0) ? progress : Self.power(progress, 1 / aggression)
        return min(1, max(minimum, curve))
    }

    /// x^y for x in (0, 1]: e^(y ln x), without Foundation.
    static func power(_ x: Double, _ y: Double) -> Double {
        // ln x = e ln 2 + ln m, with x = m 2^e and m in [1, 2); ln m = 2 atanh((m - 1) / (m + 1)).
        let exponent = Double(x.exponent)
        let m = x.significand
        let s = (m - 1) / (m + 1)
        let s2 = s * s
        var series = 0.0
        var term = s
        var k = 1.0
        while k < 40 {
            series += term / k
            term *= s2
            k += 2
        }
        let ln = exponent * 0.693_147_180_559_945_3 + 2 * series
        // y ln x <= 0 here (x <= 1, y > 0): e^(y ln x) = e^(-(-y ln x)).
        return expNegative(-y * ln)
    }
}
