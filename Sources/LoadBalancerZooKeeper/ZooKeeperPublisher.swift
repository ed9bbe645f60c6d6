import LoadBalancer
import Logging
import ServiceLifecycle

/// Publishes the instances registered as children of a ZooKeeper node (go-kit's ZooKeeper
/// publisher, with its semantics kept).
///
/// Each child's data is one instance: `host:port` or the JSON object that
/// ``Instance/init(registryValue:)`` reads (``ZooKeeperRegistrar`` writes that form). A child whose
/// data is neither is logged and skipped, never fatal.
///
/// ``run()`` creates the parent path when it is missing, reads the children with a child watch and
/// each child's data with a data watch, and reads again after every watch event, which re-arms
/// the watches. After a reconnection within the session the client sets the watches again; after
/// a session expiry the client starts a new session and this publisher reads everything again.
/// Failures back off and keep the last good set, with the error in band.
public final class ZooKeeperPublisher: InstancePublisher, Service {
    /// The parent node, for example `/services/api`.
    public let path: String
    private let client: ZooKeeperClient
    private let broadcaster: InstanceBroadcaster
    private let backoff: Backoff
    private let logger: Logger

    public init(
        path: String,
        client: ZooKeeperClient,
        staleness: StalenessPolicy = .keepLastGood,
        backoff: Backoff = Backoff(base: .milliseconds(100), cap: .seconds(5)),
        logger: Logger = Logger(label: "loadbalancer.zookeeper", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.path = path
        self.client = client
        self.broadcaster = InstanceBroadcaster(staleness: staleness)
        self.backoff = backoff
        self.logger = logger
    }

    public func updates() -> InstanceUpdates { broadcaster.updates() }

    /// Reads and watches until cancelled or shut down; then ends the subscriptions.
    public func run() async {
        let events = client.events()
        await cancelWhenGracefulShutdown {
            var iterator = events.makeAsyncIterator()
            var failures = 0
            var generator = SystemRandomNumberGenerator()
            var stale = true
            while !Task.isCancelled {
                if stale, self.client.isConnected {
                    do {
                        try await self.refresh()
                        stale = false
                        failures = 0
                    } catch {
                        failures += 1
                        self.report(error)
                        let delay = self.backoff.delay(forRetry: failures - 1, random: generator.next())
                        do { try await Task.sleep(for: delay) } catch { break }
                        continue
                    }
                }
                guard let event = await iterator.next() else { break }
                switch event {
                case .connected:
                    stale = true
                case .disconnected:
                    self.report(ZooKeeperError(code: .connectionLoss, message: "disconnected from ZooKeeper"))
                case .sessionExpired:
                    stale = true
                case .watch(let watch):
                    if watch.path == self.path || ZooKeeperPath.parent(watch.path) == self.path { stale = true }
                }
            }
        }
        broadcaster.finish()
    }

    /// Reads the children and their data (arming the watches) and publishes the set.
    private func refresh() async throws(ZooKeeperError) {
        if try await client.exists(path) == nil {
            do {
                try await client.create(path, createParents: true)
            } catch where error.code == .nodeExists {
                // Created meanwhile: fine.
            }
        }
        let (children, _) = try await client.getChildren(path, watch: true)
        var instances: [(String, Instance)] = []
        for child in children {
            let childPath = ZooKeeperPath.join(path, child)
            let data: [UInt8]
            do {
                data = try await client.getData(childPath, watch: true).data
            } catch where error.code == .noNode {
                continue  // deleted since the listing: the child watch fires for it
            }
            do {
                instances.append((child, try Instance(registryValue: data)))
            } catch {
                logger.warning(
                    "skipping a ZooKeeper node that is not an instance",
                    metadata: ["loadbalancer.zookeeper.path": "\(childPath)", "loadbalancer.error": "\(error)"]
                )
            }
        }
        let set = instances.sorted { $0.0 < $1.0 }.map(\.1)
        logger.debug(
            "ZooKeeper instances read",
            metadata: ["loadbalancer.zookeeper.path": "\(path)", "loadbalancer.instances": "\(set.count)"]
        )
        broadcaster.publish(set)
    }

    private func report(_ error: any Error) {
        logger.warning(
            "ZooKeeper discovery failed; keeping the last good set",
            metadata: ["loadbalancer.zookeeper.path": "\(path)", "loadbalancer.error": "\(error)"]
        )
        let code: DiscoveryError.Code = (error as? ZooKeeperError)?.code == .connectionLoss ? .registryUnavailable : .other
        broadcaster.fail(DiscoveryError(code: code, message: "ZooKeeper read of \(path) failed", cause: error))
    }
}
