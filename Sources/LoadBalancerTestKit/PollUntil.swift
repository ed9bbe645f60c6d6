/// Waits, by bounded polling, until `condition` holds: checks it, and while it does not hold,
/// sleeps `interval` and checks again, for at most `timeout` of real (continuous clock) time,
/// whatever clock the code under test is driven by.
///
/// Use it where a test must wait for something another task does (a server that becomes ready,
/// a background loop that reaches a state, an update that arrives) instead of sleeping a fixed
/// time: a wait that succeeds returns as soon as the condition holds, and a wait that cannot
/// succeed ends, with an error that says what it waited for.
///
/// ```swift
/// try await pollUntil("the publisher's first update", timeout: .seconds(10)) {
///     recorder.updates.count >= 1
/// }
/// ```
///
/// The timeout is stretched by ``TestTimeScale/factor`` (under a sanitizer the same code runs
/// several times slower): pass the bound a normal run needs, not a scaled one.
///
/// - Parameters:
///   - what: What the test waits for, in words; the error names it. Evaluated only on timeout.
///   - timeout: How long to wait before giving up. Default 60 seconds (a wait that succeeds
///     returns at once; under a sanitizer with suites running in parallel, a task has been kept
///     from its first step for tens of seconds). A timeout of zero or less checks once.
///   - interval: The pause between two checks. Default 1 ms; anything shorter counts as 1 ms.
///   - seen: What was last seen (say, `"2 asleep"`), added to the error's message on timeout.
///     Default: nothing (an empty string adds nothing).
///   - onTimeout: Called with the timeout's error just before it is thrown: where a test records
///     an issue at the place it waited (with Swift Testing,
///     `{ Issue.record("\($0)", sourceLocation: sourceLocation) }`), so the test fails there even
///     when the error does not reach it (a `try?`, a child task the test is not waiting on yet).
///     Default: nothing.
///   - condition: What must hold. An error it throws ends the wait and is rethrown unchanged.
/// - Throws: ``TestKitError`` with code ``TestKitError/Code/timedOut`` when `condition` still
///   does not hold once the (scaled) timeout has passed (its message: "waited `timeout` for
///   `what`", then what was seen); `CancellationError` when the waiting task is cancelled before
///   the condition holds; or what `condition` throws.
public func pollUntil(
    _ what: @autoclosure () -> String,
    timeout: Duration = .seconds(60),
    interval: Duration = .milliseconds(1),
    seen: () -> String = { "" },
    onTimeout: (TestKitError) -> Void = { _ in },
    _ condition: () async throws -> Bool
) async throws {
    try await pollUntil(
        what(), timeout: timeout, interval: interval, seen: seen, onTimeout: onTimeout, scaledBy: TestTimeScale.factor, condition)
}

/// ``pollUntil(_:timeout:interval:seen:onTimeout:_:)`` with the timeout stretched by `factor` rather than
/// the run's ``TestTimeScale/factor`` (for this kit's tests).
func pollUntil(
    _ what: @autoclosure () -> String,
    timeout: Duration,
    interval: Duration,
    seen: () -> String,
    onTimeout: (TestKitError) -> Void,
    scaledBy factor: Double,
    _ condition: () async throws -> Bool
) async throws {
    let timeout = TestTimeScale.scaled(timeout, by: factor)
    let interval = max(interval, .milliseconds(1))
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while try await !condition() {
        if ContinuousClock.now >= deadline {
            let seen = seen()
            let error = TestKitError(code: .timedOut, message: "waited \(timeout) for \(what())" + (seen.isEmpty ? "" : "; \(seen)"))
            onTimeout(error)
            throw error
        }
        try await Task.sleep(for: interval)
    }
}
