import LoadBalancer
import Synchronization

/// A publisher the test drives by hand: it says nothing until told, then sends exactly the sets
/// and failures the test gives it.
///
/// It keeps the contract of every `InstancePublisher` (whole sets ordered by id,
/// the current set first to a new subscriber, failures in band with the last good set kept under
/// a `StalenessPolicy`), so code that works against it works against the registry
/// backends. Use it to play a registry's life in a test: the first answer, an outage, a recovery,
/// a set that shrinks to nothing, the end.
///
/// ```swift
/// let publisher = ManualPublisher()                 // a registry that has not answered yet
/// let cache = EndpointCache(publisher: publisher, factory: factory.factory)
/// // ... run the cache, then:
/// try await publisher.waitForSubscribers()          // the cache is listening
/// try publisher.publish(parsing: ["10.0.0.1:80", "10.0.0.2:80"])
/// publisher.fail(message: "connection refused")      // an outage: the set stays
/// ```
///
/// Unlike `FixedPublisher`, which always has a set, a `ManualPublisher` made
/// without instances has none until the first ``publish(_:)`` or ``fail(_:)``: a registry that
/// has not answered yet.
public final class ManualPublisher: InstancePublisher {
    private let broadcaster: InstanceBroadcaster
    private let subscriptions = Atomic(0)

    /// Creates a publisher with no set yet: subscribers wait for the first ``publish(_:)`` or
    /// ``fail(_:)``.
    ///
    /// - Parameter staleness: What to do with the last good set while failures last. Default
    ///   `StalenessPolicy.keepLastGood`.
    public convenience init(staleness: StalenessPolicy = .keepLastGood) {
        self.init(staleness: staleness, clock: ContinuousClock())
    }

    /// Creates a publisher whose current set is `instances`.
    ///
    /// - Parameters:
    ///   - instances: The first set (ordered by id; duplicate ids keep the first).
    ///   - staleness: What to do with the last good set while failures last. Default
    ///     `StalenessPolicy.keepLastGood`.
    public convenience init(_ instances: [Instance], staleness: StalenessPolicy = .keepLastGood) {
        self.init(staleness: staleness, clock: ContinuousClock())
        broadcaster.publish(instances)
    }

    /// Creates a publisher with no set yet whose staleness timer runs on `clock`, so a test can
    /// drive `StalenessPolicy.invalidate(after:)` with a ``ManualClock``.
    ///
    /// - Parameters:
    ///   - staleness: What to do with the last good set while failures last.
    ///   - clock: The clock the staleness timer sleeps on.
    public init<C: Clock>(staleness: StalenessPolicy, clock: C) where C.Duration == Duration {
        self.broadcaster = InstanceBroadcaster(staleness: staleness, clock: clock)
    }

    /// Sends a whole new set to every subscriber (unless it equals the current good set), ending
    /// any run of failures.
    public func publish(_ instances: [Instance]) {
        broadcaster.publish(instances)
    }

    /// Parses `addresses` (`host:port`, IPv6 in brackets) and sends them as a whole new set.
    ///
    /// - Throws: `InstanceParseError` for the first address that does not parse;
    ///   nothing is sent then.
    public func publish(parsing addresses: [String]) throws {
        broadcaster.publish(try addresses.map { try Instance(parsing: $0) })
    }

    /// Reports a registry failure: subscribers get the last good set (or an empty one, once the
    /// staleness policy has dropped it) with `error` attached.
    public func fail(_ error: DiscoveryError) {
        broadcaster.fail(error)
    }

    /// Reports a registry failure with `code` (default
    /// `DiscoveryError.Code.registryUnavailable`) and `message`.
    public func fail(_ code: DiscoveryError.Code = .registryUnavailable, message: String) {
        broadcaster.fail(DiscoveryError(code: code, message: message))
    }

    /// Ends every subscription, as a publisher that stops for good; later sets and failures are
    /// ignored and later subscriptions end at once.
    public func finish() {
        broadcaster.finish()
    }

    /// The current snapshot, or `nil` before the first ``publish(_:)`` or ``fail(_:)``.
    public var current: InstanceUpdate? { broadcaster.current }

    /// How many subscriptions are live now (an `EndpointCache` that runs holds one).
    public var subscriberCount: Int { broadcaster.subscriberCount }

    /// How many subscriptions have been made since the publisher was created (a consumer that
    /// subscribes again after a failure shows here).
    public var subscriptionCount: Int { subscriptions.load(ordering: .relaxed) }

    /// Waits, in real time, until at least `count` subscriptions are live: the code under test
    /// is listening, so what the test publishes next reaches it as a change.
    ///
    /// - Parameters:
    ///   - count: How many live subscriptions to wait for. Default 1.
    ///   - timeout: How long to wait, in real (continuous clock) time. Default 60 seconds (a
    ///     sanitizer build running a whole suite in parallel can keep a task from its first step
    ///     for tens of seconds; a wait that succeeds returns at once), stretched by
    ///     ``TestTimeScale/factor``.
    /// - Throws: ``TestKitError`` with code ``TestKitError/Code/timedOut`` when fewer are live after
    ///   `timeout`; `CancellationError` when the waiting task is cancelled.
    public func waitForSubscribers(count: Int = 1, timeout: Duration = .seconds(60)) async throws {
        try await pollUntil("\(count) subscriber(s) of the manual publisher", timeout: timeout, seen: { "\(subscriberCount) live" }) {
            subscriberCount >= count
        }
    }

    /// A new subscription: the current snapshot first (if any), then every change.
    public func updates() -> InstanceUpdates {
        subscriptions.add(1, ordering: .relaxed)
        return broadcaster.updates()
    }
}
