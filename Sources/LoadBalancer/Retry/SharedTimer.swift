import Synchronization

/// Sleeps on `ContinuousClock` that release everything the moment they are cancelled.
///
/// `Task.sleep` keeps the timer of a cancelled sleep armed until its deadline would have come, so a
/// process that starts a 30-second deadline per call and cancels it when the call succeeds holds
/// every one of those timers for 30 seconds. Here a sleeper is an entry in one table: cancelling it
/// removes the entry at once. One ticker task, running only while there are sleepers, wakes every
/// ``tick`` and resumes those whose deadline has passed (so a sleep ends up to one tick late).
package final class SharedTimer: Sendable {
    /// The process's timer.
    package static let shared = SharedTimer()

    /// How often the ticker looks for due sleepers.
    static let tick: Duration = .milliseconds(5)

    private struct Sleeper {
        var deadline: ContinuousClock.Instant
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var sleepers: [UInt64: Sleeper] = [:]
        var cancelledBeforeSleeping: Set<UInt64> = []
        var nextID: UInt64 = 0
        var tickerRunning = false
    }

    private let state = Mutex(State())

    /// The number of sleepers now (for tests).
    package var sleeperCount: Int { state.withLock { $0.sleepers.count } }

    /// Sleeps until `deadline`; throws `CancellationError` at once when the task is cancelled.
    package func sleep(until deadline: ContinuousClock.Instant) async throws {
        let id = state.withLock { state -> UInt64 in
            defer { state.nextID &+= 1 }
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let (outcome, startTicker) = state.withLock { state -> (Result<Void, any Error>?, Bool) in
                    if state.cancelledBeforeSleeping.remove(id) != nil { return (.failure(CancellationError()), false) }
                    if deadline <= .now { return (.success(()), false) }
                    state.sleepers[id] = Sleeper(deadline: deadline, continuation: continuation)
                    if state.tickerRunning { return (nil, false) }
                    state.tickerRunning = true
                    return (nil, true)
                }
                if let outcome { continuation.resume(with: outcome) }
                if startTicker { startTicking() }
            }
        } onCancel: {
            let sleeper = state.withLock { state -> Sleeper? in
                if let sleeper = state.sleepers.removeValue(forKey: id) { return sleeper }
                state.cancelledBeforeSleeping.insert(id)
                return nil
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Runs the ticker until no sleeper is left. Its own sleeps always run to their end, so they
    /// leave no timer behind.
    private func startTicking() {
        Task.detached {
            while true {
                try? await Task.sleep(for: Self.tick)
                let now = ContinuousClock.now
                let (due, idle) = self.state.withLock { state -> ([Sleeper], Bool) in
                    var due: [Sleeper] = []
                    for (id, sleeper) in state.sleepers where sleeper.deadline <= now {
                        due.append(sleeper)
                        state.sleepers[id] = nil
                    }
                    // (A cancelled-before-sleeping mark is consumed by its own sleep, which always
                    // runs its body: it is never dropped here.)
                    if state.sleepers.isEmpty {
                        state.tickerRunning = false
                        return (due, true)
                    }
                    return (due, false)
                }
                for sleeper in due { sleeper.continuation.resume() }
                if idle { return }
            }
        }
    }
}
