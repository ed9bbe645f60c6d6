import LoadBalancer
import Logging
import ServiceLifecycle
import Synchronization

/// Registers one instance in ZooKeeper for as long as it runs: an ephemeral sequential node under
/// `path` (parents created as needed) whose data is `Instance.registryJSON`.
///
/// The node lives as long as the client's session: if the process dies, the server deletes it
/// when the session times out. After a session expiry the registrar creates the node again in the
/// new session. On graceful shutdown or cancellation it deletes the node.
public final class ZooKeeperRegistrar: Service {
    /// The registered instance.
    public let instance: Instance
    /// The parent node, for example `/services/api`.
    public let path: String
    private let client: ZooKeeperClient
    private let backoff: Backoff
    private let logger: Logger
    private let node = Mutex<String?>(nil)

    /// Creates a registrar; nothing is created until ``run()``.
    ///
    /// - Parameters:
    ///   - instance: What to register.
    ///   - path: The parent node publishers read, for example `/services/api`.
    ///   - client: The ZooKeeper client (run it too).
    ///   - backoff: The pause between attempts after a failure. Default 100 ms doubling to 2 s.
    ///   - logger: Where to log. Default: nowhere.
    public init(
        instance: Instance,
        path: String,
        client: ZooKeeperClient,
        backoff: Backoff = Backoff(base: .milliseconds(100), cap: .seconds(2)),
        logger: Logger = Logger(label: "loadbalancer.zookeeper", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.instance = instance
        self.path = path
        self.client = client
        self.backoff = backoff
        self.logger = logger
    }

    /// The registered node's path, while registered.
    public var registeredNode: String? { node.withLock { $0 } }

    /// Registers, and registers again after every session expiry, until cancelled or shut down;
    /// then deletes the node.
    public func run() async throws {
        let events = client.events()
        let state = { @Sendable in (events: events.makeAsyncIterator(), needed: true) }
        await WatchLoop(backoff: backoff).run(state: state) { state, _ in
            if state.needed, self.client.isConnected {
                do {
                    let created = try await registerToTheEnd {
                        try await self.client.create(
                            ZooKeeperPath.join(self.path, "instance-"),
                            data: Array(self.instance.registryJSON.utf8),
                            mode: .ephemeralSequential,
                            createParents: true
                        )
                    }
                    self.node.withLock { $0 = created }
                    state.needed = false
                    self.logger.info("registered in ZooKeeper", metadata: ["loadbalancer.zookeeper.path": "\(created)"])
                    return .succeeded()
                } catch let error as ZooKeeperError where error.code == .closed {
                    return .stop() // the client was shut down: nothing more to register with
                } catch {
                    if Task.isCancelled { return .stop() }
                    self.logger.warning("ZooKeeper registration failed", metadata: ["loadbalancer.error": "\(error)"])
                    return .failed()
                }
            }
            guard let event = await state.events.next() else { return .stop() }
            switch event {
            case .connected(_, let newSession):
                // A new session has none of the old one's ephemeral nodes.
                if newSession || self.node.withLock({ $0 }) == nil { state.needed = true }
            case .sessionExpired:
                self.node.withLock { $0 = nil }
                state.needed = true
            case .disconnected, .connectFailed, .watch:
                break
            }
            return .again
        }
        await deregister()
    }

    /// Deletes the node, even when ``run()`` was cancelled.
    private func deregister() async {
        let created = node.withLock { $0.take() }
        await deregisterToTheEnd(
            created, logger: logger, metadata: ["loadbalancer.zookeeper.path": "\(created ?? path)"],
            done: "deregistered from ZooKeeper", failed: "ZooKeeper deregistration failed; the node goes with the session"
        ) { [client] created in try await client.delete(created) }
    }
}
