import Synchronization

/// Jittered exponential backoff between retries ("full jitter"): the n-th retry waits a uniformly
/// random time in `0 ... min(cap, base × multiplier^(n−1))`.
///
/// Full jitter spreads the retries of many clients over the whole window, so a burst of failures
/// does not come back as a synchronised burst of retries.
public struct Backoff: Sendable, Hashable {
    /// The window of the first retry. Default 25 ms.
    public var base: Duration = .milliseconds(25)
    /// The largest window. Default 1 s.
    public var cap: Duration = .seconds(1)
    /// How much the window grows per retry. Default 2.
    public var multiplier: Double = 2

    /// Creates a backoff. A `multiplier` below 1 counts as 1.
    public init(base: Duration = .milliseconds(25), cap: Duration = .seconds(1), multiplier: Double = 2) {
        self.base = base
        self.cap = cap
        self.multiplier = max(1, multiplier)
    }

    /// The window of retry `retry` (from 1): `min(cap, base × multiplier^(retry−1))`.
    public func window(forRetry retry: Int) -> Duration {
        let base = self.base.secondsValue
        let growth = (0..<max(0, retry - 1)).reduce(1.0) { product, _ in min(product * multiplier, 1e12) }
        return .nanoseconds(Int64(min(base * growth, cap.secondsValue) * 1e9))
    }

    /// The delay before retry `retry`, from 64 random bits.
    public func delay(forRetry retry: Int, random: UInt64) -> Duration {
        let window = self.window(forRetry: retry).secondsValue
        let fraction = Double(random >> 11) * 0x1.0p-53
        return .nanoseconds(Int64(window * fraction * 1e9))
    }
}

/// A lock-free, seedable source of random bits shared by copies of a ``Retry``.
@usableFromInline
final class RandomSource: Sendable {
    private let state: Atomic<UInt64>

    init(seed: UInt64?) {
        var generator = SystemRandomNumberGenerator()
        state = Atomic(seed ?? generator.next())
    }

    /// Used only after a failed attempt (the backoff's jitter), so one shared word is fine.
    func next() -> UInt64 {
        WyRand.mix(state.wrappingAdd(WyRand.increment, ordering: .relaxed).newValue)
    }
}
