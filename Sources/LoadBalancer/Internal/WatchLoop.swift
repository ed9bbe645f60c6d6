import Logging
import ServiceLifecycle

/// What a round of a ``WatchLoop`` asks for next.
package struct WatchStep: Sendable {
    enum Kind: Sendable {
        case succeeded(next: Duration)
        case again
        case failed(atLeast: Duration, atMost: Duration?)
        case stop((any Error)?)
    }

    let kind: Kind

    /// The round did its work: the count of failures in a row starts again from zero, and the next
    /// round starts after `pause` (zero: at once).
    package static func succeeded(next pause: Duration = .zero) -> WatchStep {
        WatchStep(kind: .succeeded(next: pause))
    }

    /// Nothing worth counting happened (an event was taken in, say): the next round starts at once,
    /// and the count of failures in a row stays as it is.
    package static let again = WatchStep(kind: .again)

    /// The round failed: one more failure in a row, and the next round starts after the backoff's
    /// delay for it (full jitter), raised to `atLeast` (a server's `Retry-After`) and capped at
    /// `atMost` (the cap is applied first).
    package static func failed(atLeast: Duration = .zero, atMost: Duration? = nil) -> WatchStep {
        WatchStep(kind: .failed(atLeast: atLeast, atMost: atMost))
    }

    /// Ends the loop; `error` says why (a client that was closed, say), `nil` when there is nothing
    /// to report.
    package static func stop(_ error: (any Error)? = nil) -> WatchStep {
        WatchStep(kind: .stop(error))
    }

    /// Ends a publisher's loop because its registry client was shut down: the last update carries
    /// a `DiscoveryError` with code `closed` that names the client (`"etcd"`), what is no longer
    /// watched, and the client's own error as the cause.
    package static func clientShutDown(_ client: String, watching what: String, cause: any Error) -> WatchStep {
        .stop(DiscoveryError(code: .closed, message: "the \(client) client was shut down: \(what) is no longer watched", cause: cause))
    }

    /// The error a ``stop(_:)`` step carries; `nil` for any other step.
    package var stopError: (any Error)? {
        if case .stop(let error) = kind { return error }
        return nil
    }
}

/// The count a round of a ``WatchLoop`` sees, and can reset when it makes progress part way
/// through (a watch that was set up before it broke).
package struct WatchRound: Sendable {
    /// Rounds that failed in a row before this one.
    package private(set) var failures: Int

    package init(failures: Int) { self.failures = failures }

    /// Says the round got somewhere: a failure that ends it counts as the first in a row.
    package mutating func progressed() { failures = 0 }
}

/// The loop every registry publisher and registrar runs on: rounds (a subscription, a read, a
/// registration...) one after the other, a pause between them that backs off with full jitter
/// (``Backoff``) after failures, time kept on an injected clock, and an end on task cancellation or
/// graceful shutdown (swift-service-lifecycle).
///
/// A publisher passes its ``InstanceBroadcaster``: the loop reports the error a round stopped it
/// with (a `DiscoveryError`, usually `closed`) to the subscribers and then ends their subscriptions,
/// however the loop ended. Failures in between travel in band through the broadcaster, which keeps
/// the last good set.
package struct WatchLoop<C: Clock>: Sendable where C.Duration == Duration {
    /// The pauses after failures.
    package var backoff: Backoff
    /// The clock of the pauses.
    package let clock: C
    /// Random bits for the jitter.
    private let random: @Sendable () -> UInt64

    /// A loop whose pauses run on `clock`; `random` draws the jitter (tests pass fixed bits).
    package init(backoff: Backoff, clock: C, random: @escaping @Sendable () -> UInt64 = systemRandomBits) {
        self.backoff = backoff
        self.clock = clock
        self.random = random
    }

    /// The pause that `step` asks for, updating `failures` (the count of failures in a row); `nil`
    /// when the loop must stop.
    package func pause(after step: WatchStep, failures: inout Int) -> Duration? {
        switch step.kind {
        case .succeeded(let next):
            failures = 0
            return next
        case .again:
            return .zero
        case .failed(let atLeast, let atMost):
            failures += 1
            var delay = backoff.delay(forRetry: failures, random: random())
            if let atMost { delay = min(delay, atMost) }
            return max(delay, atLeast)
        case .stop:
            return nil
        }
    }

    /// Sleeps `duration` on the loop's clock (nothing for zero or less).
    package func sleep(for duration: Duration) async throws {
        guard duration > .zero else { return }
        try await clock.sleep(until: clock.now.advanced(by: duration), tolerance: nil)
    }

    /// Runs rounds until one stops the loop, the task is cancelled or the service group shuts
    /// down gracefully; returns the error the stopping round gave, if any.
    ///
    /// - Parameters:
    ///   - broadcaster: A publisher's broadcaster: the stopping round's error, when it is a
    ///     `DiscoveryError`, is published (and logged as a warning on `logger`, with `metadata`),
    ///     and the subscriptions end when the loop does.
    ///   - logger: Where a publisher's stopping error is logged.
    ///   - metadata: What names the publisher in that log line.
    ///   - state: Makes the state the rounds share (inside the loop's task, so it need not be
    ///     `Sendable`: an event stream's iterator, say).
    ///   - round: One round, given the state and the count of failures in a row.
    @discardableResult
    package func run<State>(
        publishingTo broadcaster: InstanceBroadcaster? = nil,
        logger: Logger? = nil,
        metadata: Logger.Metadata = [:],
        state: @escaping @Sendable () -> State,
        round: @escaping @Sendable (inout State, inout WatchRound) async -> WatchStep
    ) async -> (any Error)? {
        let stoppedBy: (any Error)? = await cancelWhenGracefulShutdown {
            var state = state()
            var failures = 0
            while !Task.isCancelled {
                var context = WatchRound(failures: failures)
                let step = await round(&state, &context)
                if Task.isCancelled { return nil }
                if case .stop(let error) = step.kind { return error }
                failures = context.failures
                guard let pause = self.pause(after: step, failures: &failures) else { return nil }
                do { try await self.sleep(for: pause) } catch { return nil }
            }
            return nil
        }
        if let broadcaster {
            if let closed = stoppedBy as? DiscoveryError {
                logger?.warning(
                    "the registry client was closed; the publisher stops",
                    metadata: metadata.merging(["loadbalancer.error": "\(closed)"]) { $1 }
                )
                broadcaster.fail(closed)
            }
            broadcaster.finish()
        }
        return stoppedBy
    }

    /// ``run(publishingTo:state:round:)`` for rounds that share no state.
    @discardableResult
    package func run(
        publishingTo broadcaster: InstanceBroadcaster? = nil,
        logger: Logger? = nil,
        metadata: Logger.Metadata = [:],
        round: @escaping @Sendable (inout WatchRound) async -> WatchStep
    ) async -> (any Error)? {
        await run(publishingTo: broadcaster, logger: logger, metadata: metadata, state: {}) { _, context in
            await round(&context)
        }
    }
}

extension WatchLoop where C == ContinuousClock {
    /// A loop on `ContinuousClock`.
    package init(backoff: Backoff) {
        self.init(backoff: backoff, clock: ContinuousClock())
    }
}

/// 64 bits from the system's generator.
package func systemRandomBits() -> UInt64 {
    var generator = SystemRandomNumberGenerator()
    return generator.next()
}

extension InstanceBroadcaster {
    /// Publishes a registry's answer: `instances`, then, when some of its entries made no instance,
    /// `invalid` (one reason each) in band with code `invalidInstances`, the good ones kept.
    package func publish(_ instances: [Instance], invalid: [String]) {
        publish(instances)
        if !invalid.isEmpty { fail(DiscoveryError(code: .invalidInstances, message: invalid.joined(separator: "; "))) }
    }

    /// Publishes a registry's answer with what changed since the previous publish
    /// (``publish(_:upserted:removed:)``), then the entries that made no instance, as
    /// ``publish(_:invalid:)`` does.
    package func publish(_ instances: [Instance], upserted: [Instance], removed: [String], invalid: [String]) {
        publish(instances, upserted: upserted, removed: removed)
        if !invalid.isEmpty { fail(DiscoveryError(code: .invalidInstances, message: invalid.joined(separator: "; "))) }
    }

    /// A failed round of a publisher's watch loop, in band: logged as a warning on `logger` (with
    /// `metadata` naming the publisher), and published with the last good set (`registryUnavailable`
    /// when the registry could not be reached, else `other`).
    package func report(
        _ error: any Error,
        unavailable: Bool,
        message: String,
        logger: Logger,
        metadata: Logger.Metadata
    ) {
        logger.warning(
            "discovery failed; keeping the last good set",
            metadata: metadata.merging(["loadbalancer.error": "\(error)"]) { $1 }
        )
        fail(DiscoveryError(code: unavailable ? .registryUnavailable : .other, message: message, cause: error))
    }
}
