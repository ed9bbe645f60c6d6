import Synchronization

/// A ``ZooKeeperClient``'s events for one reader that takes them in batches
/// (``ZooKeeperClient/eventQueue()``): each ``next(until:)`` returns every event that came since the
/// last one, in order. A publisher that reads once per batch reads once for a burst of events, not
/// once per event (as an `AsyncStream`, which gives one element at a time, would make it).
///
/// The client appends each event as it handles it, before it handles the frames that follow: when
/// a request's reply has come, the events the server sent before it are already here.
package final class ZooKeeperEventQueue: Sendable {
    private struct State {
        var events: [ZooKeeperEvent] = []
        var finished = false
        /// The reader waiting for events (only while `events` is empty).
        var waiter: CheckedContinuation<[ZooKeeperEvent]?, Never>?
        /// A deadline passed while no reader waited: the next wait returns at once.
        var woken = false

        /// The queued events, leaving none (and no pending wake-up).
        mutating func takeAll() -> [ZooKeeperEvent] {
            woken = false
            defer { events = [] }
            return events
        }
    }

    private let state = Mutex(State())
    /// The client's key for this subscription.
    let id: Int

    init(id: Int) { self.id = id }

    /// Adds an event (the client's side).
    func append(_ event: ZooKeeperEvent) {
        let waiter = state.withLock { state -> CheckedContinuation<[ZooKeeperEvent]?, Never>? in
            guard !state.finished else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.events.append(event)
            return nil
        }
        // A waiter waits only while nothing is queued: this event is the whole batch.
        waiter?.resume(returning: [event])
    }

    /// Ends the queue (the client's side): what is queued is still taken, then ``next(until:)``
    /// returns `nil`.
    func finish() {
        let waiter = state.withLock { state -> CheckedContinuation<[ZooKeeperEvent]?, Never>? in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }

    /// Every event queued since the last take, in order, without waiting (none: empty).
    package func available() -> [ZooKeeperEvent] {
        state.withLock { $0.events.isEmpty ? [] : $0.takeAll() }
    }

    /// Every event queued since the last take, in order, waiting for one when none is queued;
    /// `nil` once the client has ended the queue and all was taken, or when the task is cancelled.
    /// With a `deadline`, returns an empty batch when it passes first (or at once, when it has
    /// passed already).
    package func next(until deadline: ContinuousClock.Instant? = nil) async -> [ZooKeeperEvent]? {
        guard let deadline else { return await wait() }
        if deadline <= .now { return state.withLock { $0.finished && $0.events.isEmpty ? nil : $0.takeAll() } }
        return await withTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    try await Task.sleep(until: deadline, clock: .continuous)
                    self.wake()
                } catch {
                    // Cancelled: the batch came first.
                }
            }
            let events = await wait()
            group.cancelAll()
            return events
        }
    }

    /// Every queued event, or the next one.
    private func wait() async -> [ZooKeeperEvent]? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> [ZooKeeperEvent]?? in
                    if !state.events.isEmpty || state.woken { return .some(state.takeAll()) }
                    // Cancelled before waiting: the handler ran first and found no waiter.
                    if state.finished || Task.isCancelled { return .some(nil) }
                    state.waiter = continuation
                    return .none
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<[ZooKeeperEvent]?, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: nil)
        }
    }

    /// Ends a wait with an empty batch (a deadline passed); with no one waiting, the next wait
    /// returns at once.
    private func wake() {
        let waiter = state.withLock { state -> CheckedContinuation<[ZooKeeperEvent]?, Never>? in
            guard let waiter = state.waiter else {
                state.woken = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume(returning: [])
    }
}
