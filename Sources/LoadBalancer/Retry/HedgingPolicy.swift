import Synchronization

/// Hedged requests: when an attempt has not answered after a delay, a second one goes to another
/// instance, and the first success wins (the others are cancelled). Hedges count as attempts and
/// draw on the ``RetryBudget``.
public struct HedgingPolicy: Sendable {
    /// When to hedge.
    public enum Delay: Sendable, Hashable {
        /// After a fixed time.
        case fixed(Duration)
        /// After the given percentile (in `0...100`) of the latencies of recent successful attempts,
        /// at least `minimum`; `initial` until enough latencies are known.
        case percentile(Double, minimum: Duration = .milliseconds(1), initial: Duration = .milliseconds(100))
    }

    /// When to hedge.
    public var delay: Delay
    /// The most attempts in flight at once (the first one included). Default 2.
    public var maxInFlight: Int

    let latencies = LatencyWindow()

    /// Creates a policy. A `maxInFlight` below 1 counts as 1 (no hedging).
    public init(delay: Delay, maxInFlight: Int = 2) {
        self.delay = delay
        self.maxInFlight = max(1, maxInFlight)
    }

    /// The delay to use now.
    public var currentDelay: Duration {
        switch delay {
        case .fixed(let duration):
            return duration
        case .percentile(let percentile, let minimum, let initial):
            guard let value = latencies.percentile(percentile) else { return initial }
            return max(value, minimum)
        }
    }
}

/// The latencies of the last 1,000 successful attempts, for percentile hedging delays.
final class LatencyWindow: Sendable {
    private struct State {
        var samples: [Duration] = []
        var next = 0
        var sorted: [Duration] = []
        var sinceSort = 0
    }
    private let state = Mutex(State())
    private static let capacity = 1_000

    func record(_ latency: Duration) {
        state.withLock { state in
            if state.samples.count < Self.capacity {
                state.samples.append(latency)
            } else {
                state.samples[state.next] = latency
                state.next = (state.next + 1) % Self.capacity
            }
            state.sinceSort += 1
        }
    }

    /// The percentile, once at least 20 samples are known; re-sorted every 50 samples.
    func percentile(_ percentile: Double) -> Duration? {
        state.withLock { state in
            guard state.samples.count >= 20 else { return nil }
            if state.sorted.isEmpty || state.sinceSort >= 50 {
                state.sorted = state.samples.sorted()
                state.sinceSort = 0
            }
            let rank = Int((min(max(percentile, 0), 100) / 100 * Double(state.sorted.count)).rounded(.up)) - 1
            return state.sorted[min(max(rank, 0), state.sorted.count - 1)]
        }
    }
}
