import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LoadBalancer
import Synchronization

/// A gRPC health check: calls `grpc.health.v1.Health/Check` (the gRPC health-checking protocol)
/// on the instance; `SERVING` is healthy, any other status, an RPC error or no answer within the
/// timeout is not.
///
/// Each instance gets a client of its own (one HTTP/2 connection, kept between checks and closed
/// when the instance leaves the set or the `HealthChecker` stops). The two messages are encoded
/// here (a string and an enum), so the check needs no protobuf library.
///
/// ```swift
/// let checker = try HealthChecker(detector, check: GRPCHealthCheck(service: "echo.Echo"))
/// ```
public final class GRPCHealthCheck: HealthCheck {
    /// The service whose health is asked; empty asks for the server's overall health.
    public let service: String
    private let transportSecurity: HTTP2ClientTransport.Posix.TransportSecurity
    private let config: HTTP2ClientTransport.Posix.Config

    private struct Connection: Sendable {
        var client: GRPCClient<HTTP2ClientTransport.Posix>
        var run: Task<Void, Never>
    }

    private let connections = Mutex<[String: Connection]>([:])

    /// Creates a gRPC health check.
    ///
    /// - Parameters:
    ///   - service: The service whose health is asked. Default: empty (the whole server).
    ///   - transportSecurity: Plaintext or TLS. Default plaintext.
    ///   - config: The HTTP/2 transport's configuration. Default `.defaults`.
    public init(
        service: String = "",
        transportSecurity: HTTP2ClientTransport.Posix.TransportSecurity = .plaintext,
        config: HTTP2ClientTransport.Posix.Config = .defaults
    ) {
        self.service = service
        self.transportSecurity = transportSecurity
        self.config = config
    }

    /// Asks `instance` for ``service``'s health; throws `HealthCheckFailure` unless it is `SERVING`.
    public func check(_ instance: Instance, timeout: Duration) async throws {
        let client = try connection(to: instance)
        var options = CallOptions.defaults
        options.timeout = timeout
        let status = try await client.unary(
            request: ClientRequest(message: service),
            descriptor: MethodDescriptor(fullyQualifiedService: "grpc.health.v1.Health", method: "Check"),
            serializer: HealthCheckRequestSerializer(),
            deserializer: HealthCheckResponseDeserializer(),
            options: options
        ) { response in try response.message }
        guard status == HealthCheckResponseDeserializer.serving else {
            throw HealthCheckFailure("gRPC health status \(HealthCheckResponseDeserializer.name(of: status)) for service '\(service)'")
        }
    }

    /// Closes the instance's client.
    public func forget(_ instance: Instance) async {
        guard let connection = connections.withLock({ $0.removeValue(forKey: instance.id) }) else { return }
        connection.client.beginGracefulShutdown()
        await connection.run.value
    }

    /// The instance's client, made and started at its first check.
    private func connection(to instance: Instance) throws -> GRPCClient<HTTP2ClientTransport.Posix> {
        try connections.withLock { connections in
            if let connection = connections[instance.id] { return connection.client }
            guard let target = HostKind.target(of: instance) else {
                throw HealthCheckFailure("instance \(instance.id): host '\(instance.host)' is not an address or a host name")
            }
            let transport = try HTTP2ClientTransport.Posix(
                target: target, transportSecurity: transportSecurity, config: config,
                serviceConfig: ServiceConfig(loadBalancingConfig: [.pickFirst(shuffleAddressList: false)]))
            let client = GRPCClient(transport: transport)
            let run = Task<Void, Never> { try? await client.runConnections() }
            connections[instance.id] = Connection(client: client, run: run)
            return client
        }
    }
}

/// `grpc.health.v1.HealthCheckRequest`: field 1, the service name (a string; absent when empty).
struct HealthCheckRequestSerializer: MessageSerializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ service: String) throws -> Bytes {
        let name = Array(service.utf8)
        guard !name.isEmpty else { return Bytes([]) }
        var bytes: [UInt8] = [0x0A] // field 1, length-delimited
        var length = UInt64(name.count)
        while length >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: length) | 0x80)
            length >>= 7
        }
        bytes.append(UInt8(length))
        bytes += name
        return Bytes(bytes)
    }
}

/// `grpc.health.v1.HealthCheckResponse`: field 1, the serving status (an enum; 0 when absent).
/// Unknown fields are skipped; a message that does not parse is an `RPCError` (`internalError`).
struct HealthCheckResponseDeserializer: MessageDeserializer {
    static let serving: UInt64 = 1

    static func name(of status: UInt64) -> String {
        switch status {
        case 0: "UNKNOWN"
        case 1: "SERVING"
        case 2: "NOT_SERVING"
        case 3: "SERVICE_UNKNOWN"
        default: "\(status)"
        }
    }

    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> UInt64 {
        let bytes = serializedMessageBytes.withUnsafeBytes { Array($0) }
        return try Self.status(in: bytes)
    }

    static func status(in bytes: [UInt8]) throws -> UInt64 {
        var index = 0
        func malformed(_ why: String) -> RPCError {
            RPCError(code: .internalError, message: "malformed grpc.health.v1.HealthCheckResponse: \(why)")
        }
        func varint() throws -> UInt64 {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard index < bytes.count else { throw malformed("a varint runs past the end") }
                guard shift < 64 else { throw malformed("a varint is longer than 10 bytes") }
                let byte = bytes[index]
                index += 1
                value |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
            }
        }
        func skip(_ count: UInt64) throws {
            guard count <= UInt64(bytes.count - index) else { throw malformed("a field runs past the end") }
            index += Int(count)
        }
        var status: UInt64 = 0
        while index < bytes.count {
            let key = try varint()
            switch (key >> 3, key & 7) {
            case (1, 0): status = try varint()
            case (_, 0): _ = try varint()
            case (_, 1): try skip(8)
            case (_, 2): try skip(try varint())
            case (_, 5): try skip(4)
            default: throw malformed("wire type \(key & 7) of field \(key >> 3)")
            }
        }
        return status
    }
}
