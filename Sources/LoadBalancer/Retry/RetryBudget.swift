import Synchronization

/// A budget of retries shared by every call through one balancer, so that retries cannot multiply
/// the load on a service that is down (as Finagle's `RetryBudget` and tower's `TpsBudget` do).
///
/// Every call deposits ``ratio`` of a token; every retry (and hedge) withdraws a whole one; on top
/// of that a reserve of ``minimumPerSecond`` retries per second is always allowed. Deposits and
/// withdrawals count for ``window`` and then expire. With the defaults, retries add at most 20% to
/// the requests, plus 10 per second.
///
/// ```swift
/// let budget = RetryBudget()
/// var retry = Retry(balancer, maxAttempts: 3, timeout: .seconds(2))
/// retry.budget = budget
/// ```
public final class RetryBudget: Sendable {
    /// Tokens deposited per call. Default 0.2.
    public let ratio: Double
    /// Retries per second always allowed. Default 10.
    public let minimumPerSecond: Double
    /// How long deposits and withdrawals count. Default 10 s.
    public let window: Duration

    private static let buckets = 10
    private let now: @Sendable () -> Duration
    private let bucketLength: Duration

    private struct State {
        var deposits = [Int](repeating: 0, count: RetryBudget.buckets)
        var withdrawals = [Int](repeating: 0, count: RetryBudget.buckets)
        var current = 0
        var currentStart: Duration
    }
    private let state: Mutex<State>

    /// Creates a budget.
    ///
    /// - Parameters:
    ///   - ratio: Retries allowed per call, in `0...`. Default 0.2.
    ///   - minimumPerSecond: Retries per second allowed regardless of traffic. Default 10.
    ///   - window: How long deposits and withdrawals count. Default 10 s.
    ///   - now: The time source (monotonic, any origin). Default: `ContinuousClock`.
    public init(
        ratio: Double = 0.2,
        minimumPerSecond: Double = 10,
        window: Duration = .seconds(10),
        now: (@Sendable () -> Duration)? = nil
    ) {
        self.ratio = max(0, ratio)
        self.minimumPerSecond = max(0, minimumPerSecond)
        self.window = max(window, .milliseconds(10))
        if let now {
            self.now = now
        } else {
            let origin = ContinuousClock.now
            self.now = { ContinuousClock.now - origin }
        }
        self.bucketLength = self.window / Self.buckets
        self.state = Mutex(State(currentStart: self.now()))
    }

    /// Counts a call.
    public func deposit() {
        let time = now()
        state.withLock { state in
            rotate(&state, to: time)
            state.deposits[state.current] += 1
        }
    }

    /// Takes one retry's token. Returns `false` (and takes nothing) when the budget is empty.
    public func withdraw() -> Bool {
        let time = now()
        return state.withLock { state in
            rotate(&state, to: time)
            guard balance(state) >= 1 else { return false }
            state.withdrawals[state.current] += 1
            return true
        }
    }

    /// The retries the budget would allow now.
    public var available: Double {
        let time = now()
        return state.withLock { state in
            rotate(&state, to: time)
            return balance(state)
        }
    }

    private func balance(_ state: State) -> Double {
        let reserve = minimumPerSecond * window.secondsValue
        return reserve + ratio * Double(state.deposits.reduce(0, +)) - Double(state.withdrawals.reduce(0, +))
    }

    private func rotate(_ state: inout State, to time: Duration) {
        var steps = 0
        while time - state.currentStart >= bucketLength, steps <= Self.buckets {
            state.current = (state.current + 1) % Self.buckets
            state.deposits[state.current] = 0
            state.withdrawals[state.current] = 0
            state.currentStart += bucketLength
            steps += 1
        }
        if steps > Self.buckets { state.currentStart = time }
    }
}
