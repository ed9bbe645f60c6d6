import GRPCCore
import GRPCNIOTransportHTTP2Posix
import GRPCProtobuf
import LoadBalancer
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// A client of etcd's v3 API (over gRPC) with what discovery and registration need: ranges, puts,
/// deletes, compaction, watches, leases with keep-alive, and member status.
///
/// The client holds one gRPC connection per configured member and sends each request to one
/// member, the *preferred* one; when that member fails (unreachable, no leader, too slow) the
/// request moves to the next member, which becomes the preferred one. Watches carry etcd's
/// `hasleader` requirement, so a member cut off from its leader ends them instead of going quiet.
///
/// The client is a `Service`, as every registry client of the package: ``run()`` runs the
/// connections, and requests wait for it to be running. Run it in a `ServiceGroup`, or in a task
/// of your own, for as long as you use the client. ``run()`` returns when the task is cancelled,
/// the service group shuts down gracefully, or ``shutdown()`` is called (requests in flight finish
/// first); from then on every request fails with ``EtcdError/Code/closed``.
///
/// ```swift
/// let client = try EtcdClient(configuration: EtcdConfiguration(members: "127.0.0.1:2379"), logger: logger)
/// let publisher = EtcdPublisher(prefix: "/services/api/", client: client)
/// let group = ServiceGroup(services: [client, publisher], logger: logger)
/// ```
public final class EtcdClient: Service, Sendable {
    /// The members and settings the client was created with.
    public let configuration: EtcdConfiguration
    let logger: Logger
    private let connections: [Connection]
    private let preferred = Atomic<Int>(0)
    private let token = Mutex<String?>(nil)
    /// Fired when the client shuts down: new requests fail, and the watch and keep-alive streams
    /// (which never end by themselves) end.
    private let signal = ShutdownSignal()

    struct Connection: Sendable {
        let member: EtcdConfiguration.Member
        let grpc: GRPCClient<HTTP2ClientTransport.Posix>
    }

    /// Creates the client's connections (they connect once ``run()`` runs).
    ///
    /// - Parameters:
    ///   - configuration: The members, TLS, credentials and timeouts.
    ///   - eventLoopGroup: Where the gRPC connections run: a `MultiThreadedEventLoopGroup` (or one
    ///     of its event loops), as gRPC's NIO transport requires. Default: NIO's shared group.
    ///   - logger: Where to log. Default: nowhere.
    /// - Throws: ``EtcdError`` with ``EtcdError/Code/invalidArgument`` when there is no member, a
    ///   member's address cannot be used, or `eventLoopGroup` is not a `MultiThreadedEventLoopGroup`.
    public init(
        configuration: EtcdConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "loadbalancer.etcd", factory: { _ in SwiftLogNoOpLogHandler() })
    ) throws(EtcdError) {
        guard !configuration.members.isEmpty else {
            throw EtcdError(code: .invalidArgument, message: "no etcd members given")
        }
        // gRPC's NIO transport connects with a ClientBootstrap, which traps on any other group.
        guard ClientBootstrap(validatingGroup: eventLoopGroup) != nil else {
            throw EtcdError(
                code: .invalidArgument,
                message: "etcd's gRPC transport needs a MultiThreadedEventLoopGroup (or one of its event loops)"
            )
        }
        self.configuration = configuration
        self.logger = logger
        var connections: [Connection] = []
        for member in configuration.members {
            let transport: HTTP2ClientTransport.Posix
            do {
                transport = try HTTP2ClientTransport.Posix(
                    target: Self.target(member),
                    transportSecurity: Self.security(configuration.tls, member: member),
                    config: .defaults { config in
                        // Reconnect quickly: a restarted member should be usable again soon.
                        config.backoff.initial = .milliseconds(100)
                        config.backoff.max = .seconds(2)
                        config.connection.maxIdleTime = nil
                    },
                    eventLoopGroup: eventLoopGroup
                )
            } catch {
                throw EtcdError(code: .invalidArgument, message: "cannot use etcd member \(member)", cause: error)
            }
            connections.append(Connection(member: member, grpc: GRPCClient(transport: transport)))
        }
        self.connections = connections
    }

    /// Runs the connections until cancelled, until ``shutdown()`` or, in a `ServiceGroup`, until
    /// graceful shutdown (then in-flight requests finish first). Once it has returned, the client
    /// is shut down for good (``isShutDown``). A connection that fails is logged; `throws` is the
    /// signature every registry client's `run()` shares.
    public func run() async throws {
        defer { signal.fire() }
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for connection in connections {
                    group.addTask {
                        do {
                            try await connection.grpc.runConnections()
                        } catch {
                            self.logger.error(
                                "etcd connection stopped",
                                metadata: ["loadbalancer.etcd.member": "\(connection.member)", "loadbalancer.error": "\(error)"]
                            )
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            self.signal.fire()
            for connection in self.connections { connection.grpc.beginGracefulShutdown() }
        }
    }

    /// Shuts the client down: requests in flight finish, watches and keep-alives end with
    /// ``EtcdError/Code/closed`` (they would never finish), new requests fail with it, and
    /// ``run()`` returns once the connections have closed. Calling it again does nothing.
    public func shutdown() async {
        guard signal.fire() else { return }
        for connection in connections { connection.grpc.beginGracefulShutdown() }
    }

    /// Whether the client has been shut down (``shutdown()``, graceful shutdown, or ``run()`` has
    /// returned): every request fails with ``EtcdError/Code/closed`` from then on.
    public var isShutDown: Bool { signal.isFired }

    /// Runs a stream that ends only when it fails (a watch, a keep-alive) until ``shutdown()``,
    /// which ends it with ``EtcdError/Code/closed``.
    private func endedByShutdown(_ what: String, _ stream: @escaping @Sendable () async throws -> Void) async throws {
        try await signal.cuttingShort(stream) { Self.closedError(what) }
    }

    /// The error of a request (`what`) made or ended by the client's shutdown.
    private static func closedError(_ what: String, cause: (any Error)? = nil) -> EtcdError {
        EtcdError(code: .closed, message: "\(what): the etcd client was shut down", cause: cause)
    }

    /// Throws ``EtcdError/Code/closed`` once the client is shut down.
    private func checkOpen(_ what: String) throws(EtcdError) {
        if isShutDown { throw Self.closedError(what) }
    }

    /// The member requests go to now.
    public var preferredMember: EtcdConfiguration.Member {
        connections[preferred.load(ordering: .relaxed) % connections.count].member
    }

    // MARK: - KV

    /// The keys under `prefix` (every key that starts with it) and the revision of the read.
    public func range(prefix: String) async throws(EtcdError) -> EtcdRange {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(prefix.utf8)
        request.rangeEnd = Data(Self.prefixEnd(Array(prefix.utf8)))
        return try await range(request)
    }

    /// The value of one key (and the revision of the read); no key-value when the key does not exist.
    public func get(_ key: String) async throws(EtcdError) -> EtcdRange {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(key.utf8)
        return try await range(request)
    }

    /// Reads the keys under `prefix` in pages of at most `pageSize` keys, all at the revision of
    /// the first page (a consistent snapshot, whatever is written meanwhile), handing each page to
    /// `handle` in key order before the next is read. Returns that revision: watch from the one
    /// after it to see every later change.
    ///
    /// Each page is one `Range` request with a `limit`, continuing after the previous page's last
    /// key, so neither etcd nor the client holds the whole prefix in one message (which gRPC caps
    /// at 4 MiB by default). Pages may come from different members (each read is linearizable).
    ///
    /// - Parameters:
    ///   - prefix: Every key that starts with it is read.
    ///   - pageSize: The most keys in one page; at least 1.
    ///   - handle: Called with each page (its ``EtcdRange/revision`` is the snapshot's); a prefix
    ///     with no keys gives one empty page.
    /// - Throws: ``EtcdError/Code/compacted`` when etcd compacted the snapshot's revision away
    ///   before the last page was read (read again: the pages handed out so far belong to a
    ///   snapshot that can no longer be finished); otherwise as ``range(prefix:)``.
    public func rangePages(
        prefix: String,
        pageSize: Int,
        _ handle: (EtcdRange) async -> Void
    ) async throws(EtcdError) -> Int64 {
        let end = Data(Self.prefixEnd(Array(prefix.utf8)))
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(prefix.utf8)
        request.rangeEnd = end
        request.limit = Int64(max(1, pageSize))
        var snapshot: Int64?
        while true {
            let response = try await rangeResponse(request)
            let revision = snapshot ?? response.header.revision
            guard let last = response.kvs.last?.key, response.more else {
                await handle(EtcdRange(revision: revision, keyValues: response.kvs.map(EtcdKeyValue.init)))
                return revision
            }
            await handle(EtcdRange(revision: revision, keyValues: response.kvs.map(EtcdKeyValue.init), more: true))
            snapshot = revision
            // Every later page at the first page's revision, from just after the last key read.
            request.revision = revision
            request.key = last + [0]
        }
    }

    private func range(_ request: Etcdserverpb_RangeRequest) async throws(EtcdError) -> EtcdRange {
        let response = try await rangeResponse(request)
        return EtcdRange(revision: response.header.revision, keyValues: response.kvs.map(EtcdKeyValue.init), more: response.more)
    }

    private func rangeResponse(_ request: Etcdserverpb_RangeRequest) async throws(EtcdError) -> Etcdserverpb_RangeResponse {
        do {
            return try await unary("range") { grpc, metadata, options in
                try await Etcdserverpb_KV.Client(wrapping: grpc).range(request, metadata: metadata, options: options)
            }
        } catch  where request.revision > 0 && (error.cause as? RPCError)?.message.contains("required revision has been compacted") == true
        {
            // etcd's ErrCompacted (gRPC OUT_OF_RANGE): the revision asked for is gone.
            throw EtcdError(
                code: .compacted,
                message: "the range at revision \(request.revision) was compacted away",
                cause: error.cause
            )
        }
    }

    /// Sets `key` to `value`, attached to `lease` when given. Returns the revision of the write.
    @discardableResult
    public func put(_ key: String, value: some Collection<UInt8>, lease: Int64? = nil) async throws(EtcdError) -> Int64 {
        var request = Etcdserverpb_PutRequest()
        request.key = Data(key.utf8)
        request.value = Data(value)
        request.lease = lease ?? 0
        let response = try await unary("put") { grpc, metadata, options in
            try await Etcdserverpb_KV.Client(wrapping: grpc).put(request, metadata: metadata, options: options)
        }
        return response.header.revision
    }

    /// Sets `key` to a UTF-8 string.
    @discardableResult
    public func put(_ key: String, value: String, lease: Int64? = nil) async throws(EtcdError) -> Int64 {
        try await put(key, value: Array(value.utf8), lease: lease)
    }

    /// Deletes `key`. Returns the number of keys deleted and the revision.
    @discardableResult
    public func delete(_ key: String) async throws(EtcdError) -> (deleted: Int64, revision: Int64) {
        var request = Etcdserverpb_DeleteRangeRequest()
        request.key = Data(key.utf8)
        return try await delete(request)
    }

    /// Deletes every key under `prefix`.
    @discardableResult
    public func delete(prefix: String) async throws(EtcdError) -> (deleted: Int64, revision: Int64) {
        var request = Etcdserverpb_DeleteRangeRequest()
        request.key = Data(prefix.utf8)
        request.rangeEnd = Data(Self.prefixEnd(Array(prefix.utf8)))
        return try await delete(request)
    }

    private func delete(_ request: Etcdserverpb_DeleteRangeRequest) async throws(EtcdError) -> (deleted: Int64, revision: Int64) {
        let response = try await unary("delete") { grpc, metadata, options in
            try await Etcdserverpb_KV.Client(wrapping: grpc).deleteRange(request, metadata: metadata, options: options)
        }
        return (response.deleted, response.header.revision)
    }

    /// Compacts the key-value history up to `revision` (watches from before it are cancelled).
    public func compact(revision: Int64) async throws(EtcdError) {
        var request = Etcdserverpb_CompactionRequest()
        request.revision = revision
        request.physical = true
        _ = try await unary("compact") { grpc, metadata, options in
            try await Etcdserverpb_KV.Client(wrapping: grpc).compact(request, metadata: metadata, options: options)
        }
    }

    // MARK: - Leases

    /// Grants a lease of `ttl` (whole seconds, at least 1). Returns its id and the TTL etcd granted.
    public func grantLease(ttl: Duration) async throws(EtcdError) -> (id: Int64, ttl: Duration) {
        var request = Etcdserverpb_LeaseGrantRequest()
        request.ttl = max(1, ttl.components.seconds)
        let response = try await unary("lease grant") { grpc, metadata, options in
            try await Etcdserverpb_Lease.Client(wrapping: grpc).leaseGrant(request, metadata: metadata, options: options)
        }
        guard response.error.isEmpty else {
            throw EtcdError(code: .other, message: "lease grant refused: \(response.error)")
        }
        return (response.id, .seconds(response.ttl))
    }

    /// Revokes a lease: every key attached to it is deleted.
    public func revokeLease(_ id: Int64) async throws(EtcdError) {
        var request = Etcdserverpb_LeaseRevokeRequest()
        request.id = id
        do {
            _ = try await unary("lease revoke") { grpc, metadata, options in
                try await Etcdserverpb_Lease.Client(wrapping: grpc).leaseRevoke(request, metadata: metadata, options: options)
            }
        } catch  where error.code == .leaseExpired {
            return // already gone: what revoking wanted
        }
    }

    /// Keeps a lease alive: renews it every `interval` on the preferred member until cancelled.
    ///
    /// - Throws: ``EtcdError/Code/leaseExpired`` when etcd says the lease is gone, and
    ///   ``EtcdError/Code/unavailable`` when the stream to the member breaks (the next member then
    ///   becomes the preferred one; call again to go on); ``EtcdError/Code/closed`` when the client
    ///   is shut down.
    public func keepAlive(lease id: Int64, every interval: Duration, onRenewed: @escaping @Sendable (Duration) -> Void = { _ in })
        async throws(EtcdError)
    {
        try checkOpen("keep-alive")
        let (index, connection) = current()
        let metadata = try await metadata(on: connection)
        var keepAlive = Etcdserverpb_LeaseKeepAliveRequest()
        keepAlive.id = id
        let request = keepAlive
        do {
            try await endedByShutdown("keep-alive") {
                try await Etcdserverpb_Lease.Client(wrapping: connection.grpc).leaseKeepAlive(
                    metadata: metadata,
                    options: self.streamOptions,
                    requestProducer: { writer in
                        while true {
                            try await writer.write(request)
                            try await Task.sleep(for: interval)
                        }
                    },
                    onResponse: { response in
                        for try await message in response.messages {
                            guard message.ttl > 0 else {
                                throw EtcdError(code: .leaseExpired, message: "lease \(id) has expired")
                            }
                            onRenewed(.seconds(message.ttl))
                        }
                        throw EtcdError(code: .unavailable, message: "the keep-alive stream to \(connection.member) ended")
                    }
                )
            }
        } catch {
            throw failure(error, on: index, during: "keep-alive")
        }
    }

    // MARK: - Watch

    /// Watches the keys under `prefix` from `startRevision` (inclusive) on the preferred member,
    /// handing each batch of events to `handle` in revision order, until cancelled.
    ///
    /// Progress notifications (batches without events) are requested every `progressInterval`,
    /// so the caller learns the revision it is current at even when nothing changes.
    ///
    /// - Throws: ``EtcdError/Code/compacted`` when `startRevision` is older than the compacted
    ///   history (list again, then watch from the list's revision + 1);
    ///   ``EtcdError/Code/unavailable`` when the member fails, loses its leader, or ends the stream
    ///   (the next member becomes the preferred one; watch again from the next revision you need);
    ///   ``EtcdError/Code/closed`` when the client is shut down.
    public func watch(
        prefix: String,
        startRevision: Int64,
        progressInterval: Duration = .seconds(30),
        handle: @escaping @Sendable (EtcdWatchBatch) async throws -> Void
    ) async throws(EtcdError) {
        try checkOpen("watch")
        let (index, connection) = current()
        var metadata = try await metadata(on: connection)
        // etcd's "require leader": a member without a leader cancels the watch rather than stall it.
        metadata.addString("true", forKey: "hasleader")
        var create = Etcdserverpb_WatchCreateRequest()
        create.key = Data(prefix.utf8)
        create.rangeEnd = Data(Self.prefixEnd(Array(prefix.utf8)))
        create.startRevision = startRevision
        create.progressNotify = true
        var createMessage = Etcdserverpb_WatchRequest()
        createMessage.createRequest = create
        var progressMessage = Etcdserverpb_WatchRequest()
        progressMessage.progressRequest = Etcdserverpb_WatchProgressRequest()
        let createRequest = createMessage
        let progressRequest = progressMessage
        let member = connection.member
        let watchMetadata = metadata
        do {
            try await endedByShutdown("watch") {
                try await Etcdserverpb_Watch.Client(wrapping: connection.grpc).watch(
                    metadata: watchMetadata,
                    options: self.streamOptions,
                    requestProducer: { writer in
                        try await writer.write(createRequest)
                        while true {
                            try await Task.sleep(for: progressInterval)
                            try await writer.write(progressRequest)
                        }
                    },
                    onResponse: { response in
                        for try await message in response.messages {
                            if message.canceled {
                                if message.compactRevision > 0 {
                                    throw EtcdError(
                                        code: .compacted,
                                        message: "the watch from revision \(startRevision) was cancelled by compaction",
                                        compactRevision: message.compactRevision
                                    )
                                }
                                throw EtcdError(
                                    code: message.cancelReason.contains("no leader") ? .unavailable : .watchCanceled,
                                    message: "\(member) cancelled the watch: \(message.cancelReason)"
                                )
                            }
                            if message.created, message.events.isEmpty { continue }
                            try await handle(
                                EtcdWatchBatch(revision: message.header.revision, events: message.events.map(EtcdEvent.init))
                            )
                        }
                        throw EtcdError(code: .unavailable, message: "the watch stream to \(member) ended")
                    }
                )
            }
        } catch {
            throw failure(error, on: index, during: "watch")
        }
    }

    // MARK: - Maintenance

    /// The status of one member: its id, the leader's id as it sees it, and its revision.
    public func status(of member: EtcdConfiguration.Member) async throws(EtcdError) -> EtcdMemberStatus {
        try checkOpen("status")
        guard let connection = connections.first(where: { $0.member == member }) else {
            throw EtcdError(code: .invalidArgument, message: "\(member) is not a configured member")
        }
        do {
            let response = try await Etcdserverpb_Maintenance.Client(wrapping: connection.grpc).status(
                Etcdserverpb_StatusRequest(),
                options: unaryOptions
            )
            return EtcdMemberStatus(
                memberID: response.header.memberID,
                leaderID: response.leader,
                revision: response.header.revision,
                version: response.version
            )
        } catch {
            throw EtcdError(code: .unavailable, message: "status of \(member) failed", cause: error)
        }
    }

    // MARK: - Plumbing

    private var unaryOptions: CallOptions {
        var options = CallOptions.defaults
        options.timeout = configuration.requestTimeout
        options.waitForReady = false
        return options
    }

    private var streamOptions: CallOptions {
        var options = CallOptions.defaults
        options.waitForReady = false
        return options
    }

    private func current() -> (Int, Connection) {
        let index = preferred.load(ordering: .relaxed) % connections.count
        return (index, connections[index])
    }

    /// Makes the member after `index` the preferred one (unless another request already moved on).
    private func moveOn(from index: Int) {
        let next = (index + 1) % connections.count
        if preferred.compareExchange(expected: index, desired: next, ordering: .relaxed).exchanged, connections.count > 1 {
            logger.info(
                "etcd member failed, trying the next",
                metadata: [
                    "loadbalancer.etcd.member": "\(connections[index].member)",
                    "loadbalancer.etcd.next": "\(connections[next].member)",
                ]
            )
        }
    }

    /// Whether an error says the member, not the request, is the problem.
    private static func isMemberFailure(_ error: RPCError) -> Bool {
        switch error.code {
        case .unavailable, .deadlineExceeded, .unknown, .internalError: true
        default: false
        }
    }

    private static func isAuthFailure(_ error: RPCError) -> Bool {
        error.code == .unauthenticated || error.message.contains("invalid auth token")
    }

    /// Maps an error of a streaming call on member `index` to an ``EtcdError``, moving on from
    /// the member when it is the member's fault.
    private func failure(_ error: any Error, on index: Int, during what: String) -> EtcdError {
        if isShutDown, (error as? EtcdError)?.code != .closed {
            return Self.closedError(what, cause: error)
        }
        if let error = error as? EtcdError {
            if error.code == .unavailable { moveOn(from: index) }
            return error
        }
        if let error = error as? RPCError {
            if Self.isAuthFailure(error) {
                token.withLock { $0 = nil }
                return EtcdError(code: .unauthenticated, message: "\(what): \(error.message)", cause: error)
            }
            if Self.isMemberFailure(error) {
                moveOn(from: index)
                return EtcdError(code: .unavailable, message: "\(what) on \(connections[index].member) failed", cause: error)
            }
            return EtcdError(code: .other, message: "\(what) failed", cause: error)
        }
        return EtcdError(code: .other, message: "\(what) failed", cause: error)
    }

    /// Runs a unary request on the preferred member, moving on to the next on a member failure
    /// and authenticating again when the token has expired.
    private func unary<Response: Sendable>(
        _ what: String,
        _ body: (GRPCClient<HTTP2ClientTransport.Posix>, Metadata, CallOptions) async throws -> Response
    ) async throws(EtcdError) -> Response {
        var failures: [String] = []
        var renewedToken = false
        var tries = 0
        // Every member once, and at least three tries: a single member's stream can reset once
        // (a connection just made, a leader just elected) without the member being gone.
        let maxTries = max(3, connections.count)
        while tries < maxTries {
            try checkOpen(what)
            if tries >= connections.count || (tries > 0 && connections.count == 1) {
                do {
                    try await Task.sleep(for: .milliseconds(50 * tries))
                } catch {
                    throw EtcdError(code: .other, message: "\(what) cancelled", cause: error)
                }
            }
            let (index, connection) = current()
            do {
                let metadata = try await metadata(on: connection)
                return try await body(connection.grpc, metadata, unaryOptions)
            } catch let error as RPCError {
                if Self.isAuthFailure(error), configuration.credentials != nil, !renewedToken {
                    token.withLock { $0 = nil }
                    renewedToken = true
                    continue
                }
                guard Self.isMemberFailure(error) else {
                    if error.message.contains("requested lease not found") {
                        throw EtcdError(code: .leaseExpired, message: "\(what): \(error.message)", cause: error)
                    }
                    throw EtcdError(code: .other, message: "\(what): \(error.message)", cause: error)
                }
                failures.append("\(connection.member): \(error.code) \(error.message)")
                moveOn(from: index)
                tries += 1
            } catch let error as EtcdError {
                guard error.code == .unavailable else { throw error }
                failures.append("\(connection.member): \(error.message)")
                moveOn(from: index)
                tries += 1
            } catch {
                throw EtcdError(code: .other, message: "\(what) failed", cause: error)
            }
        }
        throw EtcdError(code: .unavailable, message: "\(what) failed on every member: \(failures.joined(separator: "; "))")
    }

    /// The request metadata: the auth token, authenticating first when needed.
    private func metadata(on connection: Connection) async throws(EtcdError) -> Metadata {
        guard let credentials = configuration.credentials else { return [:] }
        if let token = token.withLock({ $0 }) { return Self.metadata(token: token) }
        var request = Etcdserverpb_AuthenticateRequest()
        request.name = credentials.username
        request.password = credentials.password
        let response: Etcdserverpb_AuthenticateResponse
        do {
            response = try await Etcdserverpb_Auth.Client(wrapping: connection.grpc).authenticate(request, options: unaryOptions)
        } catch let error as RPCError where Self.isMemberFailure(error) {
            throw EtcdError(code: .unavailable, message: "authenticate on \(connection.member) failed", cause: error)
        } catch {
            throw EtcdError(code: .unauthenticated, message: "etcd refused the credentials of \(credentials.username)", cause: error)
        }
        token.withLock { $0 = response.token }
        return Self.metadata(token: response.token)
    }

    private static func metadata(token: String) -> Metadata {
        var metadata = Metadata()
        metadata.addString(token, forKey: "token")
        return metadata
    }

    /// The end of the range of keys that start with `prefix`: the prefix with its last byte below
    /// 0xFF incremented (etcd's convention; `\0` means "to the end of the keyspace").
    static func prefixEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]
    }

    private static func target(_ member: EtcdConfiguration.Member) -> any ResolvableTarget {
        if member.host.contains(":") { return .ipv6(address: member.host, port: member.port) }
        if member.host.allSatisfy({ $0 == "." || $0.isASCII && $0.isNumber }) {
            return .ipv4(address: member.host, port: member.port)
        }
        return .dns(host: member.host, port: member.port)
    }

    private static func security(_ tls: EtcdConfiguration.TLS?, member: EtcdConfiguration.Member)
        -> HTTP2ClientTransport.Posix.TransportSecurity
    {
        guard let tls else { return .plaintext }
        return .tls { config in
            if let roots = tls.trustRootsPath {
                config.trustRoots = .certificates([.file(path: roots, format: .pem)])
            }
            if let certificate = tls.clientCertificatePath, let key = tls.clientKeyPath {
                config.certificateChain = [.file(path: certificate, format: .pem)]
                config.privateKey = .file(path: key, format: .pem)
            }
        }
    }
}

/// What ``EtcdClient/status(of:)`` returns.
public struct EtcdMemberStatus: Sendable, Hashable {
    /// The member's id.
    public var memberID: UInt64
    /// The leader's member id as this member sees it (0: no leader).
    public var leaderID: UInt64
    /// The member's current store revision.
    public var revision: Int64
    /// The member's etcd version, such as `3.4.30`.
    public var version: String

    /// Whether this member is the leader.
    public var isLeader: Bool { memberID != 0 && memberID == leaderID }
}
