import Tracing

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
///   `CancellationError`, never retried and never wrapped;
/// - **host avoidance**: a retry does not go to an instance already tried for this call while
///   others are available (``avoidsTriedInstances``);
/// - **backoff**: jittered exponential delays between retries (``backoff``), on ``clock``;
/// - **a retry budget** shared by all calls (``budget``): when it is empty the call fails fast
///   with ``RetryError/Reason/budgetExhausted`` instead of adding load to a failing service;
/// - **a per-attempt timeout** (``attemptTimeout``) inside the overall one;
/// - **hedging** (``hedging``): a second attempt to another instance when the first is slow; the
///   first success wins and the other is cancelled.
///
/// ```swift
/// let retry = Retry(balancer, maxAttempts: 3, timeout: .seconds(2))
/// let response = try await retry(request)
/// ```
///
/// ## How calls run
///
/// An attempt on an endpoint that enforces deadlines itself (``Endpoint/enforcesDeadline``, as the
/// endpoints of `LoadBalancerHTTP` do) runs inline, in the caller's task, with its deadline in
/// ``CallDeadline/current``: a call that succeeds at once costs little more than
/// ``Balancer/call(_:)``, with no child task and no timer. Any other attempt runs in a task of its
/// own, started on the caller's thread (`Task.immediate` where the OS has it), with one entry in a
/// process-wide deadline table that cancels the task when the time is up and is dropped the moment
/// the attempt ends; the call waits for the attempt to end. Hedging, tracing and clocks other than
/// `ContinuousClock` take the supervised path: a task group per call, with its deadline, hedge and
/// backoff timers as child tasks.
///
/// Endpoints must honour task cancellation (or the deadline they are given) for the overall
/// timeout to end a call promptly.
public struct Retry<Base: Balancer, C: Clock<Duration>>: Sendable {
    /// What a call sends: the balancer's request type.
    public typealias Request = Base.Request
    /// What a call returns: the balancer's response type.
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
    /// The clock that measures the timeouts, the backoff delays and the attempts' durations.
    public let clock: C
    /// Whether retries avoid instances already tried for the same call while others are available.
    /// Default `true`.
    public var avoidsTriedInstances = true
    /// Delays between retries; `nil` retries at once. Default `nil`.
    public var backoff: Backoff?
    /// The budget retries and hedges draw on; `nil` means no limit but ``maxAttempts``. Default `nil`.
    public var budget: RetryBudget?
    /// The time one attempt may take; `nil` means only the overall ``timeout`` applies. Default `nil`.
    public var attemptTimeout: Duration?
    /// Hedged requests; `nil` turns hedging off. Default `nil`.
    public var hedging: HedgingPolicy?
    /// Decides after each failed attempt (numbered from 1) whether to go on, stop with the usual
    /// ``RetryError``, or stop with an error of its own; when set it is used instead of
    /// ``shouldRetry``. It is not consulted once ``maxAttempts`` is reached, nor for cancellation.
    /// Default `nil`.
    public var decide: (@Sendable (_ attempt: Int, _ error: any Error) -> RetryDecision)?
    /// Randomness of the backoff jitter (seedable through ``init(_:maxAttempts:timeout:clock:seed:shouldRetry:)``).
    @usableFromInline let random: RandomSource

    /// Creates a retrying caller over `balancer`.
    ///
    /// - Parameters:
    ///   - balancer: Picks the endpoint of each attempt.
    ///   - maxAttempts: The most attempts per call (values below 1 count as 1).
    ///   - timeout: The overall time limit per call.
    ///   - clock: Measures time. Default `ContinuousClock()`.
    ///   - shouldRetry: Whether to go on after a failed attempt. Default: always (within `maxAttempts`).
    ///   - seed: Makes the backoff jitter reproducible. Default: random.
    public init(
        _ balancer: Base,
        maxAttempts: Int,
        timeout: Duration,
        clock: C,
        seed: UInt64? = nil,
        shouldRetry: @escaping @Sendable (_ attempt: Int, _ error: any Error) -> Bool = { _, _ in true }
    ) {
        self.balancer = balancer
        self.maxAttempts = max(1, maxAttempts)
        self.timeout = timeout
        self.clock = clock
        self.shouldRetry = shouldRetry
        self.random = RandomSource(seed: seed)
    }

    /// Sends `request`, retrying on other endpoints as configured.
    ///
    /// - Throws: ``RetryError`` when every attempt failed, the decision callback said stop, or the
    ///   timeout expired; `CancellationError` when the calling task was cancelled.
    @inlinable
    public func callAsFunction(_ request: Request) async throws -> Response {
        try await call(request, key: nil) { () throws(LoadBalancerError) in try balancer.lease() }
    }

    /// Sends `request` for `key`: the first attempt goes to `key`'s instance, and retries and hedges
    /// go down `key`'s order of instances (its next instance, then the one after), each instance at
    /// most once while others remain, so a key's calls stay on a few instances of the set.
    ///
    /// ```swift
    /// let retry = Retry(ConsistentHashBalancer(cache), maxAttempts: 3, timeout: .seconds(2))
    /// let profile = try await retry(request, key: userID)
    /// ```
    ///
    /// - Throws: ``RetryError`` when every attempt failed, the decision callback said stop, or the
    ///   timeout expired; `CancellationError` when the calling task was cancelled.
    @inlinable
    public func callAsFunction(_ request: Request, key: String) async throws -> Response where Base: KeyedBalancer {
        try await call(request, key: key) { () throws(LoadBalancerError) in try balancer.lease(forKey: key) }
    }

    /// The whole call: its first attempt on `firstLease()`, without a task group (inline when the
    /// endpoint enforces deadlines, otherwise in one task cancelled at the deadline), its retries
    /// (down `key`'s order for a keyed call) after; the supervised path for hedging, tracing or
    /// another clock.
    @inlinable @inline(__always)
    func call(
        _ request: Request,
        key: String?,
        _ firstLease: () throws(LoadBalancerError) -> EndpointLease<Request, Response>
    ) async throws -> Response {
        try Task.checkCancellation()
        guard hedging == nil, C.self == ContinuousClock.self, balancer.cache?.hasTracer != true else {
            return try await supervisedCall(request, key: key)
        }
        let start = ContinuousClock.now
        let deadline = start.advanced(by: timeout)
        budget?.deposit()
        let lease: EndpointLease<Request, Response>
        do {
            lease = try firstLease()
        } catch {
            let failure = RetryError.Attempt(number: 1, instance: nil, error: error, duration: .zero)
            return try await inlineRetries(request, deadline: deadline, failed: failure, error: error, tried: [], key: key)
        }
        let attemptDeadline = attemptTimeout.map { min(deadline, start.advanced(by: $0)) } ?? deadline
        do {
            return try await attempt(request, on: lease, until: attemptDeadline, deadline: deadline)
        } catch {
            let failure = attemptFailure(1, lease, error, start: start, attemptDeadline: attemptDeadline, deadline: deadline)
            return try await inlineRetries(request, deadline: deadline, failed: failure, error: error, tried: [lease.endpoint.id], key: key)
        }
    }

    /// The whole call on the supervised path (hedging, tracing, or a clock other than `ContinuousClock`).
    @usableFromInline
    func supervisedCall(_ request: Request, key: String? = nil) async throws -> Response {
        let deadline = clock.now.advanced(by: timeout)
        guard let tracer = balancer.cache?.instruments?.tracer else {
            return try await attempts(request, deadline: deadline, span: nil, log: [], started: 0, tried: [], key: key)
        }
        return try await traced(tracer, request, deadline: deadline, key: key)
    }

    /// One attempt of a call without a task group, ended at `attemptDeadline` (within the call's
    /// `deadline`): an endpoint that
    /// enforces deadlines runs inline, in the caller's task, with the deadline in
    /// ``CallDeadline/current``; any other runs in a task of its own that is cancelled at the
    /// deadline (or when the caller is), and the call waits for it to end.
    ///
    /// - Throws: What the endpoint threw; ``AttemptTimeoutError`` (with no cause) when a task of
    ///   its own was cancelled at an attempt deadline before the overall one.
    @inlinable
    func attempt(
        _ request: Request,
        on lease: EndpointLease<Request, Response>,
        until attemptDeadline: ContinuousClock.Instant,
        deadline: ContinuousClock.Instant
    ) async throws -> Response {
        guard lease.endpoint.enforcesDeadline else {
            return try await guardedAttempt(request, on: lease, until: attemptDeadline, deadline: deadline)
        }
        return try await CallDeadline.$current.withValue(attemptDeadline) {
            try await balancer.call(lease, request)
        }
    }

    /// An attempt on an endpoint that does not enforce deadlines: in a task cancelled at
    /// `attemptDeadline` by ``SharedTimer`` (which drops the deadline as soon as the task ends). The
    /// task starts on the caller's thread, so an endpoint that answers without suspending costs no
    /// thread hop.
    @inlinable
    func guardedAttempt(
        _ request: Request,
        on lease: EndpointLease<Request, Response>,
        until attemptDeadline: ContinuousClock.Instant,
        deadline: ContinuousClock.Instant
    ) async throws -> Response {
        let balancer = self.balancer
        let task: Task<Response, any Error>
        if #available(macOS 26.0, iOS 26.0, tvOS 26.0, watchOS 26.0, visionOS 26.0, *) {
            task = Task.immediate {
                try await CallDeadline.$current.withValue(attemptDeadline) {
                    try await balancer.call(lease, request)
                }
            }
        } else {
            task = Task {
                try await CallDeadline.$current.withValue(attemptDeadline) {
                    try await balancer.call(lease, request)
                }
            }
        }
        let timer = SharedTimer.shared.cancel(task, at: attemptDeadline)
        do {
            let response = try await withTaskCancellationHandler {
                try await task.value
            } onCancel: {
                task.cancel()
            }
            _ = SharedTimer.shared.discard(timer)
            return response
        } catch {
            let timedOut = SharedTimer.shared.discard(timer)
            if timedOut, let attemptTimeout, attemptDeadline < deadline, error is CancellationError, !Task.isCancelled {
                // Cancelled at the attempt's own deadline, not by the caller nor at the overall one.
                throw AttemptTimeoutError(timeout: attemptTimeout, cause: nil)
            }
            throw error
        }
    }

    /// The record of failed inline attempt `number`: the endpoint's error, or an
    /// ``AttemptTimeoutError`` when it ended at the attempt's own deadline.
    @usableFromInline
    func attemptFailure(
        _ number: Int,
        _ lease: EndpointLease<Request, Response>,
        _ error: any Error,
        start: ContinuousClock.Instant,
        attemptDeadline: ContinuousClock.Instant,
        deadline: ContinuousClock.Instant
    ) -> RetryError.Attempt {
        let now = ContinuousClock.now
        let timedOut =
            now >= attemptDeadline && now < deadline && !(error is CancellationError && Task.isCancelled)
            && !(error is AttemptTimeoutError)
        return RetryError.Attempt(
            number: number,
            instance: lease.endpoint.instance,
            error: timedOut ? AttemptTimeoutError(timeout: attemptTimeout ?? timeout, cause: error) : error,
            duration: start.duration(to: now)
        )
    }

    /// The attempts of a call without a task group after attempt `failed` failed with `error`.
    @usableFromInline
    func inlineRetries(
        _ request: Request,
        deadline: ContinuousClock.Instant,
        failed: RetryError.Attempt,
        error firstError: any Error,
        tried initiallyTried: Set<String>,
        key: String? = nil
    ) async throws -> Response {
        var log = [failed]
        var tried = initiallyTried
        var number = failed.number
        if Task.isCancelled { throw CancellationError() }
        if ContinuousClock.now >= deadline { throw RetryError(reason: .timedOut, attempts: log, timeout: timeout) }
        try await afterFailure(number, firstError, log: log, deadline: deadline)
        while true {
            number += 1
            balancer.cache?.instruments?.retried()
            let lease: EndpointLease<Request, Response>
            do {
                lease = try self.lease(avoiding: tried, key: key)
            } catch {
                log.append(RetryError.Attempt(number: number, instance: nil, error: error, duration: .zero))
                try await afterFailure(number, error, log: log, deadline: deadline)
                continue
            }
            tried.insert(lease.endpoint.id)
            let attemptStart = ContinuousClock.now
            let attemptDeadline = attemptTimeout.map { min(deadline, attemptStart.advanced(by: $0)) } ?? deadline
            do {
                return try await attempt(request, on: lease, until: attemptDeadline, deadline: deadline)
            } catch {
                log.append(attemptFailure(number, lease, error, start: attemptStart, attemptDeadline: attemptDeadline, deadline: deadline))
                if Task.isCancelled { throw CancellationError() }
                if ContinuousClock.now >= deadline { throw RetryError(reason: .timedOut, attempts: log, timeout: timeout) }
                try await afterFailure(number, error, log: log, deadline: deadline)
            }
        }
    }

    /// After failed attempt `number` of an inline call: throws if the call must stop, waits out
    /// the backoff (within the deadline) otherwise.
    @usableFromInline
    func afterFailure(
        _ number: Int,
        _ error: any Error,
        log: [RetryError.Attempt],
        deadline: ContinuousClock.Instant
    ) async throws {
        if error is CancellationError { throw RetryError(reason: .notRetryable, attempts: log, timeout: timeout) }
        if number >= maxAttempts { throw RetryError(reason: .attemptsExhausted, attempts: log, timeout: timeout) }
        if let stop = stopError(number, error, log: log) { throw stop }
        if let budget, !budget.withdraw() {
            balancer.cache?.instruments?.refusedByBudget()
            throw RetryError(reason: .budgetExhausted, attempts: log, timeout: timeout)
        }
        if let backoff {
            let delay = backoff.delay(forRetry: number, random: random.next())
            let wake = ContinuousClock.now.advanced(by: delay)
            if wake >= deadline {
                // The backoff would outlast the call: wait for the deadline and time out.
                try await ContinuousClock().sleep(until: deadline, tolerance: nil)
                throw RetryError(reason: .timedOut, attempts: log, timeout: timeout)
            }
            try await ContinuousClock().sleep(until: wake, tolerance: nil)
        } else if ContinuousClock.now >= deadline {
            throw RetryError(reason: .timedOut, attempts: log, timeout: timeout)
        }
    }

    /// The error to stop with after failed attempt `number`, or `nil` to go on.
    private func stopError(_ number: Int, _ error: any Error, log: [RetryError.Attempt]) -> (any Error)? {
        if let decide {
            switch decide(number, error).action {
            case .retry: return nil
            case .stop: return RetryError(reason: .notRetryable, attempts: log, timeout: timeout)
            case .fail(let replacement): return replacement
            }
        }
        return shouldRetry(number, error) ? nil : RetryError(reason: .notRetryable, attempts: log, timeout: timeout)
    }

    /// The call inside a `loadbalancer.retry` span, whose children are the attempts' spans.
    private func traced<T: Tracer>(_ tracer: T, _ request: Request, deadline: C.Instant, key: String?) async throws -> Response {
        try await tracer.withSpan("loadbalancer.retry", ofKind: .client) { span in
            span.attributes["loadbalancer.service"] = balancer.cache?.instruments?.service
            span.attributes["loadbalancer.balancer"] = balancer.name
            return try await attempts(request, deadline: deadline, span: span, log: [], started: 0, tried: [], key: key)
        }
    }

    /// What the attempt loop waits for.
    private enum Event: Sendable {
        case finished(number: Int, instance: Instance?, result: Result<Response, any Error>, duration: Duration)
        case hedgeDue(number: Int)
        case backoffDone
        case deadline
    }

    /// The attempts of one call: an event loop over attempt completions and the deadline, hedge
    /// and backoff timers, in one task group so that cancelling it cancels everything in flight.
    private func attempts(
        _ request: Request,
        deadline: C.Instant,
        span: (any Span)?,
        log initialLog: [RetryError.Attempt],
        started initiallyStarted: Int,
        tried initiallyTried: Set<String>,
        key: String?
    ) async throws -> Response {
        budget?.deposit()
        let instruments = balancer.cache?.instruments
        var log = initialLog
        func failure(_ reason: RetryError.Reason) -> RetryError {
            RetryError(reason: reason, attempts: log, timeout: timeout)
        }
        return try await withThrowingTaskGroup(of: Event.self) { group in
            var tried = initiallyTried
            var started = initiallyStarted
            var inFlight = 0
            group.addTask {
                try await self.sleep(until: deadline)
                return .deadline
            }

            func launch(hedge: Bool = false) {
                started += 1
                inFlight += 1
                let number = started
                span?.attributes["loadbalancer.attempts"] = number
                if hedge {
                    instruments?.hedged()
                    span?.addEvent("loadbalancer.hedge")
                } else if number > 1 {
                    instruments?.retried()
                    span?.addEvent("loadbalancer.retry")
                }
                let start = clock.now
                let picked: Result<EndpointLease<Request, Response>, LoadBalancerError>
                do {
                    picked = .success(try lease(avoiding: tried, key: key))
                } catch {
                    picked = .failure(error)
                }
                if case .success(let resolved) = picked { tried.insert(resolved.endpoint.id) }
                group.addTask {
                    switch picked {
                    case .failure(let error):
                        return .finished(number: number, instance: nil, result: .failure(error), duration: .zero)
                    case .success(let resolved):
                        do {
                            let response = try await RetryAttempt.$current.withValue((number, hedge)) {
                                try await self.attempt(request, on: resolved)
                            }
                            return .finished(
                                number: number, instance: resolved.endpoint.instance, result: .success(response),
                                duration: start.duration(to: self.clock.now)
                            )
                        } catch {
                            return .finished(
                                number: number, instance: resolved.endpoint.instance, result: .failure(error),
                                duration: start.duration(to: self.clock.now)
                            )
                        }
                    }
                }
                if let hedging, inFlight < hedging.maxInFlight, started < maxAttempts {
                    let delay = hedging.currentDelay
                    group.addTask {
                        try await self.sleep(until: self.clock.now.advanced(by: delay))
                        return .hedgeDue(number: number)
                    }
                }
            }

            launch()
            while let event = try await group.next() {
                switch event {
                case .finished(let number, let instance, let result, let duration):
                    inFlight -= 1
                    switch result {
                    case .success(let response):
                        hedging?.latencies.record(duration)
                        group.cancelAll()
                        return response
                    case .failure(let error):
                        log.append(RetryError.Attempt(number: number, instance: instance, error: error, duration: duration))
                        if Task.isCancelled {
                            // The caller, or the overall timeout, cancelled us: never retry.
                            throw CancellationError()
                        }
                        // Another attempt (a hedge) is still in flight: it may yet succeed.
                        if inFlight > 0 { continue }
                        if error is CancellationError { throw failure(.notRetryable) }
                        if started >= maxAttempts { throw failure(.attemptsExhausted) }
                        if let stop = stopError(number, error, log: log) { throw stop }
                        if let budget, !budget.withdraw() {
                            instruments?.refusedByBudget()
                            throw failure(.budgetExhausted)
                        }
                        if let backoff {
                            let delay = backoff.delay(forRetry: started, random: random.next())
                            group.addTask {
                                try await self.clock.sleep(for: delay)
                                return .backoffDone
                            }
                        } else {
                            launch()
                        }
                    }
                case .hedgeDue(let number):
                    // Hedge only the latest attempt, only while it is still running, within the limits.
                    guard number == started, inFlight > 0, inFlight < (hedging?.maxInFlight ?? 1), started < maxAttempts else {
                        continue
                    }
                    if let budget, !budget.withdraw() {
                        instruments?.refusedByBudget()
                        continue
                    }
                    launch(hedge: true)
                case .backoffDone:
                    launch()
                case .deadline:
                    // Cancel what is in flight and let it finish, so its error is in the log.
                    group.cancelAll()
                    while !group.isEmpty {
                        // Cancelled timers throw; finished attempts are logged.
                        guard let event = try? await group.next() else { continue }
                        if case .finished(let number, let instance, .failure(let error), let duration) = event {
                            log.append(RetryError.Attempt(number: number, instance: instance, error: error, duration: duration))
                        }
                    }
                    // A caller's cancellation can race with the deadline; cancellation wins.
                    try Task.checkCancellation()
                    throw failure(.timedOut)
                }
            }
            // Unreachable: the deadline timer ends the loop at the latest.
            throw failure(.timedOut)
        }
    }

    /// One attempt on a picked endpoint, reported to the balancer, within ``attemptTimeout``.
    private func attempt(_ request: Request, on resolved: EndpointLease<Request, Response>) async throws -> Response {
        guard let attemptTimeout else {
            return try await balancer.call(resolved, request)
        }
        let deadline = clock.now.advanced(by: attemptTimeout)
        return try await withTimeout(
            sleep: { try await self.sleep(until: deadline) },
            onTimeout: { AttemptTimeoutError(timeout: attemptTimeout, cause: nil) },
            { try await self.balancer.call(resolved, request) }
        )
    }

    /// Sleeps until `instant` for a timer that is usually cancelled (a deadline, a hedge delay, an
    /// attempt timeout): on `ContinuousClock` through ``SharedTimer``, which releases a cancelled
    /// sleep at once; on other clocks with the clock's own sleep.
    private func sleep(until instant: C.Instant) async throws {
        if let continuous = instant as? ContinuousClock.Instant {
            try await SharedTimer.shared.sleep(until: continuous)
        } else {
            try await clock.sleep(until: instant, tolerance: nil)
        }
    }

    /// A lease that avoids the instances in `tried` while the set has others; for a keyed call, the
    /// first untried instance of the key's order (the key's own when all are tried).
    @usableFromInline
    func lease(avoiding tried: Set<String>, key: String?) throws(LoadBalancerError) -> EndpointLease<Request, Response> {
        if let key, let keyed = balancer as? any KeyedBalancer<Request, Response> {
            if avoidsTriedInstances, let untried = try keyed.lease(forKey: key, avoiding: tried) { return untried }
            return try keyed.lease(forKey: key)
        }
        let first = try balancer.lease()
        guard avoidsTriedInstances, !tried.isEmpty, tried.contains(first.endpoint.id) else { return first }
        for _ in 0..<8 {
            let next = try balancer.lease()
            if !tried.contains(next.endpoint.id) {
                balancer.finish(first, outcome: .cancelled, latency: .zero)
                return next
            }
            balancer.finish(next, outcome: .cancelled, latency: .zero)
        }
        // The balancer keeps choosing tried instances (a hashing or priority balancer may): take the
        // first untried one of the set, if any.
        if let untried = try balancer.lease(avoiding: tried) {
            balancer.finish(first, outcome: .cancelled, latency: .zero)
            return untried
        }
        return first
    }
}

/// What a ``Retry/decide`` callback answers after a failed attempt.
public struct RetryDecision: Sendable {
    enum Action: Sendable {
        case retry
        case stop
        case fail(any Error)
    }
    let action: Action

    /// Make another attempt (within the limits).
    public static let retry = RetryDecision(action: .retry)
    /// Stop, throwing ``RetryError`` with reason ``RetryError/Reason/notRetryable``.
    public static let stop = RetryDecision(action: .stop)
    /// Stop, throwing `error` instead of ``RetryError`` (go-kit's callback that replaces the error).
    public static func fail(_ error: any Error) -> RetryDecision { RetryDecision(action: .fail(error)) }
}

/// An attempt took longer than ``Retry/attemptTimeout``; it was cancelled, or its endpoint ended it
/// at its deadline (and it may be retried).
public struct AttemptTimeoutError: Error, Sendable, CustomStringConvertible {
    /// What kind of timeout it is. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable { case cancelled, endedAtDeadline }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// The attempt was still running at its deadline and was cancelled.
        public static let cancelled = Code(.cancelled)
        /// The endpoint ended the attempt itself at its deadline (the cause is what it threw).
        public static let endedAtDeadline = Code(.endedAtDeadline)

        /// The code's name, such as `cancelled`.
        public var description: String { String(describing: wrapped) }
    }

    /// What kind of timeout it is: ``Code/endedAtDeadline`` when there is a ``cause``.
    public var code: Code
    /// The limit.
    public var timeout: Duration
    /// The error the endpoint threw at its deadline, if it ended the attempt itself.
    public var cause: (any Error)?

    /// Creates an error; the code follows from whether there is a cause.
    public init(timeout: Duration, cause: (any Error)?) {
        self.code = cause == nil ? .cancelled : .endedAtDeadline
        self.timeout = timeout
        self.cause = cause
    }

    /// Says the attempt timed out, and after how long.
    public var message: String { "attempt timed out after \(timeout.formatted())" }

    /// The message, and the cause when there is one.
    public var description: String {
        message + (cause.map { ": \($0)" } ?? "")
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
