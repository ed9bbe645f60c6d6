import Synchronization

/// Sleeps and deadlines on `ContinuousClock` that release everything the moment they are cancelled.
///
/// `Task.sleep` keeps the timer of a cancelled sleep armed until its deadline would have come, so a
/// process that starts a 30-second deadline per call and cancels it when the call succeeds holds
/// every one of those timers for 30 seconds. Here a sleeper, or a task to cancel at a deadline
/// (``cancel(_:at:)``), is an entry in one table: ending it removes the entry at once. One ticker
/// task, running only while there are entries, wakes every ``tick`` and resumes (or cancels) those
/// whose deadline has passed (so a deadline is met up to one tick late).
@usableFromInline
package final class SharedTimer: Sendable {
    /// The process's timer.
    @usableFromInline
    package static let shared = SharedTimer()

    /// How often the ticker looks for due sleepers.
    static let tick: Duration = .milliseconds(5)

    private struct Sleeper {
        enum Waiter {
            case continuation(CheckedContinuation<Void, any Error>)
            case task(any CancellableTask)
        }
        var deadline: ContinuousClock.Instant
        var waiter: Waiter

        init(deadline: ContinuousClock.Instant, continuation: CheckedContinuation<Void, any Error>) {
            self.deadline = deadline
            self.waiter = .continuation(continuation)
        }

        init(deadline: ContinuousClock.Instant, task: any CancellableTask) {
            self.deadline = deadline
            self.waiter = .task(task)
        }

        /// Ends the wait at its deadline.
        func fire() {
            switch waiter {
            case .continuation(let continuation): continuation.resume()
            case .task(let task): task.cancel()
            }
        }

        /// Ends the wait early because its task was cancelled.
        func cancel() {
            if case .continuation(let continuation) = waiter { continuation.resume(throwing: CancellationError()) }
        }
    }

    private struct State {
        var sleepers: [UInt64: Sleeper] = [:]
        var cancelledBeforeSleeping: Set<UInt64> = []
        var nextID: UInt64 = 0
        var tickerRunning = false
    }

    private let state = Mutex(State())

    /// The number of sleepers and deadlines now (for tests).
    package var sleeperCount: Int { state.withLock { $0.sleepers.count } }

    /// Cancels `task` at `deadline` (at once if it has passed) unless ``discard(_:)`` comes first.
    ///
    /// - Returns: The entry, to pass to ``discard(_:)`` when the task has ended.
    @usableFromInline
    package func cancel(_ task: some CancellableTask, at deadline: ContinuousClock.Instant) -> Deadline {
        let (id, startTicker) = state.withLock { state -> (UInt64?, Bool) in
            if deadline <= .now { return (nil, false) }
            let id = state.nextID
            state.nextID &+= 1
            state.sleepers[id] = Sleeper(deadline: deadline, task: task)
            if state.tickerRunning { return (id, false) }
            state.tickerRunning = true
            return (id, true)
        }
        if startTicker { startTicking() }
        guard let id else {
            task.cancel()
            return Deadline(id: nil)
        }
        return Deadline(id: id)
    }

    /// Removes a deadline set by ``cancel(_:at:)``.
    ///
    /// - Returns: Whether the deadline had passed (its task was cancelled) before this call.
    @usableFromInline
    package func discard(_ deadline: Deadline) -> Bool {
        guard let id = deadline.id else { return true }
        return state.withLock { $0.sleepers.removeValue(forKey: id) } == nil
    }

    /// A deadline set by ``cancel(_:at:)``.
    @usableFromInline
    package struct Deadline: Sendable {
        let id: UInt64?
    }

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
            sleeper?.cancel()
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
                for sleeper in due { sleeper.fire() }
                if idle { return }
            }
        }
    }
}

/// A task ``SharedTimer`` can cancel at a deadline.
@usableFromInline
package protocol CancellableTask: Sendable {
    /// Cancels the task.
    func cancel()
}

extension Task: CancellableTask {}
