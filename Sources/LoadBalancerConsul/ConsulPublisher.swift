import LoadBalancer
import Logging
import ServiceLifecycle

/// Publishes the passing instances of a Consul service, kept current with blocking queries.
///
/// ``run()`` asks `/v1/health/service/NAME?passing` at once, then again and again with the last
/// `X-Consul-Index` and a `wait`, so the agent holds each request until the service changes (or the
/// wait ends): a change is published within one round trip of happening, with one idle request
/// per ``Configuration/wait`` in between.
///
/// - **Instances.** One per entry: the service's address when set, else the node's; the service's
///   port; the weight Consul uses while passing (`Service.Weights.Passing`, 1 when absent); the
///   tags; `Service.Meta` plus `consul.node`, `consul.service_id` and `consul.datacenter` in the
///   metadata. The id is `host:port`.
/// - **Tags.** All of ``tags`` must match: Consul filters by the first (the `tag` parameter), the
///   publisher drops entries that lack any of the others.
/// - **The index**, as Consul documents it: an index lower than the last one (a restored snapshot,
///   a restarted agent) resets the loop to a plain read (index 0); an index of 0 is replaced by 1.
/// - **Never a tight loop.** Requests start at least ``Configuration/minimumInterval`` apart; an
///   answer that neither moved the index nor blocked (a misbehaving agent, or a reset) waits a
///   jittered, growing delay before the next request, as does every failure.
/// - **Failures** (refused connections, timeouts, non-200 statuses, bodies that are not the
///   documented JSON) arrive in band as a `DiscoveryError` whose cause is a
///   ``ConsulError``; the last good set stays (subject to the `StalenessPolicy`). An
///   entry that is not a valid instance (port 0, a bad address) is left out and reported in band
///   with code `invalidInstances`, the good ones published. The query after a failure is a plain
///   read (no index), so a recovered agent clears the error at once instead of when the service
///   next changes or the wait ends.
/// - **An empty answer** is authoritative: the empty set is published.
///
/// ```swift
/// let consul = ConsulClient(configuration: .init(host: "127.0.0.1", port: 8500, token: token))
/// let publisher = ConsulPublisher(service: "users", tags: ["v2", "eu"], client: consul)
/// let group = ServiceGroup(services: [publisher, cache, server], logger: logger)
/// ```
public final class ConsulPublisher: InstancePublisher, Service {
    /// How the publisher polls.
    public struct Configuration: Sendable, Hashable {
        /// The longest a blocking query is held by the agent (`wait`). Default 5 minutes, Consul's
        /// own default; Consul caps it at 10 minutes.
        public var wait: Duration
        /// The shortest time between the starts of two requests, whatever the agent answers
        /// (Consul recommends rate-limiting blocking loops). Default 100 ms.
        public var minimumInterval: Duration
        /// The delay after the n-th consecutive failure, or answer that did not block: a random
        /// time in the upper half of `backoff.window(forRetry: n)`. Default 200 ms, doubling, up to 30 s.
        public var backoff: Backoff

        /// Creates a configuration.
        public init(
            wait: Duration = .seconds(300),
            minimumInterval: Duration = .milliseconds(100),
            backoff: Backoff = Backoff(base: .milliseconds(200), cap: .seconds(30))
        ) {
            self.wait = wait
            self.minimumInterval = minimumInterval
            self.backoff = backoff
        }
    }

    /// The service's name.
    public let service: String
    /// The tags every published instance has.
    public let tags: [String]
    /// How the publisher polls.
    public let configuration: Configuration
    private let client: ConsulClient
    private let broadcaster: InstanceBroadcaster
    private let logger: Logger

    /// Creates a publisher; nothing is asked until ``run()``.
    ///
    /// - Parameters:
    ///   - service: The service's name.
    ///   - tags: Tags every instance must have (all of them). Default none.
    ///   - client: The agent, with its datacenter, token and TLS settings.
    ///   - configuration: Wait, rate limit and backoff.
    ///   - staleness: What to do with the last good set while Consul fails. Default: keep it.
    ///   - logger: Where to log. Default: nowhere.
    public init(
        service: String,
        tags: [String] = [],
        client: ConsulClient,
        configuration: Configuration = Configuration(),
        staleness: StalenessPolicy = .keepLastGood,
        logger: Logger = Logger(label: "loadbalancer.consul", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.service = service
        self.tags = tags
        self.client = client
        self.configuration = configuration
        self.broadcaster = InstanceBroadcaster(staleness: staleness)
        self.logger = logger
    }

    /// A new subscription: the current set first (once the first answer is in), then every change.
    public func updates() -> InstanceUpdates { broadcaster.updates() }

    /// Queries and publishes until cancelled or shut down gracefully; then ends the subscriptions.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await self.loop()
        }
        broadcaster.finish()
    }

    private func loop() async {
        var state = BlockingLoopState(wait: configuration.wait)
        var lastStart: ContinuousClock.Instant?
        var random = SystemRandomNumberGenerator()
        while !Task.isCancelled {
            if let lastStart {
                do {
                    try await Task.sleep(until: lastStart + configuration.minimumInterval, clock: .continuous)
                } catch { return }
            }
            let start = ContinuousClock.now
            lastStart = start
            let delay: Duration
            do {
                let result = try await client.healthService(
                    service,
                    tag: tags.first,
                    passingOnly: true,
                    index: state.blockingIndex,
                    wait: configuration.wait
                )
                publish(result.entries)
                let outcome = state.answered(index: result.index, elapsed: ContinuousClock.now - start)
                if outcome == .reset {
                    logger.info(
                        "Consul index went backwards; starting over with a plain read",
                        metadata: ["loadbalancer.consul.service": "\(service)"]
                    )
                }
                delay = state.stalls > 0 ? jittered(configuration.backoff.window(forRetry: state.stalls), &random) : .zero
            } catch is CancellationError {
                return
            } catch {
                let failures = state.failed()
                let code: DiscoveryError.Code
                if let error = error as? ConsulError,
                    error.code == .unavailable || error.code == .timeout || (error.status ?? 0) >= 500
                {
                    code = .registryUnavailable
                } else {
                    code = .other
                }
                logger.warning(
                    "Consul health query failed; keeping the last good set",
                    metadata: ["loadbalancer.consul.service": "\(service)", "loadbalancer.error": "\(error)"]
                )
                broadcaster.fail(DiscoveryError(code: code, message: "Consul query of \(service) failed", cause: error))
                delay = jittered(configuration.backoff.window(forRetry: failures), &random)
            }
            if delay > .zero {
                do { try await Task.sleep(for: delay) } catch { return }
            }
        }
    }

    /// A random delay in the upper half of `window`, so that a window is never skipped entirely.
    private func jittered(_ window: Duration, _ random: inout SystemRandomNumberGenerator) -> Duration {
        let fraction = 0.5 + Double(random.next() >> 11) * 0x1.0p-54
        let seconds = Double(window.components.seconds) + Double(window.components.attoseconds) / 1e18
        return .nanoseconds(Int64(seconds * fraction * 1e9))
    }

    private func publish(_ entries: [ConsulServiceEntry]) {
        let (instances, invalid) = ConsulServiceEntry.instances(from: entries, tags: tags)
        if instances.isEmpty {
            logger.info("Consul has no passing instances", metadata: ["loadbalancer.consul.service": "\(service)"])
        }
        broadcaster.publish(instances)
        if !invalid.isEmpty {
            broadcaster.fail(
                DiscoveryError(
                    code: .invalidInstances,
                    message: invalid.map(\.description).joined(separator: "; ")
                )
            )
        }
    }
}

/// The index bookkeeping of a blocking-query loop, as Consul documents it.
struct BlockingLoopState: Sendable {
    enum Outcome: Equatable {
        /// The index moved, or the request blocked for most of its wait: ask again at once.
        case progressed
        /// The answer came back early without moving the index: back off.
        case stalled
        /// The index went backwards: start over from 0, after a backoff.
        case reset
    }

    /// The index to send next; 0 means a plain read that does not block.
    private(set) var index: UInt64 = 0
    /// Consecutive answers that did not block and did not move the index (the backoff step).
    private(set) var stalls = 0
    /// Consecutive failures (the backoff step).
    private(set) var failures = 0
    let wait: Duration

    /// The index to block on in the next query; nil for a plain read. After a failure the next
    /// query is a plain read, so a recovered agent is heard from (and the error cleared) at once,
    /// not only when the index moves or the wait ends.
    var blockingIndex: UInt64? { index == 0 || failures > 0 ? nil : index }

    init(wait: Duration) {
        self.wait = wait
    }

    /// Takes in an answer with `received` as its `X-Consul-Index`, `elapsed` after it was asked.
    mutating func answered(index received: UInt64?, elapsed: Duration) -> Outcome {
        // A plain read after a failure was not meant to block: not a stall.
        let recovering = failures > 0
        failures = 0
        let outcome: Outcome
        switch received {
        case nil:
            // Nothing to block on: the next read cannot block, so it must wait.
            index = 0
            outcome = .stalled
        case let received? where received < index:
            index = 0
            outcome = .reset
        case let received?:
            let moved = received > index
            // An index of 0 is a Consul bug; 1 is always safe to block on.
            index = max(received, 1)
            outcome = moved || recovering || elapsed >= wait / 2 ? .progressed : .stalled
        }
        stalls = outcome == .progressed ? 0 : stalls + 1
        return outcome
    }

    /// Takes in a failure; returns how many in a row there have been.
    mutating func failed() -> Int {
        failures += 1
        return failures
    }
}
