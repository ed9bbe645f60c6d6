import Synchronization

/// A FIFO lock for async critical sections: one holder at a time, waiters resumed in order.
///
/// A waiter whose task is cancelled stops waiting at once: ``withLock(isolation:_:)`` throws
/// `CancellationError` without running its body, and the waiters behind it move up.
final class AsyncLock: Sendable {
    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var locked = false
        var waiters: [Waiter] = []
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())

    /// Whether the lock is held now (for tests).
    var isLocked: Bool { state.withLock { $0.locked } }

    /// How many tasks wait for the lock now (for tests).
    var waiterCount: Int { state.withLock { $0.waiters.count } }

    /// Runs `body` holding the lock.
    ///
    /// - Throws: `CancellationError` when the task is cancelled while it waits for the lock (the
    ///   body does not run then), or what `body` throws.
    func withLock<R>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: () async throws -> R
    ) async throws -> R {
        try await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async throws {
        let id = state.withLock { state -> UInt64? in
            if !state.locked {
                state.locked = true
                return nil
            }
            defer { state.nextID &+= 1 }
            return state.nextID
        }
        guard let id else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome = state.withLock { state -> Result<Void, any Error>? in
                    // Cancelled before it could queue: the cancellation handler ran first, under this
                    // same lock, and found nothing to resume.
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if !state.locked {
                        state.locked = true
                        return .success(())
                    }
                    state.waiters.append(Waiter(id: id, continuation: continuation))
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                // Not queued yet: it sees the cancellation when it arrives. (Already holding the
                // lock: nothing to do.)
                state.waiters.firstIndex(where: { $0.id == id }).map { state.waiters.remove(at: $0) }
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    private func release() {
        let next = state.withLock { state -> Waiter? in
            if state.waiters.isEmpty {
                state.locked = false
                return nil
            }
            // Ownership passes straight to the next waiter.
            return state.waiters.removeFirst()
        }
        next?.continuation.resume()
    }
}
