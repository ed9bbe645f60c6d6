import ServiceLifecycle
import Synchronization

/// A one-shot signal: a registry client's `shutdown()` fires it, and its `run()` waits for it, for
/// the graceful shutdown of its service group, or for the cancellation of its task, whichever comes
/// first, and ``cuttingShort(_:with:)`` ends the requests that would outlive the client.
package final class ShutdownSignal: Sendable {
    private struct State {
        var fired = false
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
    }

    private let state = Mutex(State())

    package init() {}

    /// Whether ``fire()`` has been called.
    package var isFired: Bool { state.withLock { $0.fired } }

    /// Fires the signal: every waiter returns. Returns whether this call fired it (`false` when it
    /// had already been fired).
    @discardableResult
    package func fire() -> Bool {
        let (first, waiters) = state.withLock { state -> (Bool, [CheckedContinuation<Void, Never>]) in
            guard !state.fired else { return (false, []) }
            state.fired = true
            defer { state.waiters = [:] }
            return (true, Array(state.waiters.values))
        }
        for waiter in waiters { waiter.resume() }
        return first
    }

    /// Returns once the signal has fired or the calling task is cancelled.
    package func wait() async {
        let id = state.withLock { state -> UInt64 in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    // Fired, or cancelled before the continuation was stored (the cancellation
                    // handler then found nothing to resume): return at once.
                    if state.fired || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }

    /// Runs `body` until it finishes or the signal fires, whichever comes first; when the signal
    /// fires first, `body` is cancelled and `closed()` is thrown. How a client's `shutdown()` ends
    /// requests that would otherwise outlive it (a watch stream, a blocking query).
    package func cuttingShort<T: Sendable>(
        _ body: @escaping @Sendable () async throws -> T,
        with closed: () -> any Error
    ) async throws -> T {
        try await withTimeout(
            sleep: {
                await self.wait()
                // Cancelled rather than fired: the caller's cancellation, not a shutdown.
                try Task.checkCancellation()
            },
            onTimeout: closed,
            body
        )
    }

    /// Returns once the signal has fired, the service group shuts down gracefully, or the calling
    /// task is cancelled: what ends a registry client's `run()`.
    package func waitForShutdown() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.wait() }
            group.addTask { try? await gracefulShutdown() }
            await group.next()
            group.cancelAll()
        }
    }
}
