import LoadBalancer
import Logging
import ServiceLifecycle
import Synchronization

/// Publishes the instances registered in etcd under a key prefix.
///
/// Each key under the prefix is one instance; its value is `host:port` or the JSON object that
/// `Instance.init(registryValue:)` reads (``EtcdRegistrar`` writes that form). A value that
/// parses as neither is logged and skipped, never fatal.
///
/// ``run()`` lists the prefix, then watches it from the revision after the list. After a broken
/// stream (a member died, lost its leader, or the connection dropped) it watches again from the
/// revision after the last one it saw, on the next member, so no change is lost or seen twice.
/// When etcd has compacted that revision away, it lists again. Between attempts it backs off
/// (jittered, exponential, capped). While etcd is unreachable the last good set stays published,
/// with the error in band.
public final class EtcdPublisher: InstancePublisher, Service {
    /// The key prefix watched, for example `/services/api/`.
    public let prefix: String
    private let client: EtcdClient
    private let broadcaster: InstanceBroadcaster
    private let backoff: Backoff
    private let logger: Logger
    private let state = Mutex(EtcdInstanceTable())

    /// Creates a publisher; nothing is read until ``run()``.
    ///
    /// - Parameters:
    ///   - prefix: The key prefix; every key that starts with it is an instance.
    ///   - client: The etcd client (run it too).
    ///   - staleness: What to do with the last good set while etcd fails. Default: keep it.
    ///   - backoff: The pause between attempts after a failure. Default 100 ms doubling to 5 s.
    ///   - logger: Where to log. Default: nowhere.
    public init(
        prefix: String,
        client: EtcdClient,
        staleness: StalenessPolicy = .keepLastGood,
        backoff: Backoff = Backoff(base: .milliseconds(100), cap: .seconds(5)),
        logger: Logger = Logger(label: "loadbalancer.etcd", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.prefix = prefix
        self.client = client
        self.broadcaster = InstanceBroadcaster(staleness: staleness)
        self.backoff = backoff
        self.logger = logger
    }

    /// A new subscription: the current set first (once the first list is in), then every change.
    public func updates() -> InstanceUpdates { broadcaster.updates() }

    /// Lists and watches until cancelled or shut down; then ends the subscriptions.
    public func run() async {
        await cancelWhenGracefulShutdown {
            var failures = 0
            var generator = SystemRandomNumberGenerator()
            while !Task.isCancelled {
                do {
                    try await self.listAndWatch(onProgress: { failures = 0 })
                } catch {
                    if Task.isCancelled { break }
                    failures += 1
                    self.report(error)
                }
                let delay = self.backoff.delay(forRetry: max(0, failures - 1), random: generator.next())
                do { try await Task.sleep(for: delay) } catch { break }
            }
        }
        broadcaster.finish()
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
        } catch where error.code == .compacted {
            logger.info(
                "etcd compacted past the watched revision; listing again",
                metadata: ["loadbalancer.etcd.prefix": "\(prefix)", "loadbalancer.etcd.revision": "\(start)"]
            )
            state.withLock { $0.nextRevision = nil }
            try await list()
            onProgress()
        }
    }

    /// Reads the whole prefix and publishes it.
    private func list() async throws(EtcdError) {
        let range = try await client.range(prefix: prefix)
        let set = state.withLock { table in
            table.reset(to: range, parse: parse)
            return table.ordered
        }
        logger.debug(
            "etcd instances listed",
            metadata: [
                "loadbalancer.etcd.prefix": "\(prefix)", "loadbalancer.etcd.revision": "\(range.revision)",
                "loadbalancer.instances": "\(set.count)",
            ]
        )
        broadcaster.publish(set)
    }

    /// Applies a watch batch and publishes the new set.
    private func apply(_ batch: EtcdWatchBatch) {
        let parsed = batch.events.map { event in event.kind == .put ? parse(event.keyValue) : nil }
        let set: [Instance]? = state.withLock { table in
            table.apply(batch, parsed: parsed) ? table.ordered : nil
        }
        if let set {
            logger.debug(
                "etcd instances changed",
                metadata: ["loadbalancer.etcd.prefix": "\(prefix)", "loadbalancer.instances": "\(set.count)"]
            )
            broadcaster.publish(set)
        }
    }

    private func parse(_ kv: EtcdKeyValue) -> Instance? {
        do {
            return try Instance(registryValue: kv.value)
        } catch {
            logger.warning(
                "skipping an etcd value that is not an instance",
                metadata: ["loadbalancer.etcd.key": "\(kv.key)", "loadbalancer.error": "\(error)"]
            )
            return nil
        }
    }

    private func report(_ error: any Error) {
        logger.warning(
            "etcd discovery failed; keeping the last good set",
            metadata: ["loadbalancer.etcd.prefix": "\(prefix)", "loadbalancer.error": "\(error)"]
        )
        let code: DiscoveryError.Code = (error as? EtcdError)?.code == .unavailable ? .registryUnavailable : .other
        broadcaster.fail(DiscoveryError(code: code, message: "etcd watch of \(prefix) failed", cause: error))
    }
}
