import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LoadBalancer
import LoadBalancerGRPC
import LoadBalancerTestKit
import Synchronization
import Testing

/// How a ``BehavingServer`` answers, changed while it runs.
struct Behaviour: Sendable {
    /// Added before each unary answer.
    var delay: Duration = .zero
    /// Every unary call fails with this code (`nil`: it answers).
    var failure: RPCError.Code?
    /// Every `fail`-th unary call fails with ``failure`` (1: every call).
    var failEvery = 1
}

/// A service with a unary `Who` (the server's name, after the behaviour's delay, or its failure)
/// and a server-streaming `Count` (the request says how many messages; "hold" keeps the stream
/// open until the server is released).
struct BehavingService: RegistrableRPCService {
    static let who = MethodDescriptor(fullyQualifiedService: "loadbalancer.test.Behaving", method: "Who")
    static let count = MethodDescriptor(fullyQualifiedService: "loadbalancer.test.Behaving", method: "Count")

    let server: ServerControl

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        let server = self.server
        router.registerHandler(forMethod: Self.who, deserializer: UTF8Deserializer(), serializer: UTF8Serializer()) { request, _ in
            _ = try await ServerRequest(stream: request)
            let (behaviour, number) = server.startCall()
            if behaviour.delay > .zero { try await Task.sleep(for: behaviour.delay) }
            if let failure = behaviour.failure, number % max(1, behaviour.failEvery) == 0 {
                return StreamingServerResponse(error: RPCError(code: failure, message: "\(server.name) fails"))
            }
            return StreamingServerResponse(single: ServerResponse(message: server.name))
        }
        router.registerHandler(forMethod: Self.count, deserializer: UTF8Deserializer(), serializer: UTF8Serializer()) { request, _ in
            let message = try await ServerRequest(stream: request).message
            _ = server.startCall()
            let hold = message.hasPrefix("hold")
            let count = Int(message.drop(while: { !$0.isNumber })) ?? 1
            return StreamingServerResponse(of: String.self) { writer in
                try await writer.write("\(server.name) 0")
                if hold {
                    server.holding.add(1, ordering: .relaxed)
                    defer { server.holding.subtract(1, ordering: .relaxed) }
                    // Bounded: a minute at most.
                    for _ in 0..<6_000 where !server.released.load(ordering: .relaxed) {
                        try await Task.sleep(for: .milliseconds(10))
                    }
                }
                for index in 1..<max(1, count) { try await writer.write("\(server.name) \(index)") }
                return [:]
            }
        }
    }
}

/// What a ``BehavingServer``'s service reads and counts.
final class ServerControl: Sendable {
    let name: String
    private let state = Mutex((behaviour: Behaviour(), calls: 0))
    /// Streams being held open now.
    let holding = Atomic<Int>(0)
    /// Releases every held stream.
    let released = Atomic<Bool>(false)

    init(name: String) { self.name = name }

    var calls: Int { state.withLock { $0.calls } }

    func set(_ change: (inout Behaviour) -> Void) {
        state.withLock { change(&$0.behaviour) }
    }

    func startCall() -> (Behaviour, Int) {
        state.withLock { state in
            state.calls += 1
            return (state.behaviour, state.calls)
        }
    }
}

/// A gRPC server on 127.0.0.1 (a port of its own) whose behaviour tests change while it runs.
struct BehavingServer: Sendable {
    let control: ServerControl
    let server: GRPCServer<HTTP2ServerTransport.Posix>
    var name: String { control.name }
    var calls: Int { control.calls }

    init(name: String) {
        control = ServerControl(name: name)
        server = GRPCServer(
            transport: HTTP2ServerTransport.Posix(address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext),
            services: [BehavingService(server: control)]
        )
    }

    func instance() async throws -> Instance {
        let address = try await server.transport.listeningAddress
        return try Instance(host: "127.0.0.1", port: try #require(address.ipv4?.port))
    }
}

/// Runs `count` behaving servers while `body` runs, then shuts them down.
func withBehavingServers<T: Sendable>(_ count: Int, _ body: ([BehavingServer]) async throws -> T) async throws -> T {
    let servers = (0..<count).map { BehavingServer(name: "server-\($0)") }
    return try await withThrowingTaskGroup(of: Void.self) { group in
        for server in servers {
            group.addTask { try await server.server.serve() }
        }
        defer {
            for server in servers {
                server.control.released.store(true, ordering: .relaxed)
                server.server.beginGracefulShutdown()
            }
        }
        for server in servers { _ = try await server.instance() }
        return try await body(servers)
    }
}

/// Runs a client over a ``BalancingClientTransport`` of `publisher` while `body` runs.
func withBalancingClient<T: Sendable>(
    _ publisher: some InstancePublisher,
    configuration: BalancingClientTransport.Configuration,
    instrumentation: LoadBalancerInstrumentation? = nil,
    _ body: (GRPCClient<BalancingClientTransport>, BalancingClientTransport) async throws -> T
) async throws -> T {
    var configuration = configuration
    configuration.transportConfig.backoff = .init(initial: .milliseconds(50), max: .milliseconds(250), multiplier: 1.6, jitter: 0.2)
    let transport = BalancingClientTransport(publisher: publisher, configuration: configuration, instrumentation: instrumentation)
    return try await withGRPCClient(transport: transport) { client in
        try await body(client, transport)
    }
}

/// One `Who` call through `client`: the name of the server that answered.
func behavingWho<Transport: ClientTransport>(
    _ client: GRPCClient<Transport>,
    metadata: Metadata = [:],
    timeout: Duration = .seconds(30)
) async throws -> String {
    var options = CallOptions.defaults
    options.timeout = TestTimeScale.scaled(timeout)
    return try await client.unary(
        request: ClientRequest(message: "who", metadata: metadata),
        descriptor: BehavingService.who,
        serializer: UTF8Serializer(),
        deserializer: UTF8Deserializer(),
        options: options
    ) { response in
        try response.message
    }
}

/// A server-streaming `Count` call: every message received.
func behavingCount<Transport: ClientTransport>(_ client: GRPCClient<Transport>, _ request: String) async throws -> [String] {
    var options = CallOptions.defaults
    options.timeout = TestTimeScale.scaled(.seconds(180))
    return try await client.serverStreaming(
        request: ClientRequest(message: request),
        descriptor: BehavingService.count,
        serializer: UTF8Serializer(),
        deserializer: UTF8Deserializer(),
        options: options
    ) { response in
        var messages: [String] = []
        for try await message in response.messages { messages.append(message) }
        return messages
    }
}
