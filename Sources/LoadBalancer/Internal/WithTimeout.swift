/// Runs `body` against `sleep`: the first to finish wins, and the other is cancelled. When `sleep`
/// ends first, throws `onTimeout()`; an error `body` throws first is rethrown as it is, and so is
/// the `CancellationError` of a cancelled caller.
///
/// The package's one timeout helper (DNS answers, ZooKeeper's session close, `Retry`'s attempt
/// timeout); `sleep` says on which clock, and how, the time runs out.
package func withTimeout<T: Sendable>(
    sleep: @escaping @Sendable () async throws -> Void,
    onTimeout: () -> any Error,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await sleep()
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw onTimeout() }
        return value
    }
}

/// ``withTimeout(sleep:onTimeout:_:)`` after `timeout` on `ContinuousClock`, through
/// ``SharedTimer`` (which lets go of the timer at once when `body` wins).
package func withTimeout<T: Sendable>(
    _ timeout: Duration,
    onTimeout: () -> any Error,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    return try await withTimeout(
        sleep: { try await SharedTimer.shared.sleep(until: deadline) },
        onTimeout: onTimeout,
        body
    )
}
