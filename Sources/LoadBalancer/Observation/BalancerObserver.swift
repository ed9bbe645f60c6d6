import Synchronization

/// A balancer whose state can be read: every built-in balancer.
///
/// ```swift
/// let observer = balancer.observe(explainingEvery: 100)
/// let state = observer.state()          // every instance now, and its share of the picks since
/// let why = observer.explanations()     // one pick in 100, explained
/// ```
public protocol ObservableBalancer<Request, Response>: Balancer {
    /// Starts observing the balancer: from now until the observer is stopped (or released), picks
    /// are counted per instance, and with `explainingEvery` one pick in that many is explained.
    ///
    /// While nobody observes, picks count nothing: the pick path tests one flag of the calling
    /// thread's own shard. While observed, each thread counts in its own shard (summed when read),
    /// so that counting writes no cache line that all threads share.
    ///
    /// - Parameter explainingEvery: Explain one pick in this many (per shard of the balancer's
    ///   state, so about one in this many overall); `nil` or 0: explain none. Explanations are kept
    ///   for ``BalancerObserver/explanations()`` and, when the cache has a tracer, emitted as span
    ///   events (``PickExplanation``).
    func observe(explainingEvery: Int?) -> BalancerObserver
}

extension ObservableBalancer {
    /// Starts observing the balancer without explaining picks: ``ObservableBalancer/observe(explainingEvery:)``
    /// with `nil`.
    public func observe() -> BalancerObserver { observe(explainingEvery: nil) }
}

/// Reads a balancer's state (``BalancerState``) and the explanations of sampled picks
/// (``PickExplanation``), made by ``ObservableBalancer/observe(explainingEvery:)``.
///
/// Each ``state()`` counts the picks since the previous one (or since the observer started), so a
/// reader that calls it once per interval gets each instance's share of that interval. Observing
/// stops with ``stop()`` or when the observer is released.
public final class BalancerObserver: Sendable {
    private let readState: @Sendable (_ picks: [UInt64], _ interval: Duration) -> BalancerState
    private let readTotals: @Sendable () -> [UInt64]
    private let readExplanations: @Sendable () -> [PickExplanation]
    private let detach: @Sendable (ObjectIdentifier) -> Void
    private let previous: Mutex<(totals: [UInt64], time: ContinuousClock.Instant, stopped: Bool)>

    init<Request, Response, Strategy>(_ core: BalancerCore<Request, Response, Strategy>, explainEvery: Int) {
        readState = { picks, interval in core.state(picks: picks, interval: interval) }
        readTotals = { core.pickTotals() }
        readExplanations = { core.takeExplanations() }
        detach = { core.detachObserver($0) }
        previous = Mutex(([], .now, false))
        core.attachObserver(ObjectIdentifier(self), explainEvery: explainEvery)
        // Picks counted before this observer came (by another observer) are not its interval's.
        let totals = core.pickTotals()
        previous.withLock { $0 = (totals, .now, false) }
    }

    deinit { stop() }

    /// The balancer's state now, with the picks since the previous call (or since observing began).
    public func state() -> BalancerState {
        let totals = readTotals()
        let now = ContinuousClock.now
        let (picks, interval) = previous.withLock { previous -> ([UInt64], Duration) in
            let picks = totals.enumerated().map { slot, total in
                // A counter only grows; one that did not (a slot that is new here) counts from 0.
                let before = slot < previous.totals.count ? previous.totals[slot] : 0
                return total >= before ? total - before : total
            }
            let interval = now - previous.time
            previous.totals = totals
            previous.time = now
            return (picks, interval)
        }
        return readState(picks, interval)
    }

    /// The explanations of the picks sampled since the previous call, oldest first (at most the
    /// last 1,024). Empty when the observer explains no picks.
    public func explanations() -> [PickExplanation] { readExplanations() }

    /// Stops observing: once no observer of the balancer is left, picks count nothing. Idempotent.
    public func stop() {
        let first = previous.withLock { previous -> Bool in
            defer { previous.stopped = true }
            return !previous.stopped
        }
        if first { detach(ObjectIdentifier(self)) }
    }
}

extension CoreBalancer {
    /// Starts observing the balancer (see ``ObservableBalancer/observe(explainingEvery:)``).
    public func observe(explainingEvery: Int?) -> BalancerObserver {
        BalancerObserver(core, explainEvery: explainingEvery ?? 0)
    }
}

extension RoundRobinBalancer: ObservableBalancer {}
extension RandomBalancer: ObservableBalancer {}
extension WeightedRoundRobinBalancer: ObservableBalancer {}
extension WeightedRandomBalancer: ObservableBalancer {}
extension PriorityBalancer: ObservableBalancer {}
extension P2CBalancer: ObservableBalancer {}
extension ConsistentHashBalancer: ObservableBalancer {}

extension AnyBalancer {
    /// Starts observing the wrapped balancer, if it is observable (every built-in balancer is);
    /// `nil` otherwise. See ``ObservableBalancer/observe(explainingEvery:)``.
    public func observe(explainingEvery: Int? = nil) -> BalancerObserver? {
        (base as? any ObservableBalancer<Request, Response>)?.observe(explainingEvery: explainingEvery)
    }
}
