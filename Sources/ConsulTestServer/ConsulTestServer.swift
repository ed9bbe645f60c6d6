import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// A Consul-API server for tests, over real HTTP on 127.0.0.1 (no Consul can be installed where the
/// tests run). It implements the documented behaviour the client relies on, not Consul:
///
/// - `GET /v1/health/service/NAME` with `passing` (every check of the entry, the node's
///   `serfHealth` included, must be `passing`), `tag` (repeatable: all must match), `dc` (an
///   unknown datacenter is a 500, "No path to datacenter"), and blocking queries: with `index`, the
///   request is held until the service's index moves past it or `wait` elapses (default 5 minutes,
///   capped at 10, plus up to `wait / 16` of jitter). Every answer carries `X-Consul-Index`.
/// - Entries with the node's `Address` and the service's own `Address` (empty when not set), the
///   service's `Weights`, `Tags`, `Meta`, and the checks.
/// - `PUT /v1/agent/service/register` (ID, Name, Address, Port, Tags, Meta, Weights, and a TTL
///   `Check` with CheckID, Name, TTL, DeregisterCriticalServiceAfter, Status); the check starts
///   critical unless `Status` says otherwise, and is named `service:ID` when it has no CheckID.
/// - `PUT /v1/agent/check/pass/ID`: passing for another TTL; one TTL after the last pass the check
///   turns critical (the instance leaves `?passing`), and once critical for
///   DeregisterCriticalServiceAfter the service is removed (at once, where Consul's reaper runs
///   every 30 s and has a one-minute minimum). An unknown check is a 404.
/// - `PUT /v1/agent/service/deregister/ID` (404 when unknown).
/// - An ACL token, when set, is required in `X-Consul-Token` (403 otherwise).
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
        /// `Port`.
        public var port: Int
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
        var generation: Int
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
        var respond: @Sendable (Response) -> Void
    }

    struct HealthQuery: Sendable {
        var passing: Bool
        var tags: [String]
    }

    struct Response: Sendable {
        var status: HTTPResponseStatus
        var index: UInt64?
        var body: String
        var json: Bool
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
    }

    /// The port it listens on, on 127.0.0.1 (the same across ``restart()``).
    public var port: Int { state.withLock { $0.port } }
    /// The agent's own datacenter.
    public let datacenter: String
    /// The agent's own node name; agent registrations go to it.
    public let nodeName: String
    /// The ACL token required of every request, if any.
    public let token: String?
    let state: Mutex<State>
    let loop: any EventLoop
    /// The TLS context when the server serves HTTPS.
    private let tlsContext: NIOSSLContext?

    private init(datacenter: String, nodeName: String, token: String?, state: State, loop: any EventLoop, tlsContext: NIOSSLContext?) {
        self.tlsContext = tlsContext
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
    ///   - token: An ACL token every request must carry. Default none.
    ///   - tls: A certificate chain and key (PEM files) to serve HTTPS with, as an agent with
    ///     `tls.https` does. Default: plain HTTP.
    public static func start(
        datacenter: String = "dc1",
        nodeName: String = "agent-1",
        nodeAddress: String = "127.0.0.1",
        token: String? = nil,
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
            state: state,
            loop: MultiThreadedEventLoopGroup.singleton.next(),
            tlsContext: tlsContext
        )
        let channel = try await server.bind(port: 0)
        server.state.withLock { $0.port = channel.localAddress?.port ?? 0 }
        return server
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
                        self?.state.withLock { _ = $0.children.removeValue(forKey: id) }
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
        tags: [String] = [],
        meta: [String: String] = [:],
        passingWeight: Int = 1,
        status: String = "passing"
    ) {
        let node = node ?? nodeName
        let check = Check(id: "service:\(id)", name: "Service '\(name)' check", status: status, passes: 0, generation: 0)
        let instance = ServiceInstance(
            node: node,
            id: id,
            name: name,
            address: address,
            port: port,
            tags: tags,
            meta: meta,
            passingWeight: passingWeight,
            warningWeight: 1,
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
                instance.checks[checkID]?.generation += 1
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
        if let required = self.token, token != required {
            respond(Response(status: .forbidden, body: "ACL not found", json: false))
            return
        }
        switch fault {
        case .status(let code)?:
            respond(Response(status: HTTPResponseStatus(statusCode: code), body: "injected fault: HTTP \(code)", json: false))
        case .garbage?:
            respond(Response(status: .ok, index: index, body: "[{\"Node\": {\"Node\": \"agent-1\", \"Addr", json: true))
        case .delay(let delay)?:
            loop.scheduleTask(in: Self.timeAmount(delay)) {
                self.route(method: method, path: path, query: query, body: body, blocking: true, respond: respond)
            }
        case .noBlocking?:
            route(method: method, path: path, query: query, body: body, blocking: false, respond: respond)
        case nil:
            route(method: method, path: path, query: query, body: body, blocking: true, respond: respond)
        }
    }

    private func route(
        method: HTTPMethod,
        path: String,
        query: [(name: String, value: String?)],
        body: ByteBuffer,
        blocking: Bool,
        respond: @escaping @Sendable (Response) -> Void
    ) {
        let healthPrefix = "/v1/health/service/"
        if path.hasPrefix(healthPrefix) {
            guard method == .GET else { return respond(Response(status: .methodNotAllowed, body: "method not allowed", json: false)) }
            let name = String(path.dropFirst(healthPrefix.count)).removingPercentEncoding ?? ""
            return health(name, query: query, blocking: blocking, respond: respond)
        }
        guard path.hasPrefix("/v1/agent/") else {
            return respond(Response(status: .notFound, body: "no such endpoint", json: false))
        }
        guard method == .PUT else { return respond(Response(status: .methodNotAllowed, body: "method not allowed", json: false)) }
        if path == "/v1/agent/service/register" {
            respond(register(body))
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
        respond: @escaping @Sendable (Response) -> Void
    ) {
        let passing = query.contains { $0.name == "passing" && !["false", "0"].contains($0.value ?? "") }
        let tags = query.filter { $0.name == "tag" }.compactMap(\.value)
        let datacenter = query.first { $0.name == "dc" }?.value ?? self.datacenter
        let minIndex = query.first { $0.name == "index" }?.value.flatMap { UInt64($0) } ?? 0
        let waitText = query.first { $0.name == "wait" }?.value
        var wait = Duration.seconds(300)
        if let waitText {
            guard let parsed = GoDuration.parse(waitText) else {
                return respond(Response(status: .badRequest, body: "Invalid wait time", json: false))
            }
            wait = min(parsed, .seconds(600))
        }
        let healthQuery = HealthQuery(passing: passing, tags: tags)
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
            let jitter = Duration.nanoseconds(Int64.random(in: 0...max(0, ConsulTestServer.nanoseconds(wait / 16))))
            loop.scheduleTask(in: Self.timeAmount(wait + jitter)) {
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
        for instance in instances {
            guard let node = state.nodes[instance.node] else { continue }
            guard query.tags.allSatisfy(instance.tags.contains) else { continue }
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
            entries.append(
                HealthEntryOut(
                    Node: NodeOut(ID: "", Node: node.name, Address: node.address, Datacenter: node.datacenter),
                    Service: ServiceOut(
                        ID: instance.id,
                        Service: instance.name,
                        Tags: instance.tags,
                        Address: instance.address,
                        Meta: instance.meta,
                        Port: instance.port,
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
        return Response(status: .ok, index: index, body: body, json: true)
    }

    // MARK: Agent

    private func register(_ body: ByteBuffer) -> Response {
        let registration: RegistrationIn
        do {
            registration = try JSONDecoder().decode(RegistrationIn.self, from: Data(body.readableBytesView))
        } catch {
            return Response(status: .badRequest, body: "Request decode failed: \(error)", json: false)
        }
        guard let name = registration.Name, !name.isEmpty else {
            return Response(status: .badRequest, body: "Missing service name", json: false)
        }
        let id = registration.ID.flatMap { $0.isEmpty ? nil : $0 } ?? name
        var checks: [String: Check] = [:]
        if let checkIn = registration.Check {
            guard let ttlText = checkIn.TTL, let ttl = GoDuration.parse(ttlText), ttl > .zero else {
                return Response(status: .badRequest, body: "Invalid check: only TTL checks are served here", json: false)
            }
            var deregisterAfter: Duration?
            if let text = checkIn.DeregisterCriticalServiceAfter {
                guard let parsed = GoDuration.parse(text) else {
                    return Response(status: .badRequest, body: "Invalid DeregisterCriticalServiceAfter", json: false)
                }
                deregisterAfter = parsed
            }
            let checkID = checkIn.CheckID.flatMap { $0.isEmpty ? nil : $0 } ?? "service:\(id)"
            checks[checkID] = Check(
                id: checkID,
                name: checkIn.Name ?? "Service '\(name)' check",
                status: checkIn.Status ?? "critical",
                ttl: ttl,
                deregisterCriticalServiceAfter: deregisterAfter,
                passes: 0,
                generation: 0
            )
        }
        let instance = ServiceInstance(
            node: nodeName,
            id: id,
            name: name,
            address: registration.Address ?? "",
            port: registration.Port ?? 0,
            tags: registration.Tags ?? [],
            meta: registration.Meta ?? [:],
            passingWeight: registration.Weights?.Passing ?? 1,
            warningWeight: registration.Weights?.Warning ?? 1,
            checks: checks
        )
        let key = ServiceKey(node: nodeName, id: id)
        var generations: [String: Int] = [:]
        wake { state in
            // A replaced check keeps counting generations, so the old one's timers do nothing.
            var instance = instance
            for checkID in instance.checks.keys {
                let generation = (state.services[key]?.checks[checkID]?.generation ?? 0) + 1
                instance.checks[checkID]?.generation = generation
                generations[checkID] = generation
            }
            state.services[key] = instance
            return [self.key(state, instance)]
        }
        for (checkID, check) in checks {
            if let ttl = check.ttl, let generation = generations[checkID], check.status != "critical" {
                scheduleExpiry(key: key, checkID: checkID, generation: generation, after: ttl)
            } else if check.status == "critical", let after = check.deregisterCriticalServiceAfter,
                let generation = generations[checkID]
            {
                scheduleReap(key: key, checkID: checkID, generation: generation, after: after)
            }
        }
        return Response(status: .ok, body: "", json: false)
    }

    private func pass(checkID: String, note: String?) -> Response {
        var found: (ServiceKey, Duration?, Int)?
        wake { state in
            guard let (key, instance) = state.services.first(where: { $0.key.node == nodeName && $0.value.checks[checkID] != nil }),
                var check = instance.checks[checkID]
            else { return [] }
            let changed = check.status != "passing"
            check.status = "passing"
            check.passes += 1
            check.generation += 1
            state.services[key]?.checks[checkID] = check
            found = (key, check.ttl, check.generation)
            // Only a change of status is a change of the health result (as with Consul, where a
            // pass that changes only the output is not synced at once).
            return changed ? [self.key(state, instance)] : []
        }
        guard let (key, ttl, generation) = found else {
            return Response(status: .notFound, body: "Unknown check ID \"\(checkID)\"", json: false)
        }
        if let ttl { scheduleExpiry(key: key, checkID: checkID, generation: generation, after: ttl) }
        return Response(status: .ok, body: "", json: false)
    }

    private func deregister(_ id: String) -> Response {
        var removed = false
        wake { state in
            guard let instance = state.services.removeValue(forKey: ServiceKey(node: nodeName, id: id)) else { return [] }
            removed = true
            return [self.key(state, instance)]
        }
        return removed ? Response(status: .ok, body: "", json: false) : Response(status: .notFound, body: "Unknown service ID \"\(id)\"", json: false)
    }

    /// Turns the check critical `after` from now, unless it was passed (or replaced) since.
    private func scheduleExpiry(key: ServiceKey, checkID: String, generation: Int, after: Duration) {
        loop.scheduleTask(in: Self.timeAmount(after)) {
            var reapAfter: (Duration, Int)?
            self.wake { state in
                guard var check = state.services[key]?.checks[checkID], check.generation == generation,
                    let instance = state.services[key]
                else { return [] }
                check.status = "critical"
                check.generation += 1
                state.services[key]?.checks[checkID] = check
                if let after = check.deregisterCriticalServiceAfter { reapAfter = (after, check.generation) }
                return [self.key(state, instance)]
            }
            if let (after, generation) = reapAfter {
                self.scheduleReap(key: key, checkID: checkID, generation: generation, after: after)
            }
        }
    }

    /// Removes the service `after` from now if the check is still critical (not passed since).
    private func scheduleReap(key: ServiceKey, checkID: String, generation: Int, after: Duration) {
        loop.scheduleTask(in: Self.timeAmount(after)) {
            self.wake { state in
                guard let instance = state.services[key], let check = instance.checks[checkID],
                    check.generation == generation, check.status == "critical"
                else { return [] }
                state.services[key] = nil
                return [self.key(state, instance)]
            }
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

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    static func timeAmount(_ duration: Duration) -> TimeAmount {
        .nanoseconds(nanoseconds(duration))
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
    var Port: Int
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
