import LoadBalancer
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

#if !LB_ZOOKEEPER_NO_TLS
    import NIOSSL
#else
    /// Built without swift-nio-ssl (the sanitizer builds): no TLS context can exist.
    enum NIOSSLContext {}
#endif

/// What happens to a ``ZooKeeperClient``'s session and watches.
public enum ZooKeeperEvent: Sendable, Hashable {
    /// Connected to a server. `newSession` is true for the first session and for the one started
    /// after an expiry (ephemeral nodes and watches of the old one are gone); false after a
    /// reconnection within the same session (watches were set again).
    case connected(sessionID: Int64, newSession: Bool)
    /// The connection broke; the client is reconnecting. Requests fail with
    /// ``ZooKeeperError/Code/connectionLoss`` meanwhile.
    case disconnected
    /// A connection attempt failed while the client had no connection: the server could not be
    /// reached or did not answer the session handshake within
    /// ``ZooKeeperConfiguration/connectTimeout``, refused, or closed the connection before the
    /// handshake, failed the TLS handshake (the error says so), or refused the credentials (the
    /// error's code is ``ZooKeeperError/Code/authFailed``). Sent for each failed attempt, at
    /// start-up too (when no session has
    /// existed yet); the client tries the next server, pausing (jittered, up to 2 s) after each
    /// round of the ensemble.
    case connectFailed(ZooKeeperError)
    /// The server said the session has expired; the client starts a new one.
    case sessionExpired
    /// A watch fired. Watches set by reads are one-shot (read again with `watch: true` to re-arm
    /// one); those of ``ZooKeeperClient/addWatch(_:mode:)`` stay and fire again.
    case watch(ZooKeeperWatchEvent)

    /// Events are equal when their cases and values are; two ``connectFailed(_:)`` events are equal
    /// when their errors' codes and messages are (the cause is not compared).
    public static func == (lhs: ZooKeeperEvent, rhs: ZooKeeperEvent) -> Bool {
        switch (lhs, rhs) {
        case (.connected(let a, let b), .connected(let c, let d)): a == c && b == d
        case (.disconnected, .disconnected), (.sessionExpired, .sessionExpired): true
        case (.connectFailed(let a), .connectFailed(let b)): a.code == b.code && a.message == b.message
        case (.watch(let a), .watch(let b)): a == b
        default: false
        }
    }

    /// Hashes what `==` compares.
    public func hash(into hasher: inout Hasher) {
        switch self {
        case .connected(let session, let newSession):
            hasher.combine(0)
            hasher.combine(session)
            hasher.combine(newSession)
        case .disconnected:
            hasher.combine(1)
        case .connectFailed(let error):
            hasher.combine(2)
            hasher.combine(error.code)
            hasher.combine(error.message)
        case .sessionExpired:
            hasher.combine(3)
        case .watch(let event):
            hasher.combine(4)
            hasher.combine(event)
        }
    }
}

/// A ZooKeeper client over SwiftNIO, speaking ZooKeeper's binary protocol.
///
/// It keeps one session alive across connections: it connects to one server of the ensemble at a
/// time (shuffled order), pings at a third of the negotiated session timeout, and treats a
/// connection that stays quiet for two thirds of it as dead. On a new connection it presents its
/// session id and password and the last transaction id it has seen; within the same session it
/// sets its watches again (`SetWatches`; `SetWatches2` when it has persistent watches, see
/// ``addWatch(_:mode:)``), so changes made while it was away still fire (for one-shot watches:
/// persistent watches are set again without the changes they missed). When the
/// server says the session has expired, it starts a new session and says so
/// (``ZooKeeperEvent/sessionExpired``, then `connected(newSession: true)`).
///
/// With ``ZooKeeperConfiguration/credentials`` it authenticates on every connection before any
/// request, and counts as connected once the server has accepted the credentials; with
/// ``ZooKeeperConfiguration/tls`` it speaks TLS to the servers' secure client port (see
/// <doc:ZooKeeperSecurity>).
///
/// A frame that does not decode is an error that drops the connection, never a crash.
///
/// The client is a `Service`: ``run()`` keeps the session; requests made while disconnected fail
/// at once with ``ZooKeeperError/Code/connectionLoss``, and a request whose task is cancelled
/// returns at once with ``ZooKeeperError/Code/cancelled``, without waiting for the server. On graceful shutdown it closes its session,
/// so the server deletes its ephemeral nodes at once.
public final class ZooKeeperClient: Service, Sendable {
    /// The ensemble and session settings the client was created with.
    public let configuration: ZooKeeperConfiguration
    private let logger: Logger
    private let group: any EventLoopGroup
    private let state: Mutex<State>

    private enum WatchKind {
        case data, exists, child, persistent, persistentRecursive
    }

    /// Who a reply is for.
    private enum Reply {
        case pending(Pending)
        case abandoned
        case unknown
    }

    private struct Pending {
        var continuation: CheckedContinuation<[UInt8], any Error>
        var watch: (kind: WatchKind, path: String)?
    }

    /// Where a subscription's events go.
    private enum Subscriber: Sendable {
        case stream(AsyncStream<ZooKeeperEvent>.Continuation)
        case queue(ZooKeeperEventQueue)

        func yield(_ event: ZooKeeperEvent) {
            switch self {
            case .stream(let continuation): continuation.yield(event)
            case .queue(let queue): queue.append(event)
            }
        }

        func finish() {
            switch self {
            case .stream(let continuation): continuation.finish()
            case .queue(let queue): queue.finish()
            }
        }
    }

    private struct State {
        var send: AsyncStream<ByteBuffer>.Continuation?
        var connected = false
        /// Set between the session handshake and the server's answer to the credentials: the
        /// session is up but not usable yet (requests fail with `connectionLoss`). Holds whether
        /// the session is new, for the `connected` event sent once the credentials are accepted.
        var authenticatingNewSession: Bool?
        /// Set by ``shutdown()`` before it sends closeSession, until `closed`: the session is being
        /// closed. New requests fail with `.closed`, a connection that ends fails its requests with
        /// `.closed` and is not replaced, and no `disconnected` or `connectFailed` event is sent.
        var closing = false
        var closed = false
        /// Second callers of ``shutdown()`` while the first closes the session: resumed once closed.
        var closeWaiters: [CheckedContinuation<Void, Never>] = []
        /// Whether `run()` has started (it ends the subscriptions when it returns).
        var running = false
        var pending: [Int32: Pending] = [:]
        /// Requests whose caller was cancelled before the reply came, with the watch each leaves:
        /// their replies are taken in (the watch noted) and dropped.
        var abandoned: [Int32: (kind: WatchKind, path: String)?] = [:]
        var nextXid: Int32 = 1
        var sessionID: Int64 = 0
        var password = [UInt8](repeating: 0, count: 16)
        var negotiatedTimeout: Duration
        var lastZxid: Int64 = 0
        var lastReceived = ContinuousClock.now
        var dataWatches: Set<String> = []
        var existWatches: Set<String> = []
        var childWatches: Set<String> = []
        /// Persistent watches (``addWatch(_:mode:)``): not consumed by their events, set again
        /// after a reconnection (SetWatches2) until removed or the session ends.
        var persistentWatches: Set<String> = []
        var persistentRecursiveWatches: Set<String> = []
        /// Who holds each persistent watch taken with ``holdWatch(_:mode:holder:)``, by server path:
        /// the watch is removed when the last holder lets it go.
        var watchHolders: [String: Set<ObjectIdentifier>] = [:]
        var subscribers: [Int: Subscriber] = [:]
        var nextSubscriber = 0

        /// The next request's xid (1 after `Int32.max`: the negative ones are the protocol's own).
        mutating func takeXid() -> Int32 {
            defer { nextXid = nextXid == Int32.max ? 1 : nextXid + 1 }
            return nextXid
        }

        /// Whether any watch is set (to set again after a reconnection).
        var hasWatches: Bool {
            !(dataWatches.isEmpty && existWatches.isEmpty && childWatches.isEmpty && persistentWatches.isEmpty
                && persistentRecursiveWatches.isEmpty)
        }

        /// Forgets every watch: the session they belonged to is gone.
        mutating func forgetWatches() {
            dataWatches = []
            existWatches = []
            childWatches = []
            persistentWatches = []
            persistentRecursiveWatches = []
        }

        /// Forgets the watches of `kind` on `path` (a server path), as the server has removed them.
        mutating func forgetWatches(on path: String, kind: ZooKeeperWatcherKind) {
            switch kind {
            case .children:
                childWatches.remove(path)
            case .data:
                dataWatches.remove(path)
                existWatches.remove(path)
            case .any:
                childWatches.remove(path)
                dataWatches.remove(path)
                existWatches.remove(path)
                persistentWatches.remove(path)
                persistentRecursiveWatches.remove(path)
                watchHolders.removeValue(forKey: path)
            }
        }
    }

    /// Creates a client; it connects once ``run()`` runs.
    ///
    /// - Parameters:
    ///   - configuration: The servers, the chroot and the session timeout.
    ///   - eventLoopGroup: Where the connections run. Default: NIO's shared group.
    ///   - logger: Where to log. Default: nowhere.
    public init(
        configuration: ZooKeeperConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "loadbalancer.zookeeper", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.configuration = configuration
        self.logger = logger
        self.group = eventLoopGroup
        self.state = Mutex(State(negotiatedTimeout: configuration.sessionTimeout))
    }

    // MARK: - Session

    /// A new subscription to the client's events. The first event is `connected` when the client
    /// is connected at the time of the call.
    public func events() -> AsyncStream<ZooKeeperEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: ZooKeeperEvent.self)
        let id = state.withLock { state -> Int in
            let id = state.nextSubscriber
            state.nextSubscriber += 1
            state.subscribers[id] = .stream(continuation)
            if state.connected { continuation.yield(.connected(sessionID: state.sessionID, newSession: false)) }
            if state.closed { continuation.finish() }
            return id
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    /// A new subscription to the client's events, taken in batches (what ``events()`` gives, with
    /// every event that came since the last take at once); end it with ``endEvents(_:)``.
    package func eventQueue() -> ZooKeeperEventQueue {
        state.withLock { state in
            let queue = ZooKeeperEventQueue(id: state.nextSubscriber)
            state.nextSubscriber += 1
            state.subscribers[queue.id] = .queue(queue)
            if state.connected { queue.append(.connected(sessionID: state.sessionID, newSession: false)) }
            if state.closed { queue.finish() }
            return queue
        }
    }

    /// Ends a subscription of ``eventQueue()``.
    package func endEvents(_ queue: ZooKeeperEventQueue) {
        _ = state.withLock { $0.subscribers.removeValue(forKey: queue.id) }
        queue.finish()
    }

    /// How many requests wait for their reply now (for tests).
    var pendingRequestCount: Int { state.withLock { $0.pending.count } }

    /// How many `getData` requests the client has sent (for tests: what a publisher reads per change).
    package var dataReadCount: Int { dataReads.load(ordering: .relaxed) }
    private let dataReads = Atomic<Int>(0)
    /// How many `getChildren` requests the client has sent (for tests: whether a change lists the
    /// children again).
    package var childrenListCount: Int { childrenLists.load(ordering: .relaxed) }
    private let childrenLists = Atomic<Int>(0)

    /// Whether a session is established on a live connection now.
    public var isConnected: Bool { state.withLock { $0.connected } }

    /// Whether the client has been shut down (``shutdown()``, graceful shutdown, or ``run()`` has
    /// returned): every request fails with ``ZooKeeperError/Code/closed`` from then on.
    public var isShutDown: Bool { state.withLock { $0.closed } }

    /// The session id (0 before the first session).
    public var sessionID: Int64 { state.withLock { $0.sessionID } }

    /// The session timeout the server granted.
    public var negotiatedSessionTimeout: Duration { state.withLock { $0.negotiatedTimeout } }

    /// The session's id and password: another connection presenting them takes the session over
    /// (tests use it to expire a session on purpose, as ZooKeeper's own test tools do).
    package var sessionCredentials: (id: Int64, password: [UInt8]) { state.withLock { ($0.sessionID, $0.password) } }

    /// Takes over a session and closes it, in one write (the connect request and the close request
    /// together, so the session's own client cannot take it back in between): the server expires
    /// the session. How tests expire a session on purpose; bounded by 5 s.
    package static func closeSession(
        id: Int64,
        password: [UInt8],
        server: ZooKeeperConfiguration.Server,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws {
        let channel = try await wrappedForAsync(
            ClientBootstrap(group: group).connectTimeout(.seconds(2)).connect(host: server.host, port: server.port).get())
        let frames =
            ZooKeeperRecords.connectRequest(lastZxid: 0, timeoutMilliseconds: 4_000, sessionID: id, password: password)
            + ZooKeeperRecords.request(xid: 1, op: .closeSession, body: [])
        // Bounded: a server that never answers the close leaves the session to expire by itself.
        do {
            try await withTimeout(.seconds(5), onTimeout: { timedOut("closing session \(id)", after: .seconds(5)) }) {
                try await channel.executeThenClose { inbound, outbound in
                    try await outbound.write(ByteBuffer(bytes: frames))
                    var decoder = ZooKeeperFrameDecoder()
                    var frames = 0
                    for try await chunk in inbound {
                        decoder.append(chunk.readableBytesView)
                        while try decoder.next() != nil {
                            frames += 1
                            if frames == 2 { return } // the session, then the close's reply
                        }
                    }
                }
            }
        } catch let error as ZooKeeperError where error.code == .operationTimeout {
            return
        }
    }

    /// The error of a request the client gave up on after `timeout`.
    static func timedOut(_ what: String, after timeout: Duration) -> ZooKeeperError {
        ZooKeeperError(code: .operationTimeout, message: "no answer \(what) within \(timeout)")
    }

    /// Keeps the session, reconnecting as needed, until the task is cancelled, the service group
    /// shuts down gracefully, or ``shutdown()`` is called (then it closes the session). Once it has
    /// returned, every request fails with ``ZooKeeperError/Code/closed``. A failed connection is
    /// an event (``events()``), not an error; `throws` is the signature every registry client's
    /// `run()` shares.
    ///
    /// - Throws: ``ZooKeeperError`` with code ``ZooKeeperError/Code/invalidArgument`` at once when
    ///   the configuration cannot work at all: a TLS file that cannot be read or parsed, or a digest
    ///   user containing ':'. No connection is attempted then, and the client is closed.
    public func run() async throws {
        let servers = configuration.servers.shuffled()
        var index = 0
        var failuresInARow = 0
        state.withLock { $0.running = true }
        let tls: NIOSSLContext?
        do {
            try configuration.credentials?.validate()
            tls = try configuration.tls.map(Self.makeTLSContext)
        } catch {
            logger.error("ZooKeeper client configuration unusable", metadata: ["loadbalancer.error": "\(error)"])
            finish()
            throw error
        }
        await withGracefulShutdownHandler {
            while !Task.isCancelled, !self.state.withLock({ $0.closing || $0.closed }) {
                let server = servers[index % servers.count]
                index += 1
                let wasConnected = await self.connectAndServe(server, tls: tls)
                if wasConnected { failuresInARow = 0 } else { failuresInARow += 1 }
                // After a full round of failed servers, pause (full jitter, the window growing to 2 s).
                if failuresInARow > 0, failuresInARow % servers.count == 0 {
                    let delay = Self.reconnectBackoff.delay(forRetry: failuresInARow / servers.count, random: systemRandomBits())
                    do { try await Task.sleep(for: delay) } catch { break }
                }
            }
        } onGracefulShutdown: {
            Task { await self.shutdown() }
        }
        finish()
    }

    /// The pause after each round of the ensemble that failed: 100 ms doubling to 2 s, full jitter.
    static let reconnectBackoff = Backoff(base: .milliseconds(100), cap: .seconds(2))

    /// Whether `host` is an IP address literal (IPv6 hosts hold ':', names do not).
    static func isIPAddress(_ host: String) -> Bool {
        host.contains(":") || (!host.isEmpty && host.allSatisfy { $0 == "." || ("0"..."9").contains($0) })
    }

    /// The TLS client context of `tls` (its files read now).
    private static func makeTLSContext(_ tls: ZooKeeperConfiguration.TLS) throws(ZooKeeperError) -> NIOSSLContext {
        #if LB_ZOOKEEPER_NO_TLS
            throw ZooKeeperError(code: .invalidArgument, message: "TLS: this build of LoadBalancerZooKeeper has no TLS")
        #else
            try makeTLSContextWithNIOSSL(tls)
        #endif
    }

    #if !LB_ZOOKEEPER_NO_TLS
        private static func makeTLSContextWithNIOSSL(_ tls: ZooKeeperConfiguration.TLS) throws(ZooKeeperError) -> NIOSSLContext {
            if let name = tls.serverHostname, name.isEmpty || isIPAddress(name) {
                throw ZooKeeperError(
                    code: .invalidArgument,
                    message: "TLS: serverHostname must be a DNS name, not \"\(name)\" (an address is verified as connected)")
            }
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = tls.verifyHostname ? .fullVerification : .noHostnameVerification
            do {
                if let roots = tls.trustRootsPath {
                    configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(roots))
                }
                switch (tls.clientCertificatePath, tls.clientKeyPath) {
                case (let certificate?, let key?):
                    configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
                    configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
                case (nil, nil):
                    break
                default:
                    throw ZooKeeperError(
                        code: .invalidArgument, message: "TLS: a client certificate needs its key, and a key its certificate")
                }
                return try NIOSSLContext(configuration: configuration)
            } catch let error as ZooKeeperError {
                throw error
            } catch {
                throw ZooKeeperError(code: .invalidArgument, message: "TLS: cannot load the certificates or the key", cause: error)
            }
        }
    #endif

    /// Shuts the client down: closes the session (the server deletes its ephemeral nodes) and the
    /// connection, and ``run()`` returns; requests fail with ``ZooKeeperError/Code/closed`` from
    /// the moment it is called, requests still waiting for a reply too when the connection ends
    /// before they are answered. Bounded by the session timeout. Calling it again while the
    /// session closes waits for the first call; calling it once the client is closed does nothing.
    public func shutdown() async {
        enum Step {
            case closeSession(timeout: Duration)
            case close
            case waitForTheFirstCall
            case nothing
        }
        let step = state.withLock { state -> Step in
            if state.closed { return .nothing }
            if state.closing { return .waitForTheFirstCall }
            state.closing = true
            return state.connected ? .closeSession(timeout: state.negotiatedTimeout) : .close
        }
        switch step {
        case .nothing:
            return
        case .waitForTheFirstCall:
            await withCheckedContinuation { continuation in
                let closed = state.withLock { state in
                    if !state.closed { state.closeWaiters.append(continuation) }
                    return state.closed
                }
                if closed { continuation.resume() }
            }
            return
        case .closeSession(let timeout):
            _ = try? await withTimeout(timeout, onTimeout: { Self.timedOut("closing the session", after: timeout) }) {
                try await self.send(.closeSession, [], watch: nil)
            }
        case .close:
            break
        }
        let (send, running, waiters) = state.withLock { state in
            state.closed = true
            defer { state.closeWaiters = [] }
            return (state.send, state.running, state.closeWaiters)
        }
        send?.finish()
        // Without a `run()` to end them, end the subscriptions and requests here.
        if !running { finish() }
        for waiter in waiters { waiter.resume() }
    }

    private func finish() {
        let (subscribers, pending, waiters) = state.withLock { state in
            state.closed = true
            defer {
                state.subscribers = [:]
                state.pending = [:]
                state.closeWaiters = []
            }
            return (Array(state.subscribers.values), Array(state.pending.values), state.closeWaiters)
        }
        for pending in pending {
            pending.continuation.resume(throwing: ZooKeeperError(code: .closed, message: "the client stopped"))
        }
        for subscriber in subscribers { subscriber.finish() }
        for waiter in waiters { waiter.resume() }
    }

    private func emit(_ event: ZooKeeperEvent) {
        let subscribers = state.withLock { Array($0.subscribers.values) }
        for subscriber in subscribers { subscriber.yield(event) }
    }

    // MARK: - Requests

    /// Creates a node and returns its path (with the sequence number, for sequential modes).
    ///
    /// - Parameters:
    ///   - path: The node's path (absolute, relative to the chroot).
    ///   - data: The node's data. Default: empty.
    ///   - mode: Persistent or ephemeral, sequential or not. Default: persistent.
    ///   - acl: The node's ACL (and that of the parents it creates). Default: the configuration's
    ///     (``ZooKeeperConfiguration/defaultACL``).
    ///   - createParents: Creates missing parents first (as empty persistent nodes).
    @discardableResult
    public func create(
        _ path: String,
        data: [UInt8] = [],
        mode: ZooKeeperCreateMode = .persistent,
        acl: [ZooKeeperACL]? = nil,
        createParents: Bool = false
    ) async throws(ZooKeeperError) -> String {
        try ZooKeeperPath.validate(path)
        let acl = acl ?? configuration.defaultACL
        if createParents {
            var ancestors: [String] = []
            var parent = ZooKeeperPath.parent(path)
            while parent != "/" {
                ancestors.append(parent)
                parent = ZooKeeperPath.parent(parent)
            }
            for ancestor in ancestors.reversed() {
                do {
                    _ = try await send(
                        .create, ZooKeeperRecords.create(serverPath(ancestor), data: [], mode: .persistent, acl: acl), watch: nil,
                        path: ancestor)
                } catch  where error.code == .nodeExists {
                    continue
                }
            }
        }
        let body = try await send(
            .create, ZooKeeperRecords.create(serverPath(path), data: data, mode: mode, acl: acl), watch: nil, path: path)
        var reader = JuteReader(body)
        return clientPath(try decode { () throws(ZooKeeperDecodingError) in try reader.string() })
    }

    /// Deletes a node (`version` -1: any version).
    public func delete(_ path: String, version: Int32 = -1) async throws(ZooKeeperError) {
        try ZooKeeperPath.validate(path)
        _ = try await send(.delete, ZooKeeperRecords.delete(serverPath(path), version: version), watch: nil, path: path)
    }

    /// Sets a node's data (`version` -1: any version).
    @discardableResult
    public func setData(_ path: String, data: [UInt8], version: Int32 = -1) async throws(ZooKeeperError) -> ZooKeeperStat {
        try ZooKeeperPath.validate(path)
        let body = try await send(
            .setData, ZooKeeperRecords.setData(serverPath(path), data: data, version: version), watch: nil, path: path)
        var reader = JuteReader(body)
        return try decode { () throws(ZooKeeperDecodingError) in try ZooKeeperStat(&reader) }
    }

    /// The node's ACL and metadata.
    public func getACL(_ path: String) async throws(ZooKeeperError) -> (acl: [ZooKeeperACL], stat: ZooKeeperStat) {
        try ZooKeeperPath.validate(path)
        let body = try await send(.getACL, ZooKeeperRecords.path(serverPath(path)), watch: nil, path: path)
        var reader = JuteReader(body)
        return try decode { () throws(ZooKeeperDecodingError) in try ZooKeeperRecords.aclReply(&reader) }
    }

    /// Sets the node's ACL (`version` -1: any ACL version); needs the `admin` permission on it.
    /// How to protect a parent created before credentials were set: the permission to delete a
    /// node is its parent's.
    @discardableResult
    public func setACL(_ path: String, acl: [ZooKeeperACL], version: Int32 = -1) async throws(ZooKeeperError) -> ZooKeeperStat {
        try ZooKeeperPath.validate(path)
        let body = try await send(.setACL, ZooKeeperRecords.setACL(serverPath(path), acl: acl, version: version), watch: nil, path: path)
        var reader = JuteReader(body)
        return try decode { () throws(ZooKeeperDecodingError) in try ZooKeeperStat(&reader) }
    }

    /// The node's metadata, or `nil` when it does not exist. With `watch`, a watch is left for its
    /// creation, deletion or data change.
    public func exists(_ path: String, watch: Bool = false) async throws(ZooKeeperError) -> ZooKeeperStat? {
        try ZooKeeperPath.validate(path)
        let server = serverPath(path)
        do {
            let body = try await send(
                .exists, ZooKeeperRecords.pathAndWatch(server, watch: watch), watch: watch ? (.exists, server) : nil, path: path)
            var reader = JuteReader(body)
            return try decode { () throws(ZooKeeperDecodingError) in try ZooKeeperStat(&reader) }
        } catch  where error.code == .noNode {
            return nil
        }
    }

    /// The node's data and metadata. With `watch`, a watch is left for its data change or deletion.
    public func getData(_ path: String, watch: Bool = false) async throws(ZooKeeperError) -> (data: [UInt8], stat: ZooKeeperStat) {
        try ZooKeeperPath.validate(path)
        let server = serverPath(path)
        dataReads.add(1, ordering: .relaxed)
        let body = try await send(
            .getData, ZooKeeperRecords.pathAndWatch(server, watch: watch), watch: watch ? (.data, server) : nil, path: path)
        var reader = JuteReader(body)
        return try decode { () throws(ZooKeeperDecodingError) in
            let data = try reader.buffer() ?? []
            return (data, try ZooKeeperStat(&reader))
        }
    }

    /// The names of the node's children and its metadata (getChildren2). With `watch`, a watch is
    /// left for a change of its children or its deletion.
    public func getChildren(_ path: String, watch: Bool = false) async throws(ZooKeeperError) -> (children: [String], stat: ZooKeeperStat) {
        try ZooKeeperPath.validate(path)
        let server = serverPath(path)
        childrenLists.add(1, ordering: .relaxed)
        let body = try await send(
            .getChildren2, ZooKeeperRecords.pathAndWatch(server, watch: watch), watch: watch ? (.child, server) : nil, path: path)
        var reader = JuteReader(body)
        return try decode { () throws(ZooKeeperDecodingError) in
            let children = try reader.strings()
            return (children, try ZooKeeperStat(&reader))
        }
    }

    /// Sets a persistent watch on `path` (ZooKeeper 3.6 and later; the node need not exist): unlike
    /// the watches reads leave, it is not consumed by its events, and it stays until
    /// ``removeWatches(_:kind:)`` or the end of the session. With
    /// ``ZooKeeperAddWatchMode/persistentRecursive`` it fires for every node below `path` as well
    /// (``ZooKeeperWatchEvent/Kind/nodeCreated``, ``ZooKeeperWatchEvent/Kind/nodeDeleted``,
    /// ``ZooKeeperWatchEvent/Kind/nodeDataChanged``, never `nodeChildrenChanged`).
    ///
    /// After a reconnection within the session the client sets it again (SetWatches2), but the
    /// server does not replay the changes made meanwhile for persistent watches as it does for the
    /// one-shot ones: read again after ``ZooKeeperEvent/connected(sessionID:newSession:)``. Setting
    /// the same watch twice is harmless. The watch belongs to the session: everything that uses
    /// this client shares it.
    ///
    /// - Throws: ``ZooKeeperError`` with code ``ZooKeeperError/Code/unimplemented`` when the server
    ///   does not know the operation (before 3.6; such a server may also close the connection),
    ///   ``ZooKeeperError/Code/noAuth`` when the node's ACL grants no `read`, and the errors of
    ///   every request.
    public func addWatch(_ path: String, mode: ZooKeeperAddWatchMode) async throws(ZooKeeperError) {
        try ZooKeeperPath.validate(path)
        let server = serverPath(path)
        do {
            _ = try await send(
                .addWatch, ZooKeeperRecords.addWatch(server, mode: mode),
                watch: (mode == .persistent ? .persistent : .persistentRecursive, server), path: path)
        } catch  where error.code == .unimplemented {
            throw ZooKeeperError(
                code: .unimplemented,
                message: "the server does not support addWatch on \(path): persistent watches need ZooKeeper 3.6 or later",
                cause: error)
        }
    }

    /// Removes this session's watches of `kind` on `path` (``ZooKeeperWatcherKind/any``: every
    /// one, persistent ones included); the client stops setting them again after reconnections.
    ///
    /// - Throws: ``ZooKeeperError`` with code ``ZooKeeperError/Code/noWatcher`` when the server has
    ///   no such watch, and the errors of every request.
    public func removeWatches(_ path: String, kind: ZooKeeperWatcherKind = .any) async throws(ZooKeeperError) {
        try ZooKeeperPath.validate(path)
        let server = serverPath(path)
        // Forgotten first: a reconnection meanwhile does not set it again.
        state.withLock { $0.forgetWatches(on: server, kind: kind) }
        _ = try await send(.removeWatches, ZooKeeperRecords.removeWatches(server, kind: kind), watch: nil, path: path)
    }

    /// Sets a persistent watch on `path` for `holder` (``addWatch(_:mode:)``), noting who holds
    /// it, so that ``releaseWatch(_:holder:)`` removes it only when its last holder lets it go.
    package func holdWatch(_ path: String, mode: ZooKeeperAddWatchMode, holder: ObjectIdentifier) async throws(ZooKeeperError) {
        // Noted first: a caller cancelled while the request is out still lets go of what its
        // answer sets.
        let server = serverPath(path)
        state.withLock { _ = $0.watchHolders[server, default: []].insert(holder) }
        try await addWatch(path, mode: mode)
    }

    /// Lets go of `holder`'s persistent watch on `path`. When no holder is left, the client forgets
    /// the watch and asks the server to remove it without waiting for the answer (so it can be
    /// called from a cancelled task); when the client is not connected, the server forgets it with
    /// the connection, and the client no longer sets it again.
    package func releaseWatch(_ path: String, holder: ObjectIdentifier) {
        let server = serverPath(path)
        state.withLock { state in
            guard var holders = state.watchHolders[server], holders.remove(holder) != nil else { return }
            guard holders.isEmpty else {
                state.watchHolders[server] = holders
                return
            }
            state.forgetWatches(on: server, kind: .any)
            guard state.connected, !state.closing, !state.closed, let send = state.send else { return }
            let xid = state.takeXid()
            // Its reply is taken in and dropped, as a cancelled request's is.
            state.abandoned.updateValue(nil, forKey: xid)
            send.yield(
                ByteBuffer(
                    bytes: ZooKeeperRecords.request(xid: xid, op: .removeWatches, body: ZooKeeperRecords.removeWatches(server, kind: .any)))
            )
        }
    }

    /// Whether the client sets a persistent watch on `path` again after a reconnection (for tests).
    package func hasPersistentWatch(_ path: String) -> Bool {
        let server = serverPath(path)
        return state.withLock { $0.persistentWatches.contains(server) || $0.persistentRecursiveWatches.contains(server) }
    }

    private func decode<T>(_ body: () throws(ZooKeeperDecodingError) -> T) throws(ZooKeeperError) -> T {
        do {
            return try body()
        } catch {
            throw ZooKeeperError(code: .malformedResponse, message: error.message, cause: error)
        }
    }

    private func serverPath(_ path: String) -> String {
        guard let chroot = configuration.chroot else { return path }
        return path == "/" ? chroot : chroot + path
    }

    private func clientPath(_ path: String) -> String {
        guard let chroot = configuration.chroot, path.hasPrefix(chroot) else { return path }
        let rest = String(path.dropFirst(chroot.count))
        return rest.isEmpty ? "/" : rest
    }

    /// Sends a request on the current connection and returns the reply's body.
    ///
    /// A cancelled caller gets ``ZooKeeperError/Code/cancelled`` at once, without waiting for the
    /// server; the reply, when it comes, is dropped (and the watch it sets noted).
    private func send(
        _ op: ZooKeeperOp, _ body: [UInt8], watch: (kind: WatchKind, path: String)?, path: String? = nil
    ) async throws(ZooKeeperError) -> [UInt8] {
        let xid = state.withLock { $0.takeXid() }
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    let failure = state.withLock { state -> ZooKeeperError? in
                        // Cancelled before it was sent: the cancellation handler ran first, under
                        // this same lock, and found nothing to resume.
                        if Task.isCancelled { return Self.cancelled() }
                        // While the session closes, only the close itself goes out.
                        if state.closed || (state.closing && op != .closeSession) {
                            return ZooKeeperError(code: .closed, message: "the client stopped")
                        }
                        guard state.connected, let send = state.send else {
                            return ZooKeeperError(code: .connectionLoss, message: "not connected")
                        }
                        state.pending[xid] = Pending(continuation: continuation, watch: watch)
                        send.yield(ByteBuffer(bytes: ZooKeeperRecords.request(xid: xid, op: op, body: body)))
                        return nil
                    }
                    if let failure { continuation.resume(throwing: failure) }
                }
            } onCancel: {
                let request = state.withLock { state -> Pending? in
                    // Not sent yet: it sees the cancellation before sending. (Already answered:
                    // nothing to do.)
                    guard let request = state.pending.removeValue(forKey: xid) else { return nil }
                    state.abandoned[xid] = request.watch
                    return request
                }
                request?.continuation.resume(throwing: Self.cancelled())
            }
        } catch let error as ZooKeeperError {
            if let path, error.code == .noAuth || error.code == .invalidACL {
                throw explained(error.code, op: op, path: path)
            }
            throw error
        } catch {
            throw ZooKeeperError(code: .connectionLoss, message: "request failed", cause: error)
        }
    }

    /// An ACL refusal, said plainly: what was refused, which node's ACL decides, and who the
    /// session is (the user, never the password).
    private func explained(_ code: ZooKeeperError.Code, op: ZooKeeperOp, path: String) -> ZooKeeperError {
        let who =
            configuration.credentials.map { "authenticated as \($0.description)" } ?? "no credentials: the session is world:anyone only"
        if code == .invalidACL {
            return ZooKeeperError(
                code: code,
                message: "the server refused the ACL for \(path) as invalid (\(who); an auth: or creator entry needs credentials)")
        }
        let (verb, permission, node): (String, String, String)
        switch op {
        case .create: (verb, permission, node) = ("create", "create", "its parent's")
        case .delete: (verb, permission, node) = ("delete", "delete", "its parent's")
        case .setData: (verb, permission, node) = ("set the data of", "write", "its")
        case .setACL: (verb, permission, node) = ("set the ACL of", "admin", "its")
        case .getACL: (verb, permission, node) = ("read the ACL of", "read or admin", "its")
        default: (verb, permission, node) = ("read", "read", "its")
        }
        return ZooKeeperError(
            code: code,
            message: "not authorized to \(verb) \(path): \(node) ACL grants this session no \(permission) permission (\(who))")
    }

    private static func cancelled() -> ZooKeeperError {
        ZooKeeperError(code: .cancelled, message: "the request was cancelled", cause: CancellationError())
    }

    // MARK: - Connection

    /// Ends a connection whose server closed it or went quiet (not worth a log line of its own).
    private static func connectionClosed(_ why: String) -> ZooKeeperError {
        ZooKeeperError(code: .connectionLoss, message: why)
    }

    private static func isConnectionClosed(_ error: (any Error)?) -> Bool {
        (error as? ZooKeeperError)?.code == .connectionLoss
    }

    /// One connection: handshake, then requests, replies, pings and watch events until it breaks.
    /// Returns whether a session was established on it.
    private func connectAndServe(_ server: ZooKeeperConfiguration.Server, tls: NIOSSLContext?) async -> Bool {
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        // SNI carries names, not addresses: for an IP address (no name given) NIOSSL checks the
        // certificate against the address the connection reached.
        let tlsName = configuration.tls?.serverHostname ?? server.host
        let sniName = Self.isIPAddress(tlsName) ? nil : tlsName
        do {
            let connected = try await ClientBootstrap(group: group)
                .connectTimeout(TimeAmount(configuration.connectTimeout))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls {
                            #if !LB_ZOOKEEPER_NO_TLS
                                try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: sniName))
                            #else
                                switch tls {}
                            #endif
                        }
                    }
                }
                .connect(host: server.host, port: server.port)
                .get()
            channel = try await wrappedForAsync(connected)
        } catch {
            logger.debug(
                "ZooKeeper connect failed", metadata: ["loadbalancer.zookeeper.server": "\(server)", "loadbalancer.error": "\(error)"])
            if !Task.isCancelled {
                emit(.connectFailed(ZooKeeperError(code: .connectionLoss, message: "cannot connect to \(server)", cause: error)))
            }
            return false
        }

        let (queue, send) = AsyncStream.makeStream(of: ByteBuffer.self)
        let hello = state.withLock { state -> [UInt8] in
            state.lastReceived = .now
            state.send = send
            return ZooKeeperRecords.connectRequest(
                lastZxid: state.lastZxid,
                timeoutMilliseconds: Int32(clamping: TimeAmount(configuration.sessionTimeout).nanoseconds / 1_000_000),
                sessionID: state.sessionID,
                password: state.password
            )
        }
        send.yield(ByteBuffer(bytes: hello))
        var failure: (any Error)?
        do {
            try await channel.executeThenClose { inbound, outbound in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await frame in queue { try await outbound.write(frame) }
                        throw Self.connectionClosed("the client ended the connection")
                    }
                    group.addTask {
                        var decoder = ZooKeeperFrameDecoder()
                        var handshaken = false
                        for try await chunk in inbound {
                            decoder.append(chunk.readableBytesView)
                            while let frame = try decoder.next() {
                                if handshaken {
                                    try self.handle(frame, server: server)
                                } else {
                                    try self.handshake(frame, server: server)
                                    handshaken = true
                                }
                            }
                        }
                        throw Self.connectionClosed("the server closed the connection")
                    }
                    group.addTask { try await self.keepAlive(server: server) }
                    defer { group.cancelAll() }
                    try await group.next()
                }
            }
        } catch {
            failure = error
            if let error = error as? ZooKeeperError, error.code == .authFailed {
                logger.warning(
                    "ZooKeeper refused the credentials",
                    metadata: ["loadbalancer.zookeeper.server": "\(server)", "loadbalancer.error": "\(error)"])
            } else if !Self.isConnectionClosed(error) && !(error is CancellationError) {
                logger.info(
                    "ZooKeeper connection dropped",
                    metadata: ["loadbalancer.zookeeper.server": "\(server)", "loadbalancer.error": "\(error)"])
            }
        }
        let (wasConnected, closed, pending) = state.withLock { state in
            let wasConnected = state.connected
            state.connected = false
            state.authenticatingNewSession = nil
            state.send = nil
            state.abandoned = [:]
            defer { state.pending = [:] }
            return (wasConnected, state.closing || state.closed, Array(state.pending.values))
        }
        send.finish()
        // A connection that ends once ``shutdown()`` has begun (closing the session, or closed)
        // fails its requests as closed (nothing will answer them again, as no connection
        // replaces this one), not as a lost connection a caller would retry.
        let requestError =
            closed
            ? ZooKeeperError(code: .closed, message: "the client stopped")
            : ZooKeeperError(code: .connectionLoss, message: "the connection to \(server) broke")
        for request in pending {
            request.continuation.resume(throwing: requestError)
        }
        if closed {
            // Shutting down: no reconnection follows, so no `disconnected` (which promises one);
            // the subscriptions end when `run()` returns.
        } else if wasConnected {
            emit(.disconnected)
        } else if !Task.isCancelled, (failure as? ZooKeeperError)?.code != .sessionExpired {
            if let error = failure as? ZooKeeperError, error.code == .authFailed {
                // The server refused the credentials (and closed the connection): said as such.
                emit(.connectFailed(error))
            } else if Self.isTLSError(failure) {
                emit(
                    .connectFailed(
                        ZooKeeperError(
                            code: .connectionLoss,
                            message: "\(server): the TLS handshake failed (is the server's certificate trusted and does it name the host?)",
                            cause: failure)))
            } else {
                // Reached, but no session: the handshake went unanswered, or the server closed or
                // broke the connection before it. The cause says which.
                emit(
                    .connectFailed(ZooKeeperError(code: .connectionLoss, message: "\(server): no session was established", cause: failure)))
            }
        }
        return wasConnected
    }

    /// Whether `error` comes from TLS (a handshake that failed: an untrusted certificate, a name
    /// mismatch, a server that does not speak TLS).
    private static func isTLSError(_ error: (any Error)?) -> Bool {
        #if LB_ZOOKEEPER_NO_TLS
            false
        #else
            error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError
        #endif
    }

    /// Before the session: ends the connection when the handshake is not answered within the
    /// connect timeout. Then pings at a third of the session timeout and ends the connection when
    /// nothing has been heard for two thirds of it.
    private func keepAlive(server: ZooKeeperConfiguration.Server) async throws {
        let connectTimeout = configuration.connectTimeout
        while true {
            let (timeout, quiet, send, connected) = state.withLock {
                ($0.negotiatedTimeout, ContinuousClock.now - $0.lastReceived, $0.send, $0.connected)
            }
            if !connected {
                if quiet > connectTimeout {
                    throw ZooKeeperError(
                        code: .connectionLoss,
                        message: "\(server) did not answer the session handshake within \(connectTimeout)"
                    )
                }
                try await Task.sleep(for: min(connectTimeout / 4, .milliseconds(100)))
                continue
            }
            if quiet > timeout * 2 / 3 {
                logger.info("ZooKeeper server went quiet", metadata: ["loadbalancer.zookeeper.server": "\(server)"])
                throw Self.connectionClosed("the server went quiet")
            }
            send?.yield(ByteBuffer(bytes: ZooKeeperRecords.request(xid: ZooKeeperXid.ping, op: .ping, body: [])))
            try await Task.sleep(for: min(timeout / 3, .seconds(1)))
        }
    }

    private func handshake(_ frame: [UInt8], server: ZooKeeperConfiguration.Server) throws {
        let response = try ZooKeeperRecords.connectResponse(frame)
        if response.timeoutMilliseconds <= 0 {
            // The session is gone: forget it, its watches too, and start a new one next.
            state.withLock { state in
                state.sessionID = 0
                state.password = [UInt8](repeating: 0, count: 16)
                state.forgetWatches()
            }
            logger.warning("ZooKeeper session expired", metadata: ["loadbalancer.zookeeper.server": "\(server)"])
            emit(.sessionExpired)
            throw ZooKeeperError(code: .sessionExpired, message: "the session expired")
        }
        let credentials = configuration.credentials
        let (newSession, watches) = state.withLock { state -> (Bool, [UInt8]?) in
            let newSession = state.sessionID != response.sessionID
            if newSession { state.forgetWatches() }
            state.sessionID = response.sessionID
            state.password = response.password
            state.negotiatedTimeout = .milliseconds(Int64(response.timeoutMilliseconds))
            state.lastReceived = .now
            // With credentials, the session is usable once the server has accepted them.
            if credentials == nil {
                state.connected = true
            } else {
                state.authenticatingNewSession = newSession
            }
            guard !newSession, state.hasWatches else { return (newSession, nil) }
            if state.persistentWatches.isEmpty && state.persistentRecursiveWatches.isEmpty {
                // No persistent watch: SetWatches, which servers before 3.6 know too.
                let body = ZooKeeperRecords.setWatches(
                    relativeZxid: state.lastZxid,
                    data: state.dataWatches.sorted(),
                    exist: state.existWatches.sorted(),
                    child: state.childWatches.sorted()
                )
                return (false, ZooKeeperRecords.request(xid: ZooKeeperXid.setWatches, op: .setWatches, body: body))
            }
            // The server sets persistent watches again without replaying what changed while the
            // client was away (it does so for the one-shot ones): whoever holds one reads again
            // after `connected`.
            let body = ZooKeeperRecords.setWatches2(
                relativeZxid: state.lastZxid,
                data: state.dataWatches.sorted(),
                exist: state.existWatches.sorted(),
                child: state.childWatches.sorted(),
                persistent: state.persistentWatches.sorted(),
                persistentRecursive: state.persistentRecursiveWatches.sorted()
            )
            return (false, ZooKeeperRecords.request(xid: ZooKeeperXid.setWatches, op: .setWatches2, body: body))
        }
        let send = state.withLock { $0.send }
        // The credentials go first: the server applies them before it reads the next request, so
        // the watches set again (and every later request) run with the session's identities.
        if let credentials {
            send?.yield(
                ByteBuffer(
                    bytes: ZooKeeperRecords.auth(
                        scheme: credentials.scheme, credentials: Array("\(credentials.username):\(credentials.password)".utf8))))
        }
        if let watches { send?.yield(ByteBuffer(bytes: watches)) }
        if credentials == nil {
            connectedNow(server: server, sessionID: response.sessionID, newSession: newSession)
        }
    }

    /// Says the session is usable: logs and emits `connected`.
    private func connectedNow(server: ZooKeeperConfiguration.Server, sessionID: Int64, newSession: Bool) {
        logger.info(
            "ZooKeeper connected",
            metadata: [
                "loadbalancer.zookeeper.server": "\(server)",
                "loadbalancer.zookeeper.session": "\(String(UInt64(bitPattern: sessionID), radix: 16))",
                "loadbalancer.zookeeper.new_session": "\(newSession)",
            ]
        )
        emit(.connected(sessionID: sessionID, newSession: newSession))
    }

    /// The error of credentials the server refused.
    static func authFailed(_ credentials: ZooKeeperConfiguration.Credentials?, code: Int32) -> ZooKeeperError {
        let who = credentials.map { "scheme \($0.scheme), user \"\($0.username)\"" } ?? "the session"
        let answer = ZooKeeperError.Code(rawValue: code)
        return ZooKeeperError(
            code: answer == .authFailed ? .authFailed : answer,
            message: "authentication failed for \(who): the server answered \(answer) and closed the connection"
                + " (does it have the scheme's provider, authProvider / zookeeper.DigestAuthenticationProvider.enabled?)"
        )
    }

    private func handle(_ frame: [UInt8], server: ZooKeeperConfiguration.Server) throws {
        var (header, reader) = try ZooKeeperRecords.reply(frame)
        switch header.xid {
        case ZooKeeperXid.notification:
            let event = try ZooKeeperRecords.watchEvent(&reader)
            state.withLock { state in
                state.lastReceived = .now
                if header.zxid > 0 { state.lastZxid = max(state.lastZxid, header.zxid) }
                switch event.type {
                case 1, 3: // created, data changed
                    state.dataWatches.remove(event.path)
                    state.existWatches.remove(event.path)
                case 2: // deleted
                    state.dataWatches.remove(event.path)
                    state.existWatches.remove(event.path)
                    state.childWatches.remove(event.path)
                case 4: // children changed
                    state.childWatches.remove(event.path)
                default:
                    break
                }
            }
            let kind: ZooKeeperWatchEvent.Kind
            switch event.type {
            case -1: return // a session state change, not a node event
            case 1: kind = .nodeCreated
            case 2: kind = .nodeDeleted
            case 3: kind = .nodeDataChanged
            case 4: kind = .nodeChildrenChanged
            default: kind = .other(event.type)
            }
            emit(.watch(ZooKeeperWatchEvent(kind: kind, path: clientPath(event.path))))
        case ZooKeeperXid.auth:
            state.withLock { $0.lastReceived = .now }
            switch ZooKeeperRecords.authOutcome(header) {
            case .accepted:
                let (newSession, sessionID) = state.withLock { state -> (Bool?, Int64) in
                    defer { state.authenticatingNewSession = nil }
                    if state.authenticatingNewSession != nil { state.connected = true }
                    return (state.authenticatingNewSession, state.sessionID)
                }
                // An answer the client was not waiting for changes nothing.
                if let newSession { connectedNow(server: server, sessionID: sessionID, newSession: newSession) }
            case .refused(let code):
                throw Self.authFailed(configuration.credentials, code: code)
            }
        case ZooKeeperXid.ping, ZooKeeperXid.setWatches:
            state.withLock { state in
                state.lastReceived = .now
                if header.zxid > 0 { state.lastZxid = max(state.lastZxid, header.zxid) }
            }
            if header.xid == ZooKeeperXid.setWatches, header.error != 0 {
                logger.warning("ZooKeeper refused to set the watches again", metadata: ["loadbalancer.error": "\(header.error)"])
            }
        default:
            let reply = state.withLock { state -> Reply in
                state.lastReceived = .now
                if header.zxid > 0 { state.lastZxid = max(state.lastZxid, header.zxid) }
                let request = state.pending.removeValue(forKey: header.xid)
                let watch: (kind: WatchKind, path: String)?
                if let request {
                    watch = request.watch
                } else if let abandoned = state.abandoned.removeValue(forKey: header.xid) {
                    watch = abandoned
                } else {
                    return .unknown
                }
                if let watch {
                    switch (watch.kind, header.error) {
                    case (.data, 0): state.dataWatches.insert(watch.path)
                    case (.child, 0): state.childWatches.insert(watch.path)
                    case (.exists, 0): state.dataWatches.insert(watch.path)
                    case (.exists, ZooKeeperError.Code.noNode.rawValue): state.existWatches.insert(watch.path)
                    case (.persistent, 0): state.persistentWatches.insert(watch.path)
                    case (.persistentRecursive, 0): state.persistentRecursiveWatches.insert(watch.path)
                    default: break
                    }
                }
                return request.map { .pending($0) } ?? .abandoned
            }
            let request: Pending
            switch reply {
            case .pending(let pending): request = pending
            case .abandoned: return
            case .unknown: throw ZooKeeperDecodingError(code: .unexpectedReply, message: "a reply to unknown request \(header.xid)")
            }
            if header.error != 0 {
                let code = ZooKeeperError.Code(rawValue: header.error)
                request.continuation.resume(throwing: ZooKeeperError(code: code, message: "the server answered \(code)"))
            } else {
                request.continuation.resume(returning: Array(reader.bytes[reader.position...]))
            }
        }
    }
}
