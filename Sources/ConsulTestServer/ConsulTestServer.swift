import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// A Consul-API server for tests, over real HTTP on 127.0.0.1 (no Consul can be installed where the
/// tests run). It implements the documented behaviour the client relies on, not Consul, and is as
/// strict as a real agent where a lenient server would hide a client bug:
///
/// - `GET /v1/health/service/NAME` with `passing` (bare, or a Go boolean: any other value is a
///   400; every check of the entry, the node's `serfHealth` included, must be `passing`), `tag`
///   (repeatable: all must match, without regard to case), `dc` (an unknown datacenter is a 500,
///   "No path to datacenter"), `stale` / `consistent` (both at once is a 400), `cached` (answered
///   with `X-Cache`), and blocking queries: with `index` (not a number: 400), the request is held
///   until the service's index moves past it or `wait` elapses (`0s` or none: 5 minutes; capped at
///   the agent's `max_query_time`, 10 minutes unless started otherwise; plus up to `wait / 16`).
///   A held request is dropped when its client disconnects. Every answer carries `X-Consul-Index`.
/// - Entries as Consul encodes them: `Port` left out when 0, `SocketPath` when set, the node's
///   `Address` and the service's own `Address` (empty when not set), `Weights`, `Tags`, `Meta`,
///   the checks.
/// - ACLs, when started with a `token` (a management token): a request without a token is
///   anonymous and may read nothing; an unknown token is a 403 ("ACL not found"); a token made
///   with ``addACLToken(_:readableServices:)`` reads only those services. A health answer that
///   left entries out says so with `X-Consul-Results-Filtered-By-ACLs: true` (200, not 403); agent
///   writes need the management token (403 "Permission denied" otherwise). As in Consul, a held
///   query keeps the rights its token had when it was asked.
/// - `PUT /v1/agent/service/register` (ID, Name, Address, Port, Tags, Meta, Weights (Passing in
///   `1...65535`, Warning in `0...65535`), and a TTL `Check` with CheckID, Name, TTL,
///   DeregisterCriticalServiceAfter, Status); the check starts critical unless `Status` says
///   otherwise, and is named `service:ID` when it has no CheckID. Registering an existing ID keeps the old registration's checks
///   (those the new one does not redefine) unless `replace-existing-checks` is set.
/// - `PUT /v1/agent/check/pass/ID`: passing for another TTL; one TTL after the last pass the check
///   turns critical (the instance leaves `?passing`). A service critical for
///   DeregisterCriticalServiceAfter (at least one minute, Consul's minimum) is removed by a reaper
///   that runs every 30 s; the server's clock can be moved forward with ``advanceTime(by:)``.
///   An unknown check is a 404.
/// - `PUT /v1/agent/service/deregister/ID` (404 when unknown).
///
/// Each write moves a global index; a service's index is that of its last change; blocked queries
/// wake when their service's index moves past theirs. Fault injection: see ``Fault``,
/// ``resetIndex(to:)``, ``stop()`` and ``restart()`` (the same port, the catalog kept).
public final class ConsulTestServer: Sendable {
    /// A misbehaviour to inject, per ``Endpoint``.
    public enum Fault: Sendable, Equatable {
        /// Answer with this status and a plain-text body, without an index.
        case status(Int)
        /// Answer 200, with an index, and a body that is not JSON.
        case garbage
        /// Hold each request this long, then handle it normally.
        case delay(Duration)
        /// Answer health queries at once with the current set and index, never blocking (a
        /// misbehaving agent: a client that does not back off spins against it).
        case noBlocking
        /// Answer 429 Too Many Requests (the agent's rate limit), with `Retry-After` in seconds when given.
        case rateLimited(retryAfterSeconds: Int?)
    }

    /// Which requests a fault applies to.
    public enum Endpoint: Sendable, Hashable {
        /// `/v1/health/...`
        case health
        /// `/v1/agent/...`
        case agent
    }

    /// A request as the server saw it.
    public struct RecordedRequest: Sendable {
        /// The method, `GET` or `PUT`.
        public var method: String
        /// The path, without the query.
        public var path: String
        /// The query items, in order; a bare key (`passing`) has a `nil` value.
        public var query: [(name: String, value: String?)]
        /// The `X-Consul-Token` header.
        public var token: String?
        /// When it arrived.
        public var time: ContinuousClock.Instant

        /// The values of a query item.
        public func values(_ name: String) -> [String] {
            query.filter { $0.name == name }.compactMap(\.value)
        }
    }

    /// A registered service instance, as the server holds it.
    public struct ServiceInstance: Sendable, Hashable {
        /// The node it is on.
        public var node: String
        /// `ID`.
        public var id: String
        /// `Name`.
        public var name: String
        /// `Address` (empty: the node's).
        public var address: String
        /// `Port`; 0 is left out of answers, as Consul does.
        public var port: Int
        /// `SocketPath`, for a service on a Unix socket.
        public var socketPath: String?
        /// `Tags`.
        public var tags: [String]
        /// `Meta`.
        public var meta: [String: String]
        /// `Weights.Passing`.
        public var passingWeight: Int
        /// `Weights.Warning`.
        public var warningWeight: Int
        /// The service's checks, by id.
        public var checks: [String: Check]
    }

    /// A check of a service.
    public struct Check: Sendable, Hashable {
        /// `CheckID`.
        public var id: String
        /// `Name`.
        public var name: String
        /// `passing`, `warning` or `critical`.
        public var status: String
        /// The TTL, for a TTL check.
        public var ttl: Duration?
        /// `DeregisterCriticalServiceAfter`.
        public var deregisterCriticalServiceAfter: Duration?
        /// How many times it was passed.
        public var passes: Int
        /// When a TTL check turns critical unless passed before (the server's clock).
        var deadline: ContinuousClock.Instant?
        /// Since when it has been critical (the server's clock).
        var criticalSince: ContinuousClock.Instant?
    }

    struct Node: Sendable {
        var name: String
        var address: String
        var datacenter: String
        var status: String
    }

    struct ServiceKey: Hashable, Sendable {
        var node: String
        var id: String
    }

    struct Waiter: Sendable {
        var datacenter: String
        var service: String
        var minIndex: UInt64
        var query: HealthQuery
        var connection: ObjectIdentifier?
        var respond: @Sendable (Response) -> Void
    }

    struct HealthQuery: Sendable {
        var passing: Bool
        var tags: [String]
        /// The services the token may read; `nil` for all (management, or no ACLs).
        var readable: Set<String>?
        var cached: Bool
    }

    struct Response: Sendable {
        var status: HTTPResponseStatus
        var index: UInt64?
        var body: String
        var json: Bool
        var headers: [(String, String)] = []
    }

    /// What a request's token may do.
    enum Authority: Sendable {
        case management
        case read(Set<String>)
    }

    struct State: Sendable {
        var nodes: [String: Node] = [:]
        var services: [ServiceKey: ServiceInstance] = [:]
        var index: UInt64 = 10
        var serviceIndex: [String: UInt64] = [:]
        var waiters: [Int: Waiter] = [:]
        var nextWaiter = 0
        var faults: [Endpoint: Fault] = [:]
        var requests: [RecordedRequest] = []
        var port = 0
        var channel: (any Channel)?
        var children: [ObjectIdentifier: any Channel] = [:]
        var aclTokens: [String: Set<String>] = [:]
        var timeOffset: Duration = .zero
        var reaper: RepeatedTask?
    }

    /// The port it listens on, on 127.0.0.1 (the same across ``restart()``).
    public var port: Int { state.withLock { $0.port } }
    /// The agent's own datacenter.
    public let datacenter: String
    /// The agent's own node name; agent registrations go to it.
    public let nodeName: String
    /// The management token, when ACLs are on (a request without a token reads nothing).
    public let token: String?
    /// The longest a blocking query is held (the agent's `max_query_time`).
    public let maxQueryTime: Duration
    let state: Mutex<State>
    let loop: any EventLoop
    /// The TLS context when the server serves HTTPS.
    private let tlsContext: NIOSSLContext?

    private init(
        datacenter: String,
        nodeName: String,
        token: String?,
        maxQueryTime: Duration,
        state: State,
        loop: any EventLoop,
        tlsContext: NIOSSLContext?
    ) {
        self.tlsContext = tlsContext
        self.maxQueryTime = maxQueryTime
        self.datacenter = datacenter
        self.nodeName = nodeName
        self.token = token
        self.state = Mutex(state)
        self.loop = loop
    }

    /// Starts a server on 127.0.0.1 at a free port.
    ///
    /// - Parameters:
    ///   - datacenter: The agent's datacenter. Default `dc1`.
    ///   - nodeName: The agent's node. Default `agent-1`.
    ///   - nodeAddress: The agent node's address. Default `127.0.0.1`.
    ///   - token: Turns ACLs on, with this management token (default deny: a request without a
    ///     token reads nothing). Default: ACLs off.
    ///   - maxQueryTime: The agent's `max_query_time`: the longest a blocking query is held.
    ///     Default 10 minutes, Consul's.
    ///   - tls: A certificate chain and key (PEM files) to serve HTTPS with, as an agent with
    ///     `tls.https` does. Default: plain HTTP.
    public static func start(
        datacenter: String = "dc1",
        nodeName: String = "agent-1",
        nodeAddress: String = "127.0.0.1",
        token: String? = nil,
        maxQueryTime: Duration = .seconds(600),
        tls: (certificatePath: String, keyPath: String)? = nil
    ) async throws -> ConsulTestServer {
        let tlsContext = try tls.map { files in
            try NIOSSLContext(
                configuration: .makeServerConfiguration(
                    certificateChain: try NIOSSLCertificate.fromPEMFile(files.certificatePath).map { .certificate($0) },
                    privateKey: .privateKey(try NIOSSLPrivateKey(file: files.keyPath, format: .pem))
                )
            )
        }
        var state = State()
        state.nodes[nodeName] = Node(name: nodeName, address: nodeAddress, datacenter: datacenter, status: "passing")
        let server = ConsulTestServer(
            datacenter: datacenter,
            nodeName: nodeName,
            token: token,
            maxQueryTime: maxQueryTime,
            state: state,
            loop: MultiThreadedEventLoopGroup.singleton.next(),
            tlsContext: tlsContext
        )
        let channel = try await server.bind(port: 0)
        server.state.withLock { $0.port = channel.localAddress?.port ?? 0 }
        server.startReaper()
        return server
    }

    /// Consul's reaper: every 30 s, services critical for their DeregisterCriticalServiceAfter go.
    private func startReaper() {
        let task = loop.scheduleRepeatedTask(initialDelay: .seconds(30), delay: .seconds(30)) { [weak self] _ in
            self?.sweep()
        }
        state.withLock { $0.reaper = task }
    }

    /// Binds the listening socket; accepted connections are served by this server.
    private func bind(port: Int) async throws -> any Channel {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [weak self] channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let self else { throw ChannelError.ioOnClosedChannel }
                    let id = ObjectIdentifier(channel)
                    self.state.withLock { $0.children[id] = channel }
                    channel.closeFuture.whenComplete { [weak self] _ in
                        // The client went away: its held query goes too (Consul stops waiting
                        // when the request's context is cancelled).
                        self?.state.withLock { state in
                            _ = state.children.removeValue(forKey: id)
                            state.waiters = state.waiters.filter { $0.value.connection != id }
                        }
                    }
                    if let tlsContext = self.tlsContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tlsContext))
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(ConsulHTTPHandler(server: self))
                }
            }
            .bind(host: "127.0.0.1", port: port)
            .get()
        state.withLock { $0.channel = channel }
        return channel
    }

    /// Stops listening and closes every connection; held queries are dropped. The catalog stays.
    public func stop() async {
        let (channel, children) = state.withLock { state in
            defer {
                state.channel = nil
                state.children = [:]
                state.waiters = [:]
            }
            state.reaper?.cancel()
            state.reaper = nil
            return (state.channel, Array(state.children.values))
        }
        try? await channel?.close()
        for child in children { try? await child.close() }
    }

    /// Listens again on the same port, after ``stop()``.
    public func restart() async throws {
        // The port was just released; binding it again may briefly fail (bounded retries).
        var lastError: (any Error)?
        for _ in 0..<100 {
            do {
                _ = try await bind(port: port)
                startReaper()
                return
            } catch {
                lastError = error
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        throw lastError ?? ChannelError.ioOnClosedChannel
    }

    // MARK: - Test controls

    /// Injects `fault` into every later request to `endpoint` (`nil` clears it).
    public func setFault(_ fault: Fault?, for endpoint: Endpoint) {
        state.withLock { $0.faults[endpoint] = fault }
    }

    /// Adds an ACL token that may read the given services (and every node) and nothing else;
    /// agent writes need the management token.
    public func addACLToken(_ secret: String, readableServices: Set<String>) {
        state.withLock { $0.aclTokens[secret] = readableServices }
    }

    /// Moves the server's clock forward by `duration`, as if that much time had passed: TTL checks
    /// whose TTL ran out in it turn critical, and the reaper runs.
    public func advanceTime(by duration: Duration) {
        state.withLock { $0.timeOffset += duration }
        sweep()
    }

    /// The server's clock: the continuous clock, moved forward by ``advanceTime(by:)``.
    var now: ContinuousClock.Instant { state.withLock { ContinuousClock.now + $0.timeOffset } }

    /// Adds (or replaces) a node, in any datacenter.
    public func addNode(_ name: String, address: String, datacenter: String? = nil) {
        state.withLock {
            $0.nodes[name] = Node(name: name, address: address, datacenter: datacenter ?? self.datacenter, status: "passing")
        }
    }

    /// Sets the status of a node's `serfHealth` check (`passing`, `critical`...).
    public func setNodeStatus(_ name: String, _ status: String) {
        wake { state in
            guard state.nodes[name] != nil else { return [] }
            state.nodes[name]?.status = status
            let keys = state.services.values.filter { $0.node == name }.map { self.key(state, $0) }
            return Set(keys)
        }
    }

    /// Registers a service instance in the catalog of `node` (the agent's own by default), with one
    /// check of the given status and no TTL: the test sets its status by hand.
    public func addService(
        id: String,
        name: String,
        node: String? = nil,
        address: String = "",
        port: Int,
        socketPath: String? = nil,
        tags: [String] = [],
        meta: [String: String] = [:],
        passingWeight: Int = 1,
        warningWeight: Int = 1,
        status: String = "passing"
    ) {
        let node = node ?? nodeName
        let check = Check(id: "service:\(id)", name: "Service '\(name)' check", status: status, passes: 0)
        let instance = ServiceInstance(
            node: node,
            id: id,
            name: name,
            address: address,
            port: port,
            socketPath: socketPath,
            tags: tags,
            meta: meta,
            passingWeight: passingWeight,
            warningWeight: warningWeight,
            checks: [check.id: check]
        )
        wake { state in
            state.services[ServiceKey(node: node, id: id)] = instance
            return [self.key(state, instance)]
        }
    }

    /// Sets the status of every check of a service instance.
    public func setServiceStatus(id: String, node: String? = nil, _ status: String) {
        let key = ServiceKey(node: node ?? nodeName, id: id)
        wake { state in
            guard var instance = state.services[key] else { return [] }
            for checkID in instance.checks.keys {
                instance.checks[checkID]?.status = status
                instance.checks[checkID]?.deadline = nil
            }
            state.services[key] = instance
            return [self.key(state, instance)]
        }
    }

    /// Removes a service instance.
    public func removeService(id: String, node: String? = nil) {
        let key = ServiceKey(node: node ?? nodeName, id: id)
        wake { state in
            guard let instance = state.services.removeValue(forKey: key) else { return [] }
            return [self.key(state, instance)]
        }
    }

    /// Sets the index back to `index` (as a restored snapshot would): every service's index
    /// becomes `index`, and every held query is answered at once with it.
    public func resetIndex(to index: UInt64) {
        let woken = state.withLock { state -> [(Waiter, Response)] in
            state.index = index
            for key in state.serviceIndex.keys { state.serviceIndex[key] = index }
            let waiters = Array(state.waiters.values)
            state.waiters = [:]
            return waiters.map { ($0, self.healthResponse(state, $0.datacenter, $0.service, $0.query)) }
        }
        for (waiter, response) in woken { waiter.respond(response) }
    }

    /// The global index.
    public var index: UInt64 { state.withLock { $0.index } }

    /// The instance registered with `id` on the agent's node (or `node`), if any.
    public func service(id: String, node: String? = nil) -> ServiceInstance? {
        state.withLock { $0.services[ServiceKey(node: node ?? nodeName, id: id)] }
    }

    /// The requests received so far, oldest first.
    public var requests: [RecordedRequest] { state.withLock { $0.requests } }

    /// How many requests to `endpoint` have been received.
    public func requestCount(_ endpoint: Endpoint) -> Int {
        state.withLock { state in state.requests.filter { Self.endpoint(of: $0.path) == endpoint }.count }
    }

    /// How many health queries are being held.
    public var heldQueries: Int { state.withLock { $0.waiters.count } }

    // MARK: - Internals

    static func endpoint(of path: String) -> Endpoint? {
        if path.hasPrefix("/v1/health/") { return .health }
        if path.hasPrefix("/v1/agent/") { return .agent }
        return nil
    }

    /// The blocking-index key of an instance's service.
    func key(_ state: State, _ instance: ServiceInstance) -> String {
        Self.indexKey(datacenter: state.nodes[instance.node]?.datacenter ?? datacenter, service: instance.name)
    }

    static func indexKey(datacenter: String, service: String) -> String { "\(datacenter)/\(service)" }

    /// Applies a write: moves the index of every service key `change` returns, then answers the
    /// held queries whose service index moved past theirs.
    func wake(_ change: (inout State) -> Set<String>) {
        let woken = state.withLock { state -> [(Waiter, Response)] in
            let keys = change(&state)
            guard !keys.isEmpty else { return [] }
            state.index += 1
            for key in keys { state.serviceIndex[key] = state.index }
            var woken: [(Waiter, Response)] = []
            for (id, waiter) in state.waiters {
                let key = Self.indexKey(datacenter: waiter.datacenter, service: waiter.service)
                guard keys.contains(key), (state.serviceIndex[key] ?? 1) > waiter.minIndex else { continue }
                state.waiters[id] = nil
                woken.append((waiter, healthResponse(state, waiter.datacenter, waiter.service, waiter.query)))
            }
            return woken
        }
        for (waiter, response) in woken { waiter.respond(response) }
    }

    /// Handles one request; `respond` may be called later (a held query), once.
    func handle(
        method: HTTPMethod,
        uri: String,
        token: String?,
        connection: ObjectIdentifier? = nil,
        body: ByteBuffer,
        respond: @escaping @Sendable (Response) -> Void
    ) {
        let (path, query) = Self.split(uri)
        let fault = state.withLock { state -> Fault? in
            state.requests.append(
                RecordedRequest(method: method.rawValue, path: path, query: query, token: token, time: .now)
            )
            return Self.endpoint(of: path).flatMap { state.faults[$0] }
        }
        let authority: Authority
        if let management = self.token {
            let given = token.flatMap { $0.isEmpty ? nil : $0 }
            if given == management {
                authority = .management
            } else if let given {
                guard let readable = state.withLock({ $0.aclTokens[given] }) else {
                    respond(Response(status: .forbidden, body: "ACL not found", json: false))
                    return
                }
                authority = .read(readable)
            } else {
                authority = .read([]) // the anonymous token, under default deny
            }
        } else {
            authority = .management
        }
        switch fault {
        case .status(let code)?:
            respond(Response(status: HTTPResponseStatus(statusCode: code), body: "injected fault: HTTP \(code)", json: false))
        case .garbage?:
            respond(Response(status: .ok, index: index, body: "[{\"Node\": {\"Node\": \"agent-1\", \"Addr", json: true))
        case .rateLimited(let retryAfter)?:
            respond(
                Response(
                    status: .tooManyRequests,
                    body: "rate limit exceeded",
                    json: false,
                    headers: retryAfter.map { [("Retry-After", "\($0)")] } ?? []
                )
            )
        case .delay(let delay)?:
            loop.scheduleTask(in: TimeAmount(delay)) {
                self.route(
                    method: method, path: path, query: query, body: body, blocking: true,
                    authority: authority, connection: connection, respond: respond
                )
            }
        case .noBlocking?:
            route(
                method: method, path: path, query: query, body: body, blocking: false,
                authority: authority, connection: connection, respond: respond
            )
        case nil:
            route(
                method: method, path: path, query: query, body: body, blocking: true,
                authority: authority, connection: connection, respond: respond
            )
        }
    }

    private func route(
        method: HTTPMethod,
        path: String,
        query: [(name: String, value: String?)],
        body: ByteBuffer,
        blocking: Bool,
        authority: Authority,
        connection: ObjectIdentifier?,
        respond: @escaping @Sendable (Response) -> Void
    ) {
        let healthPrefix = "/v1/health/service/"
        if path.hasPrefix(healthPrefix) {
            guard method == .GET else { return respond(Response(status: .methodNotAllowed, body: "method not allowed", json: false)) }
            let name = String(path.dropFirst(healthPrefix.count)).removingPercentEncoding ?? ""
            return health(
                name, query: query, blocking: blocking, authority: authority, connection: connection, respond: respond
            )
        }
        guard path.hasPrefix("/v1/agent/") else {
            return respond(Response(status: .notFound, body: "no such endpoint", json: false))
        }
        guard method == .PUT else { return respond(Response(status: .methodNotAllowed, body: "method not allowed", json: false)) }
        guard case .management = authority else {
            return respond(Response(status: .forbidden, body: "Permission denied", json: false))
        }
        if path == "/v1/agent/service/register" {
            let replace = query.first { $0.name == "replace-existing-checks" }
            let replaceChecks: Bool
            switch replace?.value {
            case nil: replaceChecks = replace != nil
            case let value?:
                guard let parsed = Self.goBool(value) else {
                    return respond(
                        Response(status: .badRequest, body: "Invalid value for replace-existing-checks", json: false)
                    )
                }
                replaceChecks = parsed
            }
            respond(register(body, replaceExistingChecks: replaceChecks))
        } else if let id = Self.suffix(path, after: "/v1/agent/check/pass/") {
            respond(pass(checkID: id, note: query.first { $0.name == "note" }?.value))
        } else if let id = Self.suffix(path, after: "/v1/agent/service/deregister/") {
            respond(deregister(id))
        } else {
            respond(Response(status: .notFound, body: "no such endpoint", json: false))
        }
    }

    private static func suffix(_ path: String, after prefix: String) -> String? {
        guard path.hasPrefix(prefix) else { return nil }
        let rest = String(path.dropFirst(prefix.count)).removingPercentEncoding ?? ""
        return rest.isEmpty ? nil : rest
    }

    // MARK: Health

    private func health(
        _ name: String,
        query: [(name: String, value: String?)],
        blocking: Bool,
        authority: Authority,
        connection: ObjectIdentifier?,
        respond: @escaping @Sendable (Response) -> Void
    ) {
        func bad(_ message: String) { respond(Response(status: .badRequest, body: message, json: false)) }
        var passing = false
        if let item = query.first(where: { $0.name == "passing" }) {
            // Bare (or empty) is true; otherwise a Go boolean.
            guard let value = item.value.map({ $0.isEmpty ? true : Self.goBool($0) }) ?? true else {
                return bad("Invalid value for ?passing")
            }
            passing = value
        }
        let tags = query.filter { $0.name == "tag" }.compactMap(\.value)
        let datacenter = query.first { $0.name == "dc" }?.value ?? self.datacenter
        if query.contains(where: { $0.name == "stale" }), query.contains(where: { $0.name == "consistent" }) {
            return bad("Cannot specify ?stale with ?consistent, conflicting semantics.")
        }
        let cached = query.contains { $0.name == "cached" }
        var minIndex: UInt64 = 0
        if let text = query.first(where: { $0.name == "index" })?.value {
            guard let value = UInt64(text) else { return bad("Invalid index") }
            minIndex = value
        }
        var wait = Duration.seconds(300)
        if let waitText = query.first(where: { $0.name == "wait" })?.value {
            guard let parsed = GoDuration.parse(waitText), parsed >= .zero else { return bad("Invalid wait time") }
            // 0 is the default wait, not an immediate answer.
            if parsed > .zero { wait = parsed }
        }
        wait = min(wait, maxQueryTime)
        let readable: Set<String>?
        switch authority {
        case .management: readable = nil
        case .read(let services): readable = services
        }
        let healthQuery = HealthQuery(passing: passing, tags: tags, readable: readable, cached: cached)
        let key = Self.indexKey(datacenter: datacenter, service: name)
        enum Action {
            case answer(Response)
            case hold(Int)
        }
        let action = state.withLock { state -> Action in
            let known = Set(state.nodes.values.map(\.datacenter))
            guard known.contains(datacenter) else {
                return .answer(Response(status: .internalServerError, body: "No path to datacenter", json: false))
            }
            let current = state.serviceIndex[key] ?? 1
            if blocking, minIndex > 0, current <= minIndex {
                let id = state.nextWaiter
                state.nextWaiter += 1
                state.waiters[id] = Waiter(
                    datacenter: datacenter,
                    service: name,
                    minIndex: minIndex,
                    query: healthQuery,
                    connection: connection,
                    respond: respond
                )
                return .hold(id)
            }
            return .answer(healthResponse(state, datacenter, name, healthQuery))
        }
        switch action {
        case .answer(let response):
            respond(response)
        case .hold(let id):
            // Consul adds up to wait/16 so that many waiters do not wake together.
            let jitter = Duration.nanoseconds(Int64.random(in: 0...max(0, TimeAmount(wait / 16).nanoseconds)))
            loop.scheduleTask(in: TimeAmount(wait + jitter)) {
                let expired = self.state.withLock { state -> (Waiter, Response)? in
                    guard let waiter = state.waiters.removeValue(forKey: id) else { return nil }
                    return (waiter, self.healthResponse(state, datacenter, name, healthQuery))
                }
                if let (waiter, response) = expired { waiter.respond(response) }
            }
        }
    }

    func healthResponse(_ state: State, _ datacenter: String, _ name: String, _ query: HealthQuery) -> Response {
        var entries: [HealthEntryOut] = []
        let instances = state.services.values
            .filter { $0.name == name && state.nodes[$0.node]?.datacenter == datacenter }
            .sorted { ($0.node, $0.id) < ($1.node, $1.id) }
        var filtered = false
        for instance in instances {
            guard let node = state.nodes[instance.node] else { continue }
            // Consul compares tags without regard to case.
            let own = Set(instance.tags.map { $0.lowercased() })
            guard query.tags.allSatisfy({ own.contains($0.lowercased()) }) else { continue }
            var checks = [
                CheckOut(
                    Node: node.name,
                    CheckID: "serfHealth",
                    Name: "Serf Health Status",
                    Status: node.status,
                    ServiceID: "",
                    ServiceName: ""
                )
            ]
            for check in instance.checks.values.sorted(by: { $0.id < $1.id }) {
                checks.append(
                    CheckOut(
                        Node: node.name,
                        CheckID: check.id,
                        Name: check.name,
                        Status: check.status,
                        ServiceID: instance.id,
                        ServiceName: instance.name
                    )
                )
            }
            if query.passing, !checks.allSatisfy({ $0.Status == "passing" }) { continue }
            if let readable = query.readable, !readable.contains(instance.name) {
                filtered = true
                continue
            }
            entries.append(
                HealthEntryOut(
                    Node: NodeOut(ID: "", Node: node.name, Address: node.address, Datacenter: node.datacenter),
                    Service: ServiceOut(
                        ID: instance.id,
                        Service: instance.name,
                        Tags: instance.tags,
                        Address: instance.address,
                        Meta: instance.meta,
                        Port: instance.port == 0 ? nil : instance.port,
                        SocketPath: instance.socketPath,
                        Weights: WeightsOut(Passing: instance.passingWeight, Warning: instance.warningWeight)
                    ),
                    Checks: checks
                )
            )
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let body = (try? encoder.encode(entries)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
        let index = state.serviceIndex[Self.indexKey(datacenter: datacenter, service: name)] ?? 1
        var headers: [(String, String)] = []
        if filtered { headers.append(("X-Consul-Results-Filtered-By-ACLs", "true")) }
        if query.cached { headers.append(("X-Cache", "MISS")) }
        return Response(status: .ok, index: index, body: body, json: true, headers: headers)
    }

    // MARK: Agent

    private func register(_ body: ByteBuffer, replaceExistingChecks: Bool) -> Response {
        let registration: RegistrationIn
        do {
            registration = try JSONDecoder().decode(RegistrationIn.self, from: Data(body.readableBytesView))
        } catch {
            return Response(status: .badRequest, body: "Request decode failed: \(error)", json: false)
        }
        guard let name = registration.Name, !name.isEmpty else {
            return Response(status: .badRequest, body: "Missing service name", json: false)
        }
        if let port = registration.Port, !(0...65535).contains(port) {
            return Response(status: .badRequest, body: "Invalid Port", json: false)
        }
        if let weights = registration.Weights {
            // Consul's rule: Passing in 1...65535, Warning in 0...65535.
            if let passing = weights.Passing, !(1...65535).contains(passing) {
                return Response(status: .badRequest, body: "Invalid Weights: Passing must be in 1...65535", json: false)
            }
            if let warning = weights.Warning, !(0...65535).contains(warning) {
                return Response(status: .badRequest, body: "Invalid Weights: Warning must be in 0...65535", json: false)
            }
        }
        let id = registration.ID.flatMap { $0.isEmpty ? nil : $0 } ?? name
        let now = self.now
        var checks: [String: Check] = [:]
        if let checkIn = registration.Check {
            guard let ttlText = checkIn.TTL, let ttl = GoDuration.parse(ttlText), ttl > .zero else {
                return Response(status: .badRequest, body: "Invalid check: only TTL checks are served here", json: false)
            }
            var deregisterAfter: Duration?
            if let text = checkIn.DeregisterCriticalServiceAfter {
                guard let parsed = GoDuration.parse(text), parsed >= .zero else {
                    return Response(status: .badRequest, body: "Invalid DeregisterCriticalServiceAfter", json: false)
                }
                // Consul raises a shorter timeout to its one-minute minimum (0 turns reaping off).
                deregisterAfter = parsed == .zero ? nil : max(parsed, .seconds(60))
            }
            let status = checkIn.Status ?? "critical"
            guard ["passing", "warning", "critical"].contains(status) else {
                return Response(status: .badRequest, body: "Invalid check status", json: false)
            }
            let checkID = checkIn.CheckID.flatMap { $0.isEmpty ? nil : $0 } ?? "service:\(id)"
            checks[checkID] = Check(
                id: checkID,
                name: checkIn.Name ?? "Service '\(name)' check",
                status: status,
                ttl: ttl,
                deregisterCriticalServiceAfter: deregisterAfter,
                passes: 0,
                deadline: status == "critical" ? nil : now + ttl,
                criticalSince: status == "critical" ? now : nil
            )
        }
        var instance = ServiceInstance(
            node: nodeName,
            id: id,
            name: name,
            address: registration.Address ?? "",
            port: registration.Port ?? 0,
            socketPath: registration.SocketPath.flatMap { $0.isEmpty ? nil : $0 },
            tags: registration.Tags ?? [],
            meta: registration.Meta ?? [:],
            passingWeight: registration.Weights?.Passing ?? 1,
            warningWeight: registration.Weights?.Warning ?? 1,
            checks: checks
        )
        let key = ServiceKey(node: nodeName, id: id)
        wake { state in
            // Without replace-existing-checks, Consul keeps the checks of the earlier
            // registration that the new one does not define.
            if !replaceExistingChecks, let old = state.services[key] {
                for (checkID, check) in old.checks where instance.checks[checkID] == nil {
                    instance.checks[checkID] = check
                }
            }
            state.services[key] = instance
            return [self.key(state, instance)]
        }
        for check in checks.values { if let ttl = check.ttl, check.status != "critical" { scheduleSweep(after: ttl) } }
        return Response(status: .ok, body: "", json: false)
    }

    private func pass(checkID: String, note: String?) -> Response {
        let now = self.now
        var ttl: Duration?
        var found = false
        wake { state in
            guard let (key, instance) = state.services.first(where: { $0.key.node == nodeName && $0.value.checks[checkID] != nil }),
                var check = instance.checks[checkID]
            else { return [] }
            found = true
            let changed = check.status != "passing"
            check.status = "passing"
            check.passes += 1
            check.criticalSince = nil
            check.deadline = check.ttl.map { now + $0 }
            ttl = check.ttl
            state.services[key]?.checks[checkID] = check
            // Only a change of status is a change of the health result (as with Consul, where a
            // pass that changes only the output is not synced at once).
            return changed ? [self.key(state, instance)] : []
        }
        guard found else {
            return Response(status: .notFound, body: "Unknown check ID \"\(checkID)\"", json: false)
        }
        if let ttl { scheduleSweep(after: ttl) }
        return Response(status: .ok, body: "", json: false)
    }

    private func deregister(_ id: String) -> Response {
        var removed = false
        wake { state in
            guard let instance = state.services.removeValue(forKey: ServiceKey(node: nodeName, id: id)) else { return [] }
            removed = true
            return [self.key(state, instance)]
        }
        return removed
            ? Response(status: .ok, body: "", json: false) : Response(status: .notFound, body: "Unknown service ID \"\(id)\"", json: false)
    }

    /// Runs ``sweep()`` `after` from now (when a TTL that was just set runs out).
    private func scheduleSweep(after: Duration) {
        loop.scheduleTask(in: TimeAmount(after)) { [weak self] in self?.sweep() }
    }

    /// Turns the TTL checks whose deadline passed critical, then reaps the services critical for
    /// their DeregisterCriticalServiceAfter, by the server's clock.
    func sweep() {
        wake { state in
            let now = ContinuousClock.now + state.timeOffset
            var changed: Set<String> = []
            for (key, instance) in state.services {
                var instance = instance
                var expired = false
                for (checkID, check) in instance.checks {
                    guard check.status != "critical", let deadline = check.deadline, deadline <= now else { continue }
                    instance.checks[checkID]?.status = "critical"
                    instance.checks[checkID]?.deadline = nil
                    // Critical since the TTL ran out, not since the sweep noticed.
                    instance.checks[checkID]?.criticalSince = deadline
                    expired = true
                }
                let reap = instance.checks.values.contains { check in
                    guard check.status == "critical", let after = check.deregisterCriticalServiceAfter,
                        let since = check.criticalSince
                    else { return false }
                    return now - since >= after
                }
                if reap {
                    state.services[key] = nil
                } else if expired {
                    state.services[key] = instance
                }
                if reap || expired { changed.insert(self.key(state, instance)) }
            }
            return changed
        }
    }

    static func goBool(_ text: String) -> Bool? {
        switch text {
        case "1", "t", "T", "true", "TRUE", "True": true
        case "0", "f", "F", "false", "FALSE", "False": false
        default: nil
        }
    }

    // MARK: Helpers

    static func split(_ uri: String) -> (String, [(name: String, value: String?)]) {
        guard let question = uri.firstIndex(of: "?") else { return (uri, []) }
        let path = String(uri[..<question])
        let items = uri[uri.index(after: question)...].split(separator: "&").map { item -> (name: String, value: String?) in
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            let value = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : nil
            return (name, value)
        }
        return (path, items)
    }
}

// MARK: - JSON shapes (Consul's field names)

struct NodeOut: Encodable {
    var ID: String
    var Node: String
    var Address: String
    var Datacenter: String
}

struct WeightsOut: Encodable {
    var Passing: Int
    var Warning: Int
}

struct ServiceOut: Encodable {
    var ID: String
    var Service: String
    var Tags: [String]
    var Address: String
    var Meta: [String: String]
    var Port: Int?
    var SocketPath: String?
    var Weights: WeightsOut
}

struct CheckOut: Encodable {
    var Node: String
    var CheckID: String
    var Name: String
    var Status: String
    var ServiceID: String
    var ServiceName: String
}

struct HealthEntryOut: Encodable {
    var Node: NodeOut
    var Service: ServiceOut
    var Checks: [CheckOut]
}

struct RegistrationIn: Decodable {
    struct WeightsIn: Decodable {
        var Passing: Int?
        var Warning: Int?
    }
    struct CheckIn: Decodable {
        var CheckID: String?
        var Name: String?
        var TTL: String?
        var DeregisterCriticalServiceAfter: String?
        var Status: String?
    }
    var ID: String?
    var Name: String?
    var Address: String?
    var Port: Int?
    var SocketPath: String?
    var Tags: [String]?
    var Meta: [String: String]?
    var Weights: WeightsIn?
    var Check: CheckIn?
}

/// Serves one connection: reads a request, hands it to the server, writes the answer (perhaps later).
final class ConsulHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let server: ConsulTestServer
    var head: HTTPRequestHead?
    var body = ByteBuffer()

    init(server: ConsulTestServer) {
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.clear()
        case .body(var chunk):
            body.writeBuffer(&chunk)
        case .end:
            guard let head else { return }
            self.head = nil
            let keepAlive = head.isKeepAlive
            let bound = NIOLoopBound((context: context, handler: self), eventLoop: context.eventLoop)
            let eventLoop = context.eventLoop
            server.handle(
                method: head.method,
                uri: head.uri,
                token: head.headers.first(name: "X-Consul-Token"),
                connection: ObjectIdentifier(context.channel),
                body: body
            ) { response in
                eventLoop.execute {
                    let (context, handler) = bound.value
                    handler.write(response, keepAlive: keepAlive, context: context)
                }
            }
        }
    }

    func write(_ response: ConsulTestServer.Response, keepAlive: Bool, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.json ? "application/json" : "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: "\(response.body.utf8.count)")
        if let index = response.index {
            headers.add(name: "X-Consul-Index", value: "\(index)")
            headers.add(name: "X-Consul-KnownLeader", value: "true")
            headers.add(name: "X-Consul-LastContact", value: "0")
        }
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: response.body)))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
