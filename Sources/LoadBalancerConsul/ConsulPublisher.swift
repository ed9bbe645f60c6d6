import LoadBalancer
import Logging
import ServiceLifecycle

/// Publishes the passing (optionally also warning) instances of a Consul service, kept current
/// with blocking queries.
///
/// ``run()`` asks `/v1/health/service/NAME?passing` at once, then again and again with the last
/// `X-Consul-Index` and a `wait`, so the agent holds each request until the service changes (or the
/// wait ends): a change is published within one round trip of happening, with one idle request
/// per ``Configuration/wait`` in between.
///
/// - **Instances.** One per entry: the service's address when set, else the node's; the service's
///   port; the weight Consul uses in that state (`Service.Weights.Passing`, or
///   `Service.Weights.Warning` for a warning instance; 1 when absent); the tags; `Service.Meta`
///   plus `consul.node`, `consul.service_id`, `consul.datacenter` (and `consul.status` =
///   `warning` for a warning instance) in the metadata. The id is `host:port`.
/// - **Warning instances** are left out unless ``Configuration/includeWarning`` is set: then the
///   query drops `passing` and the publisher keeps the entries whose checks are all passing or
///   warning (a critical or maintenance check still excludes the instance).
/// - **Tags.** All of ``tags`` must match, without regard to case (as Consul matches them):
///   Consul filters by the first (the `tag` parameter), the publisher drops entries that lack
///   any of the others.
/// - **The index**, as Consul documents it: an index lower than the last one (a restored snapshot,
///   a restarted agent) resets the loop to a plain read (index 0); an index of 0 is replaced by 1.
/// - **Never a tight loop.** Requests are rate-limited by a token bucket
///   (``Configuration/rateLimit``: by default bursts of 5, then one a second). An answer that
///   neither moved the index nor blocked for ``Configuration/stallThreshold`` (a misbehaving
///   agent, or a reset) waits a jittered, growing delay before the next request, as does every
///   failure. An answer that ends early because the agent's `max_query_time` is below the wait
///   is not a stall.
/// - **Failures** (refused connections, timeouts, non-200 statuses, bodies that are not the
///   documented JSON) arrive in band as a `DiscoveryError` whose cause is a
///   ``ConsulError``; the last good set stays (subject to the `StalenessPolicy`). A 429 waits at
///   least the agent's `Retry-After`. An entry that is not a valid instance (no port, a Unix
///   socket, a bad address) is left out and reported in band with code `invalidInstances`, the
///   good ones published. The query after a failure is a plain read (no index), so a recovered
///   agent clears the error at once instead of when the service next changes or the wait ends.
/// - **ACLs.** An answer the agent filtered (`X-Consul-Results-Filtered-By-ACLs: true`: the
///   token may not read the service or some of its nodes) is not the service's set: it is
///   reported in band (cause code ``ConsulError/Code/filteredByACLs``) and the last good set stays.
/// - **An empty answer** that was not filtered is authoritative: the empty set is published.
///
/// ```swift
/// let consul = ConsulClient(configuration: .init(host: "127.0.0.1", port: 8500, token: token))
/// let publisher = ConsulPublisher(service: "users", tags: ["v2", "eu"], client: consul)
/// let group = ServiceGroup(services: [consul, publisher, cache, server], logger: logger)
/// ```
public final class ConsulPublisher: InstancePublisher, Service {
    /// A token bucket: up to ``burst`` requests at once, refilled at ``requestsPerSecond``.
    public struct RateLimit: Sendable, Hashable {
        /// The sustained rate, in requests a second; must be positive.
        public var requestsPerSecond: Double
        /// How many requests may start back to back after a quiet spell; at least 1.
        public var burst: Int

        /// Creates a rate limit.
        public init(requestsPerSecond: Double, burst: Int) {
            self.requestsPerSecond = requestsPerSecond
            self.burst = burst
        }
    }

    /// How the publisher polls.
    public struct Configuration: Sendable, Hashable {
        /// The longest a blocking query is held by the agent (`wait`). Default 5 minutes, Consul's
        /// own default; the agent caps it at its `max_query_time` (10 minutes by default).
        public var wait: Duration
        /// The requests' rate limit. Default: bursts of 5, then 1 a second.
        public var rateLimit: RateLimit
        /// An answer that neither moved the index nor was held this long (or half the wait, if
        /// less) counts as a stall, and is backed off from. Default 1 s.
        public var stallThreshold: Duration
        /// The delay after the n-th consecutive failure or stall (answers that made progress
        /// reset the count): a random time in `backoff.window(forRetry: n)` (full jitter).
        /// Default 200 ms, doubling, up to 30 s.
        public var backoff: Backoff
        /// Whether instances whose worst check is `warning` are published too (with
        /// `Weights.Warning`). Default `false`: passing instances only.
        public var includeWarning: Bool
        /// The consistency mode of the queries, or the agent's cache. Default: Consul's default.
        public var consistency: ConsulClient.Consistency

        /// Creates a configuration.
        public init(
            wait: Duration = .seconds(300),
            rateLimit: RateLimit = RateLimit(requestsPerSecond: 1, burst: 5),
            stallThreshold: Duration = .seconds(1),
            backoff: Backoff = Backoff(base: .milliseconds(200), cap: .seconds(30)),
            includeWarning: Bool = false,
            consistency: ConsulClient.Consistency = .default
        ) {
            self.wait = wait
            self.rateLimit = rateLimit
            self.stallThreshold = stallThreshold
            self.backoff = backoff
            self.includeWarning = includeWarning
            self.consistency = consistency
        }

        /// Checks the values ``ConsulPublisher/run()`` cannot work with.
        ///
        /// - Throws: ``ConsulError`` with code `invalidArgument` for a rate that is not a
        ///   positive number, a burst below 1, or a negative wait or stall threshold.
        public func validate() throws(ConsulError) {
            guard rateLimit.requestsPerSecond.isFinite, rateLimit.requestsPerSecond > 0 else {
                throw ConsulError(
                    code: .invalidArgument,
                    message: "the rate limit \(rateLimit.requestsPerSecond)/s is not a positive number"
                )
            }
            guard rateLimit.burst >= 1 else {
                throw ConsulError(
                    code: .invalidArgument,
                    message: "the rate limit's burst \(rateLimit.burst) is below 1"
                )
            }
            guard wait >= .zero, stallThreshold >= .zero else {
                throw ConsulError(
                    code: .invalidArgument,
                    message: "the wait and the stall threshold must not be negative"
                )
            }
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
    ///   - configuration: Wait, rate limit, backoff, warning instances, consistency.
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
    ///
    /// - Throws: ``ConsulError`` with code `invalidArgument` at once, for a configuration it
    ///   cannot work with (see ``Configuration/validate()``).
    public func run() async throws {
        do {
            try configuration.validate()
        } catch {
            broadcaster.finish()
            throw error
        }
        let initial = { @Sendable [configuration] in
            (
                blocking: BlockingLoopState(wait: configuration.wait, stallThreshold: configuration.stallThreshold),
                bucket: TokenBucket(configuration.rateLimit, now: .now)
            )
        }
        let loop = WatchLoop(backoff: configuration.backoff)
        await loop.run(publishingTo: broadcaster, logger: logger, metadata: metadata, state: initial) { state, _ in
            do {
                try await loop.sleep(for: state.bucket.take(now: .now))
                return try await self.query(&state.blocking)
            } catch is CancellationError {
                return .stop()
            } catch let error as ConsulError where error.code == .shutDown {
                // Nothing will answer again: the last good set stays, with the reason in band.
                return .clientShutDown("Consul", watching: self.service, cause: error)
            } catch {
                return self.failed(error, &state.blocking)
            }
        }
    }

    private var metadata: Logger.Metadata { ["loadbalancer.consul.service": "\(service)"] }

    /// One query: publishes its answer; a stall (an answer that neither blocked nor moved the
    /// index) backs off as a failure does.
    private func query(_ state: inout BlockingLoopState) async throws -> WatchStep {
        let start = ContinuousClock.now
        let result = try await client.healthService(
            service,
            tag: tags.first,
            passingOnly: !configuration.includeWarning,
            consistency: configuration.consistency,
            index: state.blockingIndex,
            wait: configuration.wait
        )
        if result.filteredByACLs {
            throw ConsulError(
                code: .filteredByACLs,
                message: "the agent left entries of \(service) out: the token may not read them "
                    + "(X-Consul-Results-Filtered-By-ACLs)"
            )
        }
        publish(result.entries)
        let outcome = state.answered(index: result.index, elapsed: ContinuousClock.now - start)
        if outcome == .reset {
            logger.info("Consul index went backwards; starting over with a plain read", metadata: metadata)
        }
        return outcome == .progressed ? .succeeded() : .failed()
    }

    /// Reports a failed query in band; a 429 waits at least the agent's `Retry-After`.
    private func failed(_ error: any Error, _ state: inout BlockingLoopState) -> WatchStep {
        state.failed()
        let consulError = error as? ConsulError
        let unavailable =
            consulError.map {
                $0.code == .unavailable || $0.code == .timeout || $0.code == .rateLimited || ($0.status ?? 0) >= 500
            } ?? false
        broadcaster.report(
            error, unavailable: unavailable, message: "Consul query of \(service) failed", logger: logger, metadata: metadata)
        return .failed(atLeast: consulError?.retryAfter ?? .zero)
    }

    private func publish(_ entries: [ConsulServiceEntry]) {
        let (instances, invalid) = ConsulServiceEntry.instances(
            from: entries,
            tags: tags,
            includeWarning: configuration.includeWarning
        )
        if instances.isEmpty {
            logger.info("Consul has no healthy instances", metadata: ["loadbalancer.consul.service": "\(service)"])
        }
        broadcaster.publish(instances, invalid: invalid)
    }
}

/// The index bookkeeping of a blocking-query loop, as Consul documents it.
struct BlockingLoopState: Sendable {
    enum Outcome: Equatable {
        /// The index moved, or the request was held (past the stall threshold): ask again at once.
        case progressed
        /// The answer came back at once without moving the index: back off.
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
    /// An answer held at least this long (or half the wait, if less) is not a stall.
    let stallThreshold: Duration

    /// The index to block on in the next query; nil for a plain read. After a failure the next
    /// query is a plain read, so a recovered agent is heard from (and the error cleared) at once,
    /// not only when the index moves or the wait ends.
    var blockingIndex: UInt64? { index == 0 || failures > 0 ? nil : index }

    init(wait: Duration, stallThreshold: Duration = .seconds(1)) {
        self.wait = wait
        self.stallThreshold = stallThreshold
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
            // Held for a while is normal, however short of the wait: the agent's max_query_time
            // may be below it, and every idle return would otherwise grow the backoff.
            outcome = moved || recovering || elapsed >= min(stallThreshold, wait / 2) ? .progressed : .stalled
        }
        stalls = outcome == .progressed ? 0 : stalls + 1
        return outcome
    }

    /// Takes in a failure (the next query is a plain read); returns how many in a row there have been.
    @discardableResult
    mutating func failed() -> Int {
        failures += 1
        return failures
    }
}

/// A token bucket over a clock's instants: ``take(now:)`` says how long to wait before the next
/// request may start, and takes its token.
struct TokenBucket: Sendable {
    let rate: Double
    let burst: Double
    private(set) var tokens: Double
    private var last: ContinuousClock.Instant

    init(_ limit: ConsulPublisher.RateLimit, now: ContinuousClock.Instant) {
        rate = limit.requestsPerSecond
        burst = Double(max(1, limit.burst))
        tokens = burst
        last = now
    }

    /// Refills for the time since the last call, takes one token, and returns how long to wait
    /// until it is there (zero when it already was). The bucket may go into debt: a caller that
    /// waits the returned time before the next call never gets ahead of the rate.
    mutating func take(now: ContinuousClock.Instant) -> Duration {
        if now > last {
            let elapsed = now - last
            let seconds = elapsed.secondsValue
            tokens = min(burst, tokens + seconds * rate)
            last = now
        }
        tokens -= 1
        guard tokens < 0 else { return .zero }
        return .nanoseconds(Int64((-tokens / rate * 1e9).rounded(.up)))
    }
}
