import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LoadBalancer
import LoadBalancerGRPC
import LoadBalancerTestKit
import Logging
import Synchronization
import Testing

/// Encodes a `String` message as its UTF-8 bytes (so the tests need no protoc).
struct UTF8Serializer: MessageSerializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: String) throws -> Bytes {
        Bytes(Array(message.utf8))
    }
}

/// Decodes a `String` message from UTF-8 bytes; invalid UTF-8 is an `invalidArgument` error.
struct UTF8Deserializer: MessageDeserializer {
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> String {
        let bytes = serializedMessageBytes.withUnsafeBytes { Array($0) }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw RPCError(code: .invalidArgument, message: "the message is not UTF-8")
        }
        return text
    }
}

/// A one-method service: `Who` answers with the server's name and counts its calls.
struct WhoService: RegistrableRPCService {
    static let method = MethodDescriptor(fullyQualifiedService: "loadbalancer.test.Who", method: "Who")

    let name: String
    let calls: Calls

    final class Calls: Sendable {
        private let count = Atomic<Int>(0)
        var value: Int { count.load(ordering: .relaxed) }
        func increment() { count.add(1, ordering: .relaxed) }
    }

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        let name = self.name
        let calls = self.calls
        router.registerHandler(
            forMethod: Self.method,
            deserializer: UTF8Deserializer(),
            serializer: UTF8Serializer()
        ) { request, _ in
            _ = try await ServerRequest(stream: request)
            calls.increment()
            return StreamingServerResponse(single: ServerResponse(message: name))
        }
    }
}

/// A gRPC server on 127.0.0.1, on a port of its own (port 0: the kernel picks a free one).
struct TestServer: Sendable {
    let name: String
    let server: GRPCServer<HTTP2ServerTransport.Posix>
    let calls = WhoService.Calls()

    init(name: String) {
        self.name = name
        self.server = GRPCServer(
            transport: HTTP2ServerTransport.Posix(
                address: .ipv4(host: "127.0.0.1", port: 0),
                transportSecurity: .plaintext
            ),
            services: [WhoService(name: name, calls: calls)]
        )
    }

    /// The bound port; waits until the server listens.
    func port() async throws -> Int {
        let address = try await server.transport.listeningAddress
        return try #require(address.ipv4?.port)
    }

    /// The instance a publisher gives for this server.
    func instance() async throws -> Instance {
        try Instance(host: "127.0.0.1", port: try await port())
    }
}

/// Runs `count` servers while `body` runs, then shuts them down.
func withServers<T: Sendable>(
    _ count: Int,
    _ body: ([TestServer]) async throws -> T
) async throws -> T {
    let servers = (0..<count).map { TestServer(name: "server-\($0)") }
    return try await withThrowingTaskGroup(of: Void.self) { group in
        for server in servers {
            group.addTask { try await server.server.serve() }
        }
        defer {
            for server in servers { server.server.beginGracefulShutdown() }
        }
        for server in servers { _ = try await server.port() }
        return try await body(servers)
    }
}

/// Runs a gRPC client whose target is `publisher`, through the publisher resolver, while `body` runs.
///
/// The transport's backoff (which grpc-swift also uses before subscribing to a resolver again)
/// is short, so that tests of failures recover in well under a second.
func withClient<T: Sendable>(
    _ publisher: some InstancePublisher,
    serviceConfig: ServiceConfig? = ResolvableTargets.LoadBalancerPublisher.defaultServiceConfig,
    logger: Logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }),
    _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T
) async throws -> T {
    var registry = NameResolverRegistry.defaults
    registry.registerFactory(NameResolvers.LoadBalancerPublisher(logger: logger))
    let transport = try HTTP2ClientTransport.Posix(
        target: .publisher(publisher, serviceConfig: serviceConfig),
        transportSecurity: .plaintext,
        config: .defaults { config in
            config.backoff = .init(initial: .milliseconds(50), max: .milliseconds(250), multiplier: 1.6, jitter: 0.2)
        },
        resolverRegistry: registry
    )
    return try await withGRPCClient(transport: transport) { client in
        try await body(client)
    }
}

/// One `Who` call: the name of the server that answered.
func who(_ client: GRPCClient<HTTP2ClientTransport.Posix>, timeout: Duration = .seconds(30)) async throws -> String {
    var options = CallOptions.defaults
    options.timeout = TestTimeScale.scaled(timeout)
    return try await client.unary(
        request: ClientRequest(message: "who"),
        descriptor: WhoService.method,
        serializer: UTF8Serializer(),
        deserializer: UTF8Deserializer(),
        options: options
    ) { response in
        try response.message
    }
}

/// `count` calls, sequentially; the number of answers per server name.
func callCounts(_ client: GRPCClient<HTTP2ClientTransport.Posix>, _ count: Int) async throws -> [String: Int] {
    var counts: [String: Int] = [:]
    for _ in 0..<count {
        counts[try await who(client), default: 0] += 1
    }
    return counts
}

/// `count` calls, sequentially, where a call may fail with `unavailable` (an RPC racing the removal
/// of its server's connection); the answers per server name, and the number of such failures.
func callCountsAllowingUnavailable(
    _ client: GRPCClient<HTTP2ClientTransport.Posix>,
    _ count: Int
) async throws -> (counts: [String: Int], unavailable: Int) {
    var counts: [String: Int] = [:]
    var unavailable = 0
    for _ in 0..<count {
        do {
            counts[try await who(client), default: 0] += 1
        } catch let error as RPCError where error.code == .unavailable {
            unavailable += 1
        }
    }
    return (counts, unavailable)
}

/// A service config: round robin, and `Who` calls retried (up to 3 attempts) on `unavailable`.
var roundRobinRetryingUnavailable: ServiceConfig {
    retryingUnavailable(service: "loadbalancer.test.Who", loadBalancingConfig: [.roundRobin])
}

/// A service config retrying `service`'s calls (up to 3 attempts) on `unavailable`, backing off
/// from `initialBackoff` (doubling, at most 5 times as long).
func retryingUnavailable(
    service: String,
    initialBackoff: Duration = .milliseconds(10),
    loadBalancingConfig: [ServiceConfig.LoadBalancingConfig] = []
) -> ServiceConfig {
    let retry = RetryPolicy(
        maxAttempts: 3,
        initialBackoff: initialBackoff,
        maxBackoff: initialBackoff * 5,
        backoffMultiplier: 2,
        retryableStatusCodes: [.unavailable]
    )
    return ServiceConfig(
        methodConfig: [MethodConfig(names: [MethodConfig.Name(service: service)], executionPolicy: .retry(retry))],
        loadBalancingConfig: loadBalancingConfig
    )
}

/// Makes calls without a pause (`callers` tasks each calling `call` in a loop) while `publisher`
/// drops the last of `instances` and brings it back, 30 times: each time it waits until calls
/// reach that instance, and after the drop until they no longer do (`callsToLast` counts the
/// calls it served). Returns the calls made and the failures.
func callsWhileLastComesAndGoes(
    _ publisher: FixedPublisher,
    instances: [Instance],
    callers: Int,
    callsToLast: @escaping @Sendable () -> Int,
    call: @escaping @Sendable () async throws -> Void
) async throws -> (calls: Int, failures: [String]) {
    let stop = Flag()
    return try await withThrowingTaskGroup(of: (calls: Int, failures: [String]).self) { group in
        for _ in 0..<callers {
            group.addTask {
                var calls = 0
                var failures: [String] = []
                // A failed wait below cancels the group: the callers stop then, rather than call
                // on (each call failing) until the suite's time limit.
                while !stop.isSet, !Task.isCancelled, calls < 50_000 {
                    do {
                        try await call()
                    } catch {
                        failures.append("\(error)")
                    }
                    calls += 1
                }
                return (calls, failures)
            }
        }
        for round in 0..<30 {
            try await eventually("calls reach the last instance (round \(round))") {
                let before = callsToLast()
                try await Task.sleep(for: .milliseconds(10))
                return callsToLast() > before
            }
            publisher.replace(with: Array(instances.dropLast()))
            try await eventually("calls no longer reach the last instance (round \(round))") {
                let before = callsToLast()
                try await Task.sleep(for: .milliseconds(10))
                return callsToLast() == before
            }
            publisher.replace(with: instances)
        }
        stop.set()
        var total = (calls: 0, failures: [String]())
        for try await result in group {
            total.calls += result.calls
            total.failures += result.failures
        }
        return total
    }
}

/// The test kit's `pollUntil` (every 20 ms, the bound scaled by `TestTimeScale`), also recording
/// its timeout as an issue where it was called.
func eventually(
    _ what: String,
    timeout: Duration = .seconds(30),
    sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () async throws -> Bool
) async throws {
    try await pollUntil(
        what, timeout: timeout, interval: .milliseconds(20), onTimeout: { Issue.record("\($0)", sourceLocation: sourceLocation) }, condition
    )
}

/// A log handler that keeps messages, to wait until the resolver has seen an update.
final class MessageLog: Sendable {
    private let messages = Mutex<[String]>([])
    var all: [String] { messages.withLock { $0 } }
    func contains(_ text: String) -> Bool { messages.withLock { $0.contains { $0.contains(text) } } }
    func count(of text: String) -> Int { messages.withLock { $0.filter { $0.contains(text) }.count } }

    var logger: Logger {
        Logger(label: "test") { _ in Handler(log: self) }
    }

    struct Handler: LogHandler {
        let log: MessageLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let message = event.message.description
            log.messages.withLock { $0.append(message) }
        }
    }
}
