import LoadBalancer
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A failed lookup.
public struct DNSLookupError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure it is. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable { case timeout, serverFailure, refused, malformed, network, closed }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }
        /// No nameserver answered in time.
        public static let timeout = Code(.timeout)
        /// SERVFAIL (or another error code that says nothing about the name).
        public static let serverFailure = Code(.serverFailure)
        /// REFUSED.
        public static let refused = Code(.refused)
        /// The answer could not be parsed.
        public static let malformed = Code(.malformed)
        /// The nameserver could not be reached.
        public static let network = Code(.network)
        /// The client was shut down (``DNSClient/shutdown()``, or its ``DNSClient/run()`` ended).
        public static let closed = Code(.closed)
        /// The code's name, such as `timeout`.
        public var description: String { String(describing: wrapped) }
    }
    /// What kind of failure it is.
    public var code: Code
    /// A human-readable explanation.
    public var message: String
    /// The underlying error, if any.
    public var cause: (any Error)?

    /// Creates an error.
    public init(code: Code, message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// The code and the message, and the cause when there is one.
    public var description: String {
        if let cause { return "\(code): \(message) (\(cause))" }
        return "\(code): \(message)"
    }
}

/// The answer to one query: the records, and whether the name exists.
public struct DNSAnswer: Sendable {
    /// The response (over UDP, or over TCP after a truncated UDP answer).
    public var message: DNSMessage
    /// Whether it came over TCP.
    public var viaTCP: Bool
}

/// A small asynchronous DNS stub resolver over SwiftNIO: UDP with EDNS0, TCP when the answer is
/// truncated, nameservers tried in turn, and an answer accepted only when its id, question and
/// source match the query.
///
/// The client is a `Service`, as every registry client of the package: ``run()`` holds until the
/// task is cancelled, the service group shuts down gracefully, or ``shutdown()`` is called, and then
/// closes the sockets of the queries in flight. Queries need no connection kept between them, so
/// they work before ``run()`` starts too; after ``shutdown()`` (or once ``run()`` has returned)
/// every query fails with ``DNSLookupError/Code/closed``.
///
/// ```swift
/// let client = DNSClient(configuration: .nameserver("10.0.0.53:53"))
/// let publisher = DNSSRVPublisher(name: "_http._tcp.users.example.com", client: client)
/// let group = ServiceGroup(services: [client, publisher], logger: logger)
/// ```
public final class DNSClient: Service, Sendable {
    /// Where and how to ask.
    public let configuration: DNSConfiguration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let signal = ShutdownSignal()
    /// The sockets of the queries in flight, closed by ``shutdown()``.
    private let channels = Mutex<(next: Int, open: [Int: any Channel])>((0, [:]))

    /// Creates a client whose queries run on `eventLoopGroup`.
    ///
    /// - Parameters:
    ///   - configuration: The nameservers, search list, timeout and attempts.
    ///   - eventLoopGroup: Where the sockets run. Default: NIO's shared group.
    ///   - logger: Where to log. Default: nowhere.
    public init(
        configuration: DNSConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "loadbalancer.dns", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.configuration = configuration
        self.group = eventLoopGroup
        self.logger = logger
    }

    /// Holds until the task is cancelled, the service group shuts down gracefully or ``shutdown()``
    /// is called; then shuts the client down (``shutdown()``). Never throws today; `throws` is the
    /// signature every registry client's `run()` shares.
    public func run() async throws {
        await signal.waitForShutdown()
        await shutdown()
    }

    /// Shuts the client down: the sockets of the queries in flight are closed (those queries fail
    /// with ``DNSLookupError/Code/closed``), and so does every later query. ``run()`` returns.
    /// Calling it again does nothing.
    public func shutdown() async {
        guard signal.fire() else { return }
        let open = channels.withLock { state -> [any Channel] in
            defer { state.open = [:] }
            return Array(state.open.values)
        }
        for channel in open { channel.close(promise: nil) }
        logger.debug("DNS client shut down")
    }

    /// Whether the client has been shut down: every query fails from then on.
    public var isShutDown: Bool { signal.isFired }

    private func closedError() -> DNSLookupError {
        DNSLookupError(code: .closed, message: "the DNS client was shut down")
    }

    /// Notes a query's socket so that ``shutdown()`` can close it; `nil` (and the socket closed)
    /// when the client is already shut down.
    private func track(_ channel: any Channel) -> Int? {
        let key = channels.withLock { state -> Int? in
            guard !signal.isFired else { return nil }
            defer { state.next += 1 }
            state.open[state.next] = channel
            return state.next
        }
        if key == nil { channel.close(promise: nil) }
        return key
    }

    private func untrack(_ key: Int) {
        _ = channels.withLock { $0.open.removeValue(forKey: key) }
    }

    /// Runs one exchange over a tracked socket; a failure after shutdown is ``DNSLookupError/Code/closed``.
    private func exchange<T: Sendable>(on channel: any Channel, _ body: () async throws -> T) async throws -> T {
        guard let key = track(channel) else { throw closedError() }
        defer { untrack(key) }
        do {
            return try await body()
        } catch let error as CancellationError {
            throw error
        } catch {
            if signal.isFired { throw DNSLookupError(code: .closed, message: "the DNS client was shut down", cause: error) }
            throw error
        }
    }

    /// Asks for `type` records of `name` (no search list), trying every nameserver in turn,
    /// ``DNSConfiguration/attempts`` times.
    ///
    /// NXDOMAIN and empty answers are answers (check ``DNSMessage/responseCode``); timeouts,
    /// SERVFAIL, REFUSED and malformed responses are errors.
    public func query(_ name: String, type: DNSRecordType) async throws -> DNSAnswer {
        var lastError: (any Error)?
        for _ in 0..<configuration.attempts {
            for server in configuration.nameservers {
                try Task.checkCancellation()
                do {
                    return try await query(name, type: type, server: server)
                } catch let error as CancellationError {
                    throw error
                } catch let error as DNSLookupError where error.code == .closed {
                    throw error
                } catch {
                    lastError = error
                }
            }
        }
        throw lastError ?? DNSLookupError(code: .timeout, message: "no nameserver configured")
    }

    /// Asks one nameserver.
    ///
    /// - Throws: ``DNSLookupError`` (``DNSLookupError/Code/closed`` once the client is shut down),
    ///   or `CancellationError`.
    public func query(_ name: String, type: DNSRecordType, server: String) async throws -> DNSAnswer {
        guard !signal.isFired else { throw closedError() }
        let (host, port) = try Instance.parseHostPort(server)
        let address = try SocketAddress.makeAddressResolvingHost(host, port: port)
        var generator = SystemRandomNumberGenerator()
        let id = UInt16.random(in: 0...UInt16.max, using: &generator)
        let question = DNSQuestion(name: Self.normalized(name), type: type)
        let udp = try await udpExchange(DNSMessage.query(id: id, name: question.name, type: type), to: address, id: id, question: question)
        let response = try Self.checked(udp, id: id, question: question)
        guard response.isTruncated else { return DNSAnswer(message: response, viaTCP: false) }
        let tcp = try await tcpExchange(DNSMessage.query(id: id, name: question.name, type: type, udpPayloadSize: 0), to: address)
        return DNSAnswer(message: try Self.checked(Self.parsed(tcp), id: id, question: question), viaTCP: true)
    }

    static func normalized(_ name: String) -> String {
        var name = name.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        return name
    }

    /// Parses a response.
    static func parsed(_ bytes: [UInt8]) throws -> DNSMessage {
        do {
            return try DNSMessage.parse(bytes)
        } catch {
            throw DNSLookupError(code: .malformed, message: "the response cannot be parsed", cause: error)
        }
    }

    /// Checks a response answers the query; maps error codes to errors.
    static func checked(_ message: DNSMessage, id: UInt16, question: DNSQuestion) throws -> DNSMessage {
        guard message.isResponse, message.id == id, message.questions == [question] else {
            throw DNSLookupError(code: .malformed, message: "the response does not match the query")
        }
        switch message.responseCode {
        case .noError, .nameError:
            return message
        case .refused:
            throw DNSLookupError(code: .refused, message: "the nameserver refused the query for \(question.name)")
        default:
            throw DNSLookupError(code: .serverFailure, message: "\(message.responseCode) for \(question.name)")
        }
    }

    /// `channel` (bound or connected) wrapped for async use, on its event loop; closed if that fails.
    ///
    /// Wrapped after the bind or connect, not in the bootstrap's channel initializer: NIO then never
    /// holds the wrapper, and a wrapper added to an active channel keeps its writer until the
    /// channel closes, so a wrapper let go of unconsumed (a query that meets a shutdown between its
    /// connect and its exchange) cannot end unfinished, which NIO treats as a programming error and
    /// stops the process on. DNS starts with the client's query, so nothing is lost before the
    /// wrapping.
    package static func wrappedForAsync<Inbound: Sendable, Outbound: Sendable>(
        _ channel: any Channel
    ) async throws -> NIOAsyncChannel<Inbound, Outbound> {
        do {
            return try await channel.eventLoop.submit {
                try NIOAsyncChannel<Inbound, Outbound>(wrappingChannelSynchronously: channel)
            }.get()
        } catch {
            try? await channel.close()
            throw error
        }
    }

    /// Sends a query over UDP and waits for a datagram from the server whose id and question match.
    private func udpExchange(_ query: [UInt8], to server: SocketAddress, id: UInt16, question: DNSQuestion) async throws -> DNSMessage {
        let local = server.protocol == .inet6 ? "::" : "0.0.0.0"
        let channel: NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>> =
            try await Self.wrappedForAsync(DatagramBootstrap(group: group).bind(host: local, port: 0).get())
        return try await exchange(on: channel.channel) {
            try await withTimeout(configuration.timeout, what: "UDP answer from \(server)") {
                try await channel.executeThenClose { inbound, outbound in
                    try await outbound.write(AddressedEnvelope(remoteAddress: server, data: ByteBuffer(bytes: query)))
                    for try await envelope in inbound {
                        // Only the nameserver asked, only an answer to this query; anything else is ignored.
                        guard envelope.remoteAddress == server else { continue }
                        // Parsed once, here: a datagram that does not answer this query is ignored.
                        let bytes = Array(envelope.data.readableBytesView)
                        guard bytes.count >= 2, UInt16(bytes[0]) << 8 | UInt16(bytes[1]) == id else { continue }
                        let message = try Self.parsed(bytes)
                        if message.questions == [question] { return message }
                    }
                    throw DNSLookupError(code: .network, message: "the UDP socket closed")
                }
            }
        }
    }

    /// Sends a query over TCP (two-byte length prefix) and reads one whole response.
    private func tcpExchange(_ query: [UInt8], to server: SocketAddress) async throws -> [UInt8] {
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await Self.wrappedForAsync(
                ClientBootstrap(group: group).connectTimeout(TimeAmount(configuration.timeout)).connect(to: server).get())
        } catch {
            throw DNSLookupError(code: .network, message: "TCP connection to \(server) failed", cause: error)
        }
        return try await exchange(on: channel.channel) {
            try await withTimeout(configuration.timeout, what: "TCP answer from \(server)") {
                try await channel.executeThenClose { inbound, outbound in
                    var framed = ByteBuffer()
                    framed.writeInteger(UInt16(query.count))
                    framed.writeBytes(query)
                    try await outbound.write(framed)
                    var received = ByteBuffer()
                    for try await chunk in inbound {
                        var chunk = chunk
                        received.writeBuffer(&chunk)
                        guard let length = received.getInteger(at: received.readerIndex, as: UInt16.self) else { continue }
                        if received.readableBytes >= 2 + Int(length) {
                            return received.getBytes(at: received.readerIndex + 2, length: Int(length)) ?? []
                        }
                    }
                    throw DNSLookupError(code: .network, message: "the TCP connection closed before a whole answer")
                }
            }
        }
    }
}

/// Runs `body`, failing with a ``DNSLookupError/Code/timeout`` after `timeout`.
func withTimeout<T: Sendable>(
    _ timeout: Duration,
    what: String,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withTimeout(timeout, onTimeout: { DNSLookupError(code: .timeout, message: "no \(what) within \(timeout)") }, body)
}
