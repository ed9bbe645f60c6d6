import LoadBalancer
import Logging
import ServiceLifecycle
import Synchronization

/// Publishes the instances registered as children of a ZooKeeper node (go-kit's ZooKeeper
/// publisher, with its semantics kept).
///
/// Each child's data is one instance, in one of the forms `Instance.init(registryValue:options:)`
/// reads: `host:port`, a go-kit URL (`http://host:port`), this library's JSON object (what
/// ``ZooKeeperRegistrar`` writes by default), a Finagle / Aurora ServerSet member (`member_...`
/// nodes) or an Apache Curator service instance (the children of `basePath/serviceName`). A child
/// whose data is in none of these forms is left out and reported in band, never fatal: the update
/// carries the good instances and a `DiscoveryError` with code `invalidInstances` naming the bad
/// children (as the static, DNS and Consul publishers do). A child that says its instance is not
/// serving (a ServerSet member not `ALIVE`, a disabled Curator instance) is left out without
/// being reported. A child whose ACL does not let this client read it is left out and reported in
/// the same way (its error says which permission is missing): the client's credentials
/// (``ZooKeeperConfiguration/credentials``) are what ACLs that grant `read` to a user name.
///
/// ``run()`` creates the parent path when it is missing. On ZooKeeper 3.6 and later it sets a
/// persistent recursive watch on the path (``ZooKeeperClient/addWatch(_:mode:)``) first, then lists
/// the children (with a child watch) and reads each child's data once (64 reads in flight at a
/// time). From then on it takes the events in batches (every event that came while it read) and
/// reads once per batch: a child created or changed is read (its data, one request), a child
/// deleted is removed (no request); events of deeper nodes are ignored, and the deletion of the
/// path itself reads everything again (as the parent is created again, the set is empty). Each
/// change is published as what changed (`upserted`, `removed`), so an `EndpointCache` applies it
/// without a diff of the whole set.
///
/// The child watch is there for the children the persistent watch does not report: servers with
/// the fix of CVE-2024-23944 send a persistent watch no event of a node whose ACL does not let the
/// session read it. When it fires, the children are listed again (which sets it again), and a
/// child that appeared is read (and, unreadable, reported as below). That listing costs the
/// whole list of names, so it waits up to ten times what the last one took (at most a second);
/// the changes the persistent watch reported are published meanwhile.
///
/// On an older server (which answers ``ZooKeeperError/Code/unimplemented``) it watches as
/// go-kit's publisher does: the children with a child watch and each child's data with a data
/// watch; after an event it reads what changed (the list of children and the new children's data,
/// or the one child whose data changed), which re-arms the watch that fired, so a change of the
/// children costs a listing of all of them.
///
/// After a reconnection (the client sets the watches again, but ZooKeeper does not replay what a
/// persistent watch missed meanwhile) and after a session expiry (the client starts a new session)
/// this publisher reads everything again. Failures back off and keep the last good set, with the
/// error in band. When ``run()`` returns, the persistent watch is removed.
///
/// When ZooKeeper cannot be reached (at start-up too, before any session), each failed connection
/// attempt of the client (``ZooKeeperEvent/connectFailed(_:)``, within
/// ``ZooKeeperConfiguration/connectTimeout``) is published as an update carrying a
/// `registryUnavailable` error; the set is read as soon as a session is up.
/// When the client is closed, the publisher publishes a last update with a
/// `closed` error, then ends its subscriptions.
public final class ZooKeeperPublisher: InstancePublisher, Service {
    /// The parent node, for example `/services/api`.
    public let path: String
    private let client: ZooKeeperClient
    private let core: WatchingPublisherCore
    private var broadcaster: InstanceBroadcaster { core.broadcaster }
    private var logger: Logger { core.logger }
    /// How children's data is read (which ServerSet endpoint, for one).
    public let valueOptions: RegistryValueOptions
    /// The ACL of the parent path when the publisher creates it; `nil`: the client's
    /// (``ZooKeeperConfiguration/defaultACL``).
    public let acl: [ZooKeeperACL]?
    /// Whether ``run()`` tries a persistent recursive watch first (tests turn it off to exercise
    /// the watches of servers before 3.6).
    private let tryPersistentWatch: Bool
    /// Whether the publisher watches with a persistent recursive watch now (for tests).
    package var usesPersistentWatch: Bool { persistent.load(ordering: .relaxed) }
    private let persistent = Atomic<Bool>(false)

    /// Creates a publisher; nothing is read until ``run()``.
    ///
    /// - Parameters:
    ///   - path: The parent node whose children are the instances.
    ///   - client: The ZooKeeper client (run it too).
    ///   - backoff: The pause between attempts after a failure. Default 100 ms doubling to 5 s.
    ///   - staleness: What to do with the last good set while ZooKeeper fails. Default: keep it.
    ///   - valueOptions: How children's data is read, for example which ServerSet endpoint to use.
    ///     Default: `RegistryValueOptions.defaults`.
    ///   - acl: The ACL of the parent path when the publisher creates it. Default: the client's
    ///     (``ZooKeeperConfiguration/defaultACL``; with credentials, only this user may then create
    ///     children: give registrars of other users `create`, or create the path beforehand).
    ///   - logger: Where to log. Default: nowhere.
    public convenience init(
        path: String,
        client: ZooKeeperClient,
        backoff: Backoff = Backoff(base: .milliseconds(100), cap: .seconds(5)),
        staleness: StalenessPolicy = .keepLastGood,
        valueOptions: RegistryValueOptions = .defaults,
        acl: [ZooKeeperACL]? = nil,
        logger: Logger = Logger(label: "loadbalancer.zookeeper", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.init(
            path: path, client: client, backoff: backoff, staleness: staleness, valueOptions: valueOptions, acl: acl, logger: logger,
            persistentWatch: true)
    }

    /// A publisher that, with `persistentWatch` false, never tries a persistent watch: it watches
    /// as it does on servers before 3.6 (for tests).
    package init(
        path: String,
        client: ZooKeeperClient,
        backoff: Backoff = Backoff(base: .milliseconds(100), cap: .seconds(5)),
        staleness: StalenessPolicy = .keepLastGood,
        valueOptions: RegistryValueOptions = .defaults,
        acl: [ZooKeeperACL]? = nil,
        logger: Logger = Logger(label: "loadbalancer.zookeeper", factory: { _ in SwiftLogNoOpLogHandler() }),
        persistentWatch: Bool
    ) {
        self.path = path
        self.client = client
        self.valueOptions = valueOptions
        self.acl = acl
        self.tryPersistentWatch = persistentWatch
        self.core = WatchingPublisherCore(
            backoff: backoff, staleness: staleness, logger: logger, metadata: ["loadbalancer.zookeeper.path": "\(path)"])
    }

    /// A new subscription: the current set first (once the first read is in), then every change.
    public func updates() -> InstanceUpdates { broadcaster.updates() }

    /// What must be read again.
    private struct Work {
        /// Everything: at the start, after a reconnection and after a session expiry.
        var everything = true
        /// The list of children (their set changed), once ``listingDue`` has come.
        var children = false
        /// When the list of children is to be read (set when ``children`` becomes true).
        var listingDue = ContinuousClock.Instant.now
        /// Children whose data changed (or, under a persistent watch, that were created).
        var data: Set<String> = []
        /// Children deleted (under a persistent watch: the event says which).
        var removed: Set<String> = []

        /// Whether something is to be read now (else the loop waits for events, or for
        /// ``listingDue``).
        func isDue(at now: ContinuousClock.Instant) -> Bool {
            everything || !data.isEmpty || !removed.isEmpty || (children && listingDue <= now)
        }

        /// Notes that the children are to be listed, `pause` from now at the latest (a listing
        /// already pending keeps its time).
        mutating func listChildren(after pause: Duration) {
            listChildren(at: .now + pause)
        }

        /// Notes that the children are to be listed at `due` at the latest.
        mutating func listChildren(at due: ContinuousClock.Instant) {
            listingDue = children ? min(listingDue, due) : due
            children = true
        }
    }

    /// How the publisher watches.
    enum WatchMode: Sendable {
        /// Not known yet: a persistent recursive watch is tried at the next full read.
        case undecided
        /// One persistent recursive watch on the path (ZooKeeper 3.6+).
        case persistentRecursive
        /// A child watch on the path and a data watch on each child (servers before 3.6).
        case oneShot
    }

    /// The children read so far: the instances by child name (kept ordered by id as children come
    /// and go, so a change costs no sort of the set) and the children that are not instances.
    struct Children: Sendable {
        var instances = KeyedInstanceTable()
        var failed: [String: InstanceParseError] = [:]
        /// Whether the table was made anew since the last publish (then what changed is not known).
        var isNew = true

        func contains(_ name: String) -> Bool { instances[name] != nil || failed[name] != nil }

        /// Every child's name.
        var names: [String] { Array(instances.byKey.keys) + Array(failed.keys) }

        mutating func set(_ name: String, to read: Result<Instance, InstanceParseError>) {
            switch read {
            case .success(let instance):
                failed.removeValue(forKey: name)
                instances.set(name, to: instance)
            case .failure(let error):
                instances.set(name, to: nil)
                failed[name] = error
            }
        }

        mutating func remove(_ name: String) {
            instances.set(name, to: nil)
            failed.removeValue(forKey: name)
        }
    }

    /// Reads and watches until cancelled or shut down, or until the client is closed (then it
    /// publishes a `closed` error first); then ends the subscriptions.
    public func run() async throws {
        let events = client.eventQueue()
        let mode: WatchMode = tryPersistentWatch ? .undecided : .oneShot
        let state = { @Sendable in
            (work: Work(), known: Children(), mode: mode, listing: Duration.zero)
        }
        // However the loop ends: the subscription and the persistent watch go (without waiting for
        // the server).
        defer {
            client.endEvents(events)
            client.releaseWatch(path, holder: ObjectIdentifier(self))
            persistent.store(false, ordering: .relaxed)
        }
        await core.run(state: state) { state, _ in
            // What came during the last read first (the `connected` of the subscription, before
            // the first): one read for all of it.
            for event in events.available() {
                self.take(event, into: &state.work, mode: state.mode, listingPause: Self.listingPause(after: state.listing))
            }
            let connected = self.client.isConnected
            if connected, state.work.isDue(at: .now) {
                do {
                    try await self.read(&state.work, into: &state.known, mode: &state.mode, listing: &state.listing, events: events)
                    return .succeeded()
                } catch let error as ZooKeeperError where error.code == .closed {
                    return self.closed(by: error)
                } catch {
                    if Task.isCancelled { return .stop() }
                    state.work.everything = true
                    self.report(error)
                    return .failed()
                }
            }
            // Every event that came meanwhile at once: a burst costs one read. A listing put off
            // (see `listingPause(after:)`) ends the wait when it is due.
            let due = connected && state.work.children ? state.work.listingDue : nil
            guard let batch = await events.next(until: due) else {
                return Task.isCancelled ? .stop() : self.closed(by: ZooKeeperError(code: .closed, message: "the client stopped"))
            }
            for event in batch {
                self.take(event, into: &state.work, mode: state.mode, listingPause: Self.listingPause(after: state.listing))
            }
            return .again
        }
    }

    /// How long a listing of the children may wait after a child watch fired, under a persistent
    /// recursive watch: ten times what the last listing took, at most a second. The persistent
    /// watch has already said which children came, went or changed; the listing is there for the
    /// children it does not report (those whose ACL does not let this session read them), and
    /// it re-arms the child watch. Put off so, listings take at most about a tenth of the
    /// publisher's time however fast children come and go, and each costs the whole list (10,000
    /// names at 10,000 instances).
    static func listingPause(after listing: Duration) -> Duration {
        min(listing * 10, .seconds(1))
    }

    /// The step that ends the loop when the client was shut down.
    private func closed(by error: ZooKeeperError) -> WatchStep {
        .clientShutDown("ZooKeeper", watching: path, cause: error)
    }

    /// Notes what `event` makes necessary to read again.
    private func take(_ event: ZooKeeperEvent, into work: inout Work, mode: WatchMode, listingPause: Duration) {
        switch event {
        case .connected, .sessionExpired:
            work.everything = true
        case .disconnected:
            report(ZooKeeperError(code: .connectionLoss, message: "disconnected from ZooKeeper"))
        case .connectFailed(let error):
            report(error)
        case .watch(let watch) where mode == .persistentRecursive:
            if watch.path == path {
                switch watch.kind {
                case .nodeDeleted:
                    work.everything = true // the parent is gone: created again, empty
                case .nodeChildrenChanged:
                    // The child watch beside the persistent one: a child came or went that the
                    // persistent watch may not have reported (one this session may not read).
                    work.listChildren(after: listingPause)
                default:
                    break
                }
            } else if ZooKeeperPath.parent(watch.path) == path {
                // A direct child; the last event of a child decides what is done with it.
                let name = String(watch.path.dropFirst(path == "/" ? 1 : path.count + 1))
                switch watch.kind {
                case .nodeCreated, .nodeDataChanged:
                    work.data.insert(name)
                    work.removed.remove(name)
                case .nodeDeleted:
                    work.removed.insert(name)
                    work.data.remove(name)
                default:
                    break
                }
            }
        // Else a deeper node (below a child): not an instance, left alone.
        case .watch(let watch):
            if watch.path == path {
                work.listChildren(after: .zero)
            } else if ZooKeeperPath.parent(watch.path) == path {
                let name = String(watch.path.dropFirst(path == "/" ? 1 : path.count + 1))
                if watch.kind == .nodeDataChanged { work.data.insert(name) } else { work.listChildren(after: .zero) }
            }
        }
    }

    /// Does the `work` that is due (arming the watches it reads with, or under a persistent watch
    /// reading the children's data without watches) and publishes the set; a listing not due yet
    /// stays in `work`. `listing` is how long the last listing took; `events`, the subscription:
    /// of what it holds at a listing's answer, the creations and data changes are read in the same
    /// round, the rest is left in `work` for the next.
    private func read(
        _ work: inout Work, into known: inout Children, mode: inout WatchMode, listing: inout Duration, events: ZooKeeperEventQueue
    ) async throws(ZooKeeperError) {
        if work.everything {
            if try await client.exists(path) == nil {
                do {
                    try await client.create(path, acl: acl, createParents: true)
                } catch  where error.code == .nodeExists {
                    // Created meanwhile: fine.
                }
            }
            if mode != .oneShot {
                // The watch first, then the listing: nothing that changes after the listing is
                // missed, and an event for what the listing already saw costs one harmless read.
                do {
                    try await client.holdWatch(path, mode: .persistentRecursive, holder: ObjectIdentifier(self))
                    mode = .persistentRecursive
                    persistent.store(true, ordering: .relaxed)
                } catch  where error.code == .unimplemented {
                    mode = .oneShot
                    logger.notice(
                        "ZooKeeper has no persistent watches (a server before 3.6): watching with child and data watches",
                        metadata: ["loadbalancer.zookeeper.path": "\(path)", "loadbalancer.error": "\(error)"])
                }
            }
            known = Children()
        }
        let watchEach = mode != .persistentRecursive
        var toRead = work.data
        // What the events queued at the listing's answer leave for the next round.
        var later = Work(everything: false)
        let list = work.everything || (work.children && work.listingDue <= .now)
        if list {
            // A child watch says only that the children changed: list them (the protocol has no
            // other way), and read the data of the new ones only. The child watch is set in every
            // mode: beside a persistent recursive watch it is what reports the children this
            // session may not read, of which servers with the fix of CVE-2024-23944 (3.8.4,
            // 3.9.2, Debian's 3.8.0-11+deb12u2) send no event. (The listing comes after the
            // persistent watch is set, so that the server records the child watch as such.)
            let start = ContinuousClock.now
            let (children, _) = try await client.getChildren(path, watch: true)
            listing = .now - start
            let current = Set(children)
            for name in known.names where !current.contains(name) { known.remove(name) }
            for name in children where !known.contains(name) { toRead.insert(name) }
            // The events queued now: those the server sent before this listing's answer (it sends
            // a session's events before its answers to later requests), and maybe some sent after
            // it. The children created or changed they name are read now, after the listing,
            // which covers either (rather than once by the listing and again for the event next
            // round); the rest (a deletion, the child watch's event, a new session) may be newer
            // than the listing and waits for the next round.
            for event in events.available() {
                take(event, into: &later, mode: mode, listingPause: Self.listingPause(after: listing))
            }
            toRead.formUnion(later.data)
            later.data = []
        } else {
            // A persistent watch's deletions: a listing, when there is one, already has them.
            for name in work.removed { known.remove(name) }
        }
        for (name, read) in try await readData(toRead.sorted(), watch: watchEach) {
            switch read {
            case .data(let data):
                known.set(name, to: parse(data, at: ZooKeeperPath.join(path, name)))
            case .deleted:
                known.remove(name) // deleted since the listing or the event: its own event follows
            case .unreadable(let error):
                // Its ACL does not let this client read it: left out and reported in band, as a
                // child that is not an instance is (the others are still published). A change of
                // its children set and a new session read it again.
                logger.warning(
                    "skipping a ZooKeeper node this client may not read",
                    metadata: ["loadbalancer.zookeeper.path": "\(ZooKeeperPath.join(path, name))", "loadbalancer.error": "\(error)"])
                known.set(name, to: .failure(InstanceParseError(code: .malformedValue, input: "", message: error.message, cause: error)))
            }
        }
        if work.children && !list {
            // Not due yet: it stays, with its time.
            later.listChildren(at: work.listingDue)
        }
        work = later
        let set = known.instances.ordered
        let invalid = known.failed.sorted { $0.key < $1.key }.compactMap { name, error -> String? in
            error.code == .notServing ? nil : "\(ZooKeeperPath.join(path, name)): \(error)"
        }
        let changes = known.instances.takeChanges()
        logger.debug(
            "ZooKeeper instances read",
            metadata: [
                "loadbalancer.zookeeper.path": "\(path)", "loadbalancer.instances": "\(set.count)",
                "loadbalancer.changed": "\(known.isNew ? set.count : changes.upserted.count + changes.removed.count)",
            ]
        )
        if known.isNew {
            // Read anew: what changed since the previous publish is not known.
            known.isNew = false
            broadcaster.publish(set, invalid: invalid)
        } else {
            broadcaster.publish(set, upserted: changes.upserted, removed: changes.removed, invalid: invalid)
        }
    }

    /// The most data reads in flight at once.
    static let readsInFlight = 64

    /// What reading one child's data gave.
    enum ChildRead: Sendable {
        /// Its data.
        case data([UInt8])
        /// Deleted since the listing.
        case deleted
        /// Its ACL does not let this client read it (`noAuth`).
        case unreadable(ZooKeeperError)
    }

    /// Reads the data of the children `names`, arming a data watch on each when `watch`, with up to
    /// ``readsInFlight`` requests in flight: the server answers a session's requests in order, so
    /// 10,000 children cost about 10,000 / 64 round trips instead of 10,000. Results in the order
    /// of `names`.
    private func readData(_ names: [String], watch: Bool) async throws(ZooKeeperError) -> [(name: String, read: ChildRead)] {
        let client = self.client
        let path = self.path
        do {
            return try await withThrowingTaskGroup(of: (Int, ChildRead).self) { group in
                var results = [ChildRead](repeating: .deleted, count: names.count)
                var next = 0
                func startNext() {
                    let index = next
                    let childPath = ZooKeeperPath.join(path, names[index])
                    next += 1
                    group.addTask {
                        do {
                            return (index, .data(try await client.getData(childPath, watch: watch).data))
                        } catch let error as ZooKeeperError where error.code == .noNode {
                            return (index, .deleted)
                        } catch let error as ZooKeeperError where error.code == .noAuth {
                            return (index, .unreadable(error))
                        }
                    }
                }
                while next < min(names.count, Self.readsInFlight) { startNext() }
                while let (index, read) = try await group.next() {
                    results[index] = read
                    if next < names.count { startNext() }
                }
                return Array(zip(names, results)).map { (name: $0.0, read: $0.1) }
            }
        } catch let error as ZooKeeperError {
            throw error
        } catch {
            throw ZooKeeperError(code: .cancelled, message: "the read of \(path)'s children was cancelled", cause: error)
        }
    }

    private func parse(_ data: [UInt8], at childPath: String) -> Result<Instance, InstanceParseError> {
        do {
            return .success(try Instance(registryValue: data, options: valueOptions))
        } catch  where error.code == .notServing {
            logger.debug(
                "leaving out a ZooKeeper node whose instance is not serving",
                metadata: ["loadbalancer.zookeeper.path": "\(childPath)", "loadbalancer.error": "\(error)"]
            )
            return .failure(error)
        } catch {
            logger.warning(
                "skipping a ZooKeeper node that is not an instance",
                metadata: ["loadbalancer.zookeeper.path": "\(childPath)", "loadbalancer.error": "\(error)"]
            )
            return .failure(error)
        }
    }

    private func report(_ error: any Error) {
        core.report(error, unavailable: (error as? ZooKeeperError)?.code == .connectionLoss, message: "ZooKeeper read of \(path) failed")
    }
}
