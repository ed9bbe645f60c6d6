import LoadBalancer
import Logging
import ServiceLifecycle
import Synchronization

/// Publishes the instances registered in etcd under a key prefix.
///
/// Each key under the prefix is one instance; its value is in one of the forms
/// `Instance.init(registryValue:options:)` reads: `host:port`, a go-kit URL (`http://host:port`),
/// this library's JSON object (what ``EtcdRegistrar`` writes by default), a Finagle / Aurora
/// ServerSet member or an Apache Curator service instance. A value in none of these forms is left
/// out and reported in band, never fatal: the update carries the good instances and a
/// `DiscoveryError` with code `invalidInstances` naming the bad keys (as the static, DNS, ZooKeeper
/// and Consul publishers do). A value that says its instance is not serving (a ServerSet member
/// not `ALIVE`, a disabled Curator instance) is left out without being reported.
///
/// ``run()`` lists the prefix (in pages of `pageSize` keys, all at one revision), then watches it
/// from the revision after the list. After a broken
/// stream (a member died, lost its leader, or the connection dropped) it watches again from the
/// revision after the last one it saw, on the next member, so no change is lost or seen twice.
/// When etcd has compacted that revision away, it lists again. Between attempts it backs off
/// (jittered, exponential, capped). While etcd is unreachable the last good set stays published,
/// with the error in band; at start-up, when etcd is down, the first update carries the error
/// (after the client's connection attempt fails, or ``EtcdConfiguration/requestTimeout``).
/// When the client is shut down, the publisher publishes a last update with a
/// `closed` error, then ends its subscriptions.
public final class EtcdPublisher: InstancePublisher, Service {
    /// The key prefix watched, for example `/services/api/`.
    public let prefix: String
    private let client: EtcdClient
    private let core: WatchingPublisherCore
    private var broadcaster: InstanceBroadcaster { core.broadcaster }
    private var logger: Logger { core.logger }
    private let state = Mutex(EtcdInstanceTable())
    /// How values are read (which ServerSet endpoint, for one).
    public let valueOptions: RegistryValueOptions
    /// The most keys one request of the initial list reads (see ``init(prefix:client:pageSize:backoff:staleness:valueOptions:logger:)``).
    public let pageSize: Int
    /// Called after each page of a list has been parsed, with the page (tests write between pages
    /// with it).
    private let afterListPage: (@Sendable (EtcdRange) async -> Void)?

    /// Creates a publisher; nothing is read until ``run()``.
    ///
    /// - Parameters:
    ///   - prefix: The key prefix; every key that starts with it is an instance.
    ///   - client: The etcd client (run it too).
    ///   - pageSize: The most keys one request of a list reads. The list is read in pages, all at
    ///     the revision of the first (a consistent snapshot; what is written meanwhile comes with
    ///     the watch that follows), so neither etcd nor the publisher holds one message with every
    ///     key, and no answer nears gRPC's 4 MiB message limit. Default 1,000; at least 1.
    ///   - backoff: The pause between attempts after a failure. Default 100 ms doubling to 5 s.
    ///   - staleness: What to do with the last good set while etcd fails. Default: keep it.
    ///   - valueOptions: How values are read, for example which ServerSet endpoint to use. Default:
    ///     `RegistryValueOptions.defaults`.
    ///   - logger: Where to log. Default: nowhere.
    public convenience init(
        prefix: String,
        client: EtcdClient,
        pageSize: Int = 1_000,
        backoff: Backoff = Backoff(base: .milliseconds(100), cap: .seconds(5)),
        staleness: StalenessPolicy = .keepLastGood,
        valueOptions: RegistryValueOptions = .defaults,
        logger: Logger = Logger(label: "loadbalancer.etcd", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.init(
            prefix: prefix, client: client, pageSize: pageSize, backoff: backoff, staleness: staleness,
            valueOptions: valueOptions, logger: logger, afterListPage: nil)
    }

    /// A publisher that calls `afterListPage` after each page of a list (for tests).
    package init(
        prefix: String,
        client: EtcdClient,
        pageSize: Int,
        backoff: Backoff = Backoff(base: .milliseconds(100), cap: .seconds(5)),
        staleness: StalenessPolicy = .keepLastGood,
        valueOptions: RegistryValueOptions = .defaults,
        logger: Logger = Logger(label: "loadbalancer.etcd", factory: { _ in SwiftLogNoOpLogHandler() }),
        afterListPage: (@Sendable (EtcdRange) async -> Void)?
    ) {
        self.prefix = prefix
        self.client = client
        self.pageSize = max(1, pageSize)
        self.afterListPage = afterListPage
        self.valueOptions = valueOptions
        self.core = WatchingPublisherCore(
            backoff: backoff, staleness: staleness, logger: logger, metadata: ["loadbalancer.etcd.prefix": "\(prefix)"])
    }

    /// A new subscription: the current set first (once the first list is in), then every change.
    public func updates() -> InstanceUpdates { broadcaster.updates() }

    /// Lists and watches until cancelled or shut down, or until the client is shut down (then it
    /// publishes a `closed` error first); then ends the subscriptions.
    public func run() async throws {
        await core.run(state: {}) { _, round in
            do {
                try await self.listAndWatch(onProgress: { round.progressed() })
                return .failed()
            } catch {
                if Task.isCancelled { return .stop() }
                if self.client.isShutDown { return .clientShutDown("etcd", watching: self.prefix, cause: error) }
                self.report(error)
                return .failed()
            }
        }
    }

    /// One round: a list when needed, then a watch until it fails.
    private func listAndWatch(onProgress: () -> Void) async throws(EtcdError) {
        if state.withLock({ $0.nextRevision }) == nil {
            try await list()
            onProgress()
        }
        guard let start = state.withLock({ $0.nextRevision }) else { return }
        do {
            try await client.watch(prefix: prefix, startRevision: start) { batch in
                self.apply(batch)
            }
        } catch  where error.code == .compacted {
            logger.info(
                "etcd compacted past the watched revision; listing again",
                metadata: ["loadbalancer.etcd.prefix": "\(prefix)", "loadbalancer.etcd.revision": "\(start)"]
            )
            state.withLock { $0.nextRevision = nil }
            try await list()
            onProgress()
        }
    }

    /// Reads the whole prefix, page by page at one revision, and publishes it. When etcd compacts
    /// that revision away before the last page, it reads again from the start (a few times, then
    /// the error ends the round).
    private func list() async throws(EtcdError) {
        var attempt = 0
        while true {
            attempt += 1
            var listing = EtcdListing()
            let revision: Int64
            do {
                revision = try await client.rangePages(prefix: prefix, pageSize: pageSize) { page in
                    listing.add(page, parse: parse)
                    await afterListPage?(page)
                }
            } catch  where error.code == .compacted && attempt < 3 {
                logger.info(
                    "etcd compacted the listed revision before the last page; listing again",
                    metadata: ["loadbalancer.etcd.prefix": "\(prefix)"]
                )
                continue
            }
            let (set, invalid) = state.withLock { table in
                table.reset(to: listing, revision: revision)
                return (table.ordered, table.invalid)
            }
            logger.debug(
                "etcd instances listed",
                metadata: [
                    "loadbalancer.etcd.prefix": "\(prefix)", "loadbalancer.etcd.revision": "\(revision)",
                    "loadbalancer.etcd.pages": "\(listing.pages)", "loadbalancer.instances": "\(set.count)",
                ]
            )
            publish(set, invalid: invalid)
            return
        }
    }

    /// Publishes `set` (with what changed since the previous publish, when known), and the values
    /// that are not instances in band, if any (not those that say their instance is not serving).
    private func publish(
        _ set: [Instance], changes: (upserted: [Instance], removed: [String])? = nil, invalid: [String: [UInt8]]
    ) {
        let reasons = invalid.sorted { $0.key < $1.key }.compactMap { key, value -> String? in
            do {
                _ = try Instance(registryValue: value, options: valueOptions)
                return key
            } catch let error as InstanceParseError where error.code == .notServing {
                return nil
            } catch {
                return "\(key): \(error)"
            }
        }
        if let changes {
            broadcaster.publish(set, upserted: changes.upserted, removed: changes.removed, invalid: reasons)
        } else {
            broadcaster.publish(set, invalid: reasons)
        }
    }

    /// Applies a watch batch and publishes the new set, with what the batch changed in it (the
    /// table keeps the set ordered by id as events change it: no sort per batch).
    private func apply(_ batch: EtcdWatchBatch) {
        let parsed = batch.events.map { event in event.kind == .put ? parse(event.keyValue) : nil }
        typealias Changed = (set: [Instance], changes: (upserted: [Instance], removed: [String]), invalid: [String: [UInt8]])
        let changed: Changed? = state.withLock { table in
            table.apply(batch, parsed: parsed) ? (table.ordered, table.takeChanges(), table.invalid) : nil
        }
        if let changed {
            logger.debug(
                "etcd instances changed",
                metadata: [
                    "loadbalancer.etcd.prefix": "\(prefix)", "loadbalancer.instances": "\(changed.set.count)",
                    "loadbalancer.changed": "\(changed.changes.upserted.count + changed.changes.removed.count)",
                ]
            )
            publish(changed.set, changes: changed.changes, invalid: changed.invalid)
        }
    }

    private func parse(_ kv: EtcdKeyValue) -> Instance? {
        do {
            return try Instance(registryValue: kv.value, options: valueOptions)
        } catch  where error.code == .notServing {
            logger.debug(
                "leaving out an etcd value whose instance is not serving",
                metadata: ["loadbalancer.etcd.key": "\(kv.key)", "loadbalancer.error": "\(error)"]
            )
            return nil
        } catch {
            logger.warning(
                "skipping an etcd value that is not an instance",
                metadata: ["loadbalancer.etcd.key": "\(kv.key)", "loadbalancer.error": "\(error)"]
            )
            return nil
        }
    }

    private func report(_ error: any Error) {
        core.report(error, unavailable: (error as? EtcdError)?.code == .unavailable, message: "etcd watch of \(prefix) failed")
    }
}
