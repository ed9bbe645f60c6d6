import LoadBalancer
import Logging
import ServiceLifecycle
import Synchronization

#if canImport(Darwin)
    import Darwin
#elseif canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Registers one instance in ZooKeeper for as long as it runs: an ephemeral node under `path`
/// (parents created as needed) whose data is the instance in ``format``.
///
/// The node is named as the stack that reads the format expects: an ephemeral sequential
/// `member_NNNNNNNNNN` for a Finagle / Aurora ServerSet (`.serverSet`); an ephemeral node named
/// by the instance id for Apache Curator (`.curator`, where `path` is `basePath/serviceName`, the
/// last segment the Curator `name`, and the id must be a valid node name); an ephemeral
/// sequential `instance-NNNNNNNNNN` otherwise. A Curator node left by an earlier session under
/// the same id is replaced.
///
/// The node and the parents it creates get the ACL ``acl`` names, else the client's
/// (``ZooKeeperConfiguration/defaultACL``: with credentials, the creator may do everything and
/// everyone may read). ZooKeeper checks the permission to delete a node on its *parent*: a parent
/// that lets anyone delete (one created before credentials were set, `world:anyone` with every
/// permission) leaves the registration open to deletion by anyone, and the registrar logs a
/// warning saying so (``ZooKeeperClient/setACL(_:acl:version:)`` fixes it).
///
/// The node lives as long as the client's session: if the process dies, the server deletes it
/// when the session times out. After a session expiry the registrar creates the node again in the
/// new session. On graceful shutdown or cancellation it deletes the node.
public final class ZooKeeperRegistrar: Service {
    /// The registered instance.
    public let instance: Instance
    /// The parent node, for example `/services/api`.
    public let path: String
    /// The form of the node's data (`RegistryValueFormat.json` unless chosen).
    public let format: RegistryValueFormat
    /// The ACL of the node and of the parents the registrar creates; `nil`: the client's
    /// (``ZooKeeperConfiguration/defaultACL``).
    public let acl: [ZooKeeperACL]?
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
    ///   - format: The form of the node's data, for the stacks that read it: this library's JSON
    ///     (the default), `host:port` or a URL for go-kit, `.serverSet` for Finagle and Aurora,
    ///     `.curator` for Apache Curator and Spring Cloud ZooKeeper.
    ///   - acl: The ACL of the node and of the parents the registrar creates. Default: the
    ///     client's (``ZooKeeperConfiguration/defaultACL``).
    ///   - backoff: The pause between attempts after a failure. Default 100 ms doubling to 2 s.
    ///   - logger: Where to log. Default: nowhere.
    public init(
        instance: Instance,
        path: String,
        client: ZooKeeperClient,
        format: RegistryValueFormat = .json,
        acl: [ZooKeeperACL]? = nil,
        backoff: Backoff = Backoff(base: .milliseconds(100), cap: .seconds(2)),
        logger: Logger = Logger(label: "loadbalancer.zookeeper", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.instance = instance
        self.path = path
        self.format = format
        self.acl = acl
        self.client = client
        self.backoff = backoff
        self.logger = logger
    }

    /// The registered node's path, while registered.
    public var registeredNode: String? { node.withLock { $0 } }

    /// Registers, and registers again after every session expiry, until cancelled or shut down;
    /// then deletes the node.
    ///
    /// - Throws: ``ZooKeeperError`` with code ``ZooKeeperError/Code/invalidArgument`` at once when
    ///   the instance cannot be registered in ``format`` at all (a Curator id holding '/'): no
    ///   retry could succeed.
    public func run() async throws {
        if format == .curator, instance.id.contains("/") {
            let error = Self.curatorIDError(instance.id)
            logger.error("ZooKeeper registration impossible", metadata: ["loadbalancer.error": "\(error)"])
            throw error
        }
        let events = client.events()
        let state = { @Sendable in (events: events.makeAsyncIterator(), needed: true) }
        await WatchLoop(backoff: backoff).run(state: state) { state, _ in
            if state.needed, self.client.isConnected {
                do {
                    let created = try await registerToTheEnd { try await self.createNode() }
                    self.node.withLock { $0 = created }
                    state.needed = false
                    self.logger.info("registered in ZooKeeper", metadata: ["loadbalancer.zookeeper.path": "\(created)"])
                    await self.warnIfTheParentLetsAnyoneDelete()
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

    /// Logs a warning when the node is meant to be protected (its ACL is not open to everyone) but
    /// its parent lets anyone delete its children: ZooKeeper checks deletion on the parent.
    private func warnIfTheParentLetsAnyoneDelete() async {
        let nodeACL = acl ?? client.configuration.defaultACL
        let open = { (acl: [ZooKeeperACL]) in acl.contains { $0.id == .anyone && $0.permissions.contains(.delete) } }
        guard !open(nodeACL), let parentACL = try? await client.getACL(path).acl, open(parentACL) else { return }
        logger.warning(
            "the ZooKeeper registration is not protected: its parent lets anyone delete its children",
            metadata: [
                "loadbalancer.zookeeper.path": "\(path)",
                "loadbalancer.zookeeper.acl": "\(parentACL.map(\.description).joined(separator: ", "))",
            ])
    }

    /// Why an instance whose id holds '/' cannot be registered in the Curator form.
    private static func curatorIDError(_ id: String) -> ZooKeeperError {
        ZooKeeperError(
            code: .invalidArgument, message: "a Curator instance's node is named by its id, which must not contain '/': \"\(id)\"")
    }

    /// Creates the node, in the mode and under the name ``format`` calls for.
    private func createNode() async throws(ZooKeeperError) -> String {
        let data = Array(
            instance.registryValue(
                in: format, serviceName: ZooKeeperPath.lastSegment(path), registrationTime: wallClockMilliseconds()
            ).utf8)
        guard format == .curator else {
            let prefix = format == .serverSet ? "member_" : "instance-"
            return try await client.create(
                ZooKeeperPath.join(path, prefix), data: data, mode: .ephemeralSequential, acl: acl, createParents: true)
        }
        guard !instance.id.contains("/") else { throw Self.curatorIDError(instance.id) }
        let node = ZooKeeperPath.join(path, instance.id)
        do {
            return try await client.create(node, data: data, mode: .ephemeral, acl: acl, createParents: true)
        } catch  where error.code == .nodeExists {
            // Left by an earlier session (not yet expired) or by this one before a lost reply:
            // this registration replaces it.
            do {
                try await client.delete(node)
            } catch  where error.code == .noNode {
                // Gone meanwhile: fine.
            }
            return try await client.create(node, data: data, mode: .ephemeral, acl: acl, createParents: true)
        }
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

/// The wall clock, in milliseconds since 1970-01-01 UTC (Curator's `registrationTimeUTC`).
func wallClockMilliseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
}
