import Synchronization

/// Turns a balancer into a single callable endpoint that retries failed calls on freshly picked endpoints.
///
/// The contract (go-kit's, kept):
/// - every attempt makes a **fresh pick**,
/// - at most ``maxAttempts`` attempts,
/// - all within one overall ``timeout``: when it expires the attempt in flight is cancelled,
/// - a failure throws ``RetryError``, which lists every attempt's instance, error and duration.
///
/// And beyond it:
/// - ``shouldRetry`` decides, after each failed attempt, whether to go on;
/// - **cancellation of the caller** cancels the attempt in flight and is rethrown as
///   `CancellationError`, never retried and never wrapped.
///
/// ```swift
/// let retry = Retry(balancer, maxAttempts: 3, timeout: .seconds(2))
/// let response = try await retry(request)
/// ```
///
/// Endpoints must honour task cancellation for the overall timeout to end a call promptly.
public struct Retry<Base: Balancer, C: Clock<Duration>>: Sendable {
    public typealias Request = Base.Request
    public typealias Response = Base.Response

    /// The balancer each attempt picks from.
    public let balancer: Base
    /// The most attempts a call makes, at least 1.
    public var maxAttempts: Int
    /// The time the whole call may take, all attempts included.
    public var timeout: Duration
    /// Called after each failed attempt (numbered from 1) with its error; returns whether to try again.
    /// It is not consulted once ``maxAttempts`` is reached, nor for cancellation.
    public var shouldRetry: @Sendable (_ attempt: Int, _ error: any Error) -> Bool
    /// The clock that measures the timeout and the attempts' durations.
    public let clock: C

    /// Creates a retrying caller over `balancer`.
    ///
    /// - Parameters:
    ///   - balancer: Picks the endpoint of each attempt.
    ///   - maxAttempts: The most attempts per call (values below 1 count as 1).
    ///   - timeout: The overall time limit per call.
    ///   - clock: Measures time. Default `ContinuousClock()`.
    ///   - shouldRetry: Whether to go on after a failed attempt. Default: always (within `maxAttempts`).
    public init(
        _ balancer: Base,
        maxAttempts: Int,
        timeout: Duration,
        clock: C,
        shouldRetry: @escaping @Sendable (_ attempt: Int, _ error: any Error) -> Bool = { _, _ in true }
    ) {
        self.balancer = balancer
        self.maxAttempts = max(1, maxAttempts)
        self.timeout = timeout
        self.clock = clock
        self.shouldRetry = shouldRetry
    }

    /// Sends `request`, retrying on other endpoints as configured.
    ///
    /// - Throws: ``RetryError`` when every attempt failed, the decision callback said stop, or the
    ///   timeout expired; `CancellationError` when the calling task was cancelled.
    public func callAsFunction(_ request: Request) async throws -> Response {
        try Task.checkCancellation()
        let log = AttemptLog()
        let deadline = clock.now.advanced(by: timeout)

        let outcome: Outcome = try await withThrowingTaskGroup(of: Outcome.self) { group in
            group.addTask {
                do {
                    return .response(try await self.attempts(request, log: log))
                } catch let error as RetryError {
                    return .failed(error.reason)
                }
            }
            group.addTask {
                try await self.clock.sleep(until: deadline, tolerance: nil)
                return .timedOut
            }
            do {
                let first = try await group.next()!
                group.cancelAll()
                if case .timedOut = first {
                    // Let the cancelled attempt finish, so its error is in the log.
                    while let _ = try? await group.next() {}
                }
                return first
            } catch {
                group.cancelAll()
                throw error
            }
        }

        switch outcome {
        case .response(let response):
            return response
        case .failed(let reason):
            throw RetryError(reason: reason, attempts: log.attempts, timeout: timeout)
        case .timedOut:
            // A caller's cancellation can race with the timer; cancellation wins.
            try Task.checkCancellation()
            throw RetryError(reason: .timedOut, attempts: log.attempts, timeout: timeout)
        }
    }

    private enum Outcome: Sendable {
        case response(Response)
        case failed(RetryError.Reason)
        case timedOut
    }

    private func attempts(_ request: Request, log: AttemptLog) async throws -> Response {
        var attempt = 0
        while true {
            attempt += 1
            let start = clock.now
            var instance: Instance?
            do {
                return try await balancer.withEndpoint { endpoint in
                    instance = endpoint.instance
                    return try await endpoint(request)
                }
            } catch {
                log.append(
                    RetryError.Attempt(number: attempt, instance: instance, error: error, duration: start.duration(to: clock.now))
                )
                if Task.isCancelled {
                    // The caller, or the overall timeout, cancelled us: never retry.
                    throw CancellationError()
                }
                if error is CancellationError {
                    throw RetryError(reason: .notRetryable, attempts: [], timeout: timeout)
                }
                if attempt >= maxAttempts {
                    throw RetryError(reason: .attemptsExhausted, attempts: [], timeout: timeout)
                }
                if !shouldRetry(attempt, error) {
                    throw RetryError(reason: .notRetryable, attempts: [], timeout: timeout)
                }
            }
        }
    }
}

extension Retry where C == ContinuousClock {
    /// Creates a retrying caller over `balancer` that keeps time with `ContinuousClock`.
    public init(
        _ balancer: Base,
        maxAttempts: Int,
        timeout: Duration,
        shouldRetry: @escaping @Sendable (_ attempt: Int, _ error: any Error) -> Bool = { _, _ in true }
    ) {
        self.init(balancer, maxAttempts: maxAttempts, timeout: timeout, clock: ContinuousClock(), shouldRetry: shouldRetry)
    }
}

/// The attempts of one call, shared by the attempt loop and the caller.
final class AttemptLog: Sendable {
    private let storage = Mutex<[RetryError.Attempt]>([])

    func append(_ attempt: RetryError.Attempt) {
        storage.withLock { $0.append(attempt) }
    }

    var attempts: [RetryError.Attempt] { storage.withLock { $0 } }
}
