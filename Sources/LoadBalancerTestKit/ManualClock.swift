import Synchronization

/// A clock whose time moves only when the test says so.
///
/// Give it to the code under test wherever that code takes a `Clock` (`Retry`'s
/// backoff and deadlines, `EndpointCache.waitUntilReady(timeout:clock:)`, your own
/// timers). Tasks that sleep on it stay asleep until ``advance(by:)`` or ``advance(to:)`` moves
/// time to or past their deadline; a cancelled sleeper wakes at once with `CancellationError`,
/// as `Task.sleep` does. Nothing depends on the wall clock, so a test of a 30-second timeout takes
/// no time and cannot be flaky.
///
/// ```swift
/// let clock = ManualClock()
/// let timer = Task { try await clock.sleep(for: .seconds(30)) }
/// try await clock.waitForSleepers(count: 1)   // the task is asleep
/// clock.advance(by: .seconds(30))             // and now it wakes
/// try await timer.value
/// ```
///
/// Time starts at ``Instant/zero`` and never goes back.
public final class ManualClock: Clock, Sendable {
    /// A point in the clock's time: how far the clock had been advanced when it was read.
    public struct Instant: InstantProtocol, CustomStringConvertible {
        /// The time since the clock was created, in the clock's (manual) time.
        public var offset: Duration

        /// The instant `offset` after the clock's start.
        public init(offset: Duration) {
            self.offset = offset
        }

        /// The clock's start.
        public static var zero: Instant { Instant(offset: .zero) }

        /// The instant `duration` later (earlier, when negative).
        public func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }

        /// The time from this instant to `other`.
        public func duration(to other: Instant) -> Duration { other.offset - offset }

        /// Whether `lhs` comes before `rhs`.
        public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }

        /// The offset, such as `30.0 seconds`.
        public var description: String { "\(offset)" }
    }

    private struct Sleeper {
        var id: Int
        var deadline: Instant
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now = Instant.zero
        var sleepers: [Sleeper] = []
        var nextID = 0
        /// Sleeps that have started but are not yet in `sleepers` (their continuation is being made).
        var starting: Set<Int> = []
        /// Sleeps among `starting` that were cancelled before they could be registered.
        var cancelledWhileStarting: Set<Int> = []
    }

    private let state = Mutex(State())

    /// Creates a clock at ``Instant/zero`` with no sleepers.
    public init() {}

    /// The current time.
    public var now: Instant { state.withLock { $0.now } }

    /// Zero: the clock moves exactly as far as it is told.
    public var minimumResolution: Duration { .zero }

    /// How many tasks are sleeping on the clock now.
    public var sleeperCount: Int { state.withLock { $0.sleepers.count } }

    /// How far in the future each sleeper's deadline is, soonest first.
    public var sleeperDelays: [Duration] {
        state.withLock { state in state.sleepers.map { state.now.duration(to: $0.deadline) }.sorted() }
    }

    /// Sleeps until the clock has been advanced to `deadline` or past it.
    ///
    /// Returns at once when `deadline` has already come. `tolerance` is ignored: sleepers wake
    /// exactly when time reaches their deadline.
    ///
    /// - Throws: `CancellationError` when the task is cancelled, before or during the sleep.
    public func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        let id = state.withLock { state -> Int in
            defer { state.nextID += 1 }
            state.starting.insert(state.nextID)
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let action = state.withLock { state -> Result<Void, any Error>? in
                    state.starting.remove(id)
                    if state.cancelledWhileStarting.remove(id) != nil { return .failure(CancellationError()) }
                    if deadline <= state.now { return .success(()) }
                    state.sleepers.append(Sleeper(id: id, deadline: deadline, continuation: continuation))
                    return nil
                }
                if let action { continuation.resume(with: action) }
            }
        } onCancel: {
            let sleeper = state.withLock { state -> Sleeper? in
                if let index = state.sleepers.firstIndex(where: { $0.id == id }) {
                    return state.sleepers.remove(at: index)
                }
                // Not asleep yet: the sleep throws as soon as it starts. Already woken: nothing to do.
                if state.starting.contains(id) { state.cancelledWhileStarting.insert(id) }
                return nil
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward by `duration` and wakes every sleeper whose deadline has come.
    ///
    /// A negative duration does not move the clock: its time never goes back.
    public func advance(by duration: Duration) {
        wake { now, _ in now.advanced(by: max(duration, .zero)) }
    }

    /// Moves time forward to `instant` and wakes every sleeper whose deadline has come.
    ///
    /// An instant earlier than ``now`` does not move the clock: its time never goes back.
    public func advance(to instant: Instant) {
        wake { now, _ in max(now, instant) }
    }

    /// Moves time forward to the soonest sleeper's deadline and wakes the sleepers due then.
    ///
    /// - Returns: How far time moved, or `nil` (and time stays) when no task is sleeping.
    @discardableResult
    public func advanceToNextDeadline() -> Duration? {
        var moved: Duration?
        wake { now, deadlines in
            guard let next = deadlines.min() else { return now }
            moved = now.duration(to: max(now, next))
            return max(now, next)
        }
        return moved
    }

    /// Waits, in real time, until at least `count` tasks are sleeping on the clock.
    ///
    /// A test calls this before ``advance(by:)`` to know the code under test has reached its
    /// sleep: advancing before the task sleeps would move time under it unnoticed.
    ///
    /// - Parameters:
    ///   - count: How many sleepers to wait for. Default 1.
    ///   - timeout: How long to wait, in real (continuous clock) time. Default 60 seconds (a
    ///     sanitizer build running a whole suite in parallel can keep a task from its first step
    ///     for tens of seconds; a wait that succeeds returns at once), stretched by
    ///     ``TestTimeScale/factor``.
    /// - Throws: ``TestKitError`` with code ``TestKitError/Code/timedOut`` when fewer tasks are
    ///   sleeping after `timeout`; `CancellationError` when the waiting task is cancelled.
    public func waitForSleepers(count: Int = 1, timeout: Duration = .seconds(60)) async throws {
        try await pollUntil("\(count) sleeper(s) on the manual clock", timeout: timeout, seen: { "\(sleeperCount) asleep" }) {
            sleeperCount >= count
        }
    }

    /// Sets the time to `newTime(now, deadlines of the sleepers)` (under the lock, so no sleeper
    /// comes or goes in between) and wakes the sleepers due.
    private func wake(_ newTime: (Instant, [Instant]) -> Instant) {
        let due = state.withLock { state -> [Sleeper] in
            state.now = newTime(state.now, state.sleepers.map(\.deadline))
            let now = state.now
            let due = state.sleepers.filter { $0.deadline <= now }
            state.sleepers.removeAll { $0.deadline <= now }
            return due
        }
        for sleeper in due { sleeper.continuation.resume() }
    }
}
