import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LoadBalancer
import Logging
import NIOCore
import Synchronization

/// A grpc-swift `ClientTransport` that balances every RPC with this library's balancers: one
/// HTTP/2 transport per instance of an `InstancePublisher`, and a `Balancer` choosing, per RPC,
/// the instance it goes to.
///
/// ```swift
/// let transport = BalancingClientTransport(
///     publisher: publisher,
///     configuration: .init(balancer: .p2c(.peakEWMA()), outlierDetection: .init())
/// )
/// try await withGRPCClient(transport: transport) { client in
///     let greeter = Greeter.Client(wrapping: client)   // generated stubs work unchanged
///     _ = try await greeter.sayHello(.with { $0.name = "swift" })
/// }
/// ```
///
/// Where `NameResolvers.LoadBalancerPublisher` only feeds grpc-swift's own round robin or
/// pick-first, this transport gives a gRPC client P2C peak-EWMA, outlier ejection, weights and
/// consistent hashing.
///
/// **Instances.** Each instance of the publisher's set gets an `HTTP2ClientTransport.Posix` of its
/// own (pick-first over the instance's addresses), made when the instance joins the set. A new
/// instance enters the balancer's set once its TCP connection is up (or after
/// ``Configuration/readinessTimeout``, whichever comes first). An instance that leaves the set gets
/// no new RPC; its open streams run on for up to ``Configuration/drainTimeout``, and then its
/// transport closes. An RPC whose chosen instance is closing before its stream opened is sent to
/// another instance, so set changes alone fail no RPC.
///
/// **What the balancer learns.** A stream counts as in flight from the pick to its end. Its outcome
/// is the status the server ended it with: a code in ``Configuration/failureCodes`` is a failure,
/// any other status a success; a stream that ends without a status (the transport failed, the
/// caller stopped) is a failure, or a cancellation when the caller was cancelled. Its latency is the
/// time from the pick to the first response message (for a unary RPC: its response), or to the
/// end of a stream that carried no message.
///
/// **Retries.** grpc-swift's retry and hedging policies (``Configuration/serviceConfig``'s method
/// configuration) apply as with any transport: each attempt is a new stream, so a fresh pick.
/// Prefer them for gRPC: they buffer the request messages, which is what lets a streaming RPC be
/// retried. `Retry` fits when calls go through this library's `Endpoint`s instead.
///
/// **Affinity.** With ``BalancerChoice/consistentHash(tableSize:)``, an RPC made inside
/// `GRPCRequestKey.$current.withValue(key) { ... }` goes to the instance of `key`'s hash, and so
/// do its retries and hedges (grpc-swift runs them in child tasks, which inherit the key); an RPC
/// without a key goes to a random instance.
///
/// Run ``connect()`` (`GRPCClient` does) for as long as RPCs are made; ``beginGracefulShutdown()``
/// lets open streams finish and then ends it.
public final class BalancingClientTransport: ClientTransport {
    public typealias Bytes = GRPCNIOTransportBytes

    /// Which of this library's balancers chooses each RPC's instance.
    public struct BalancerChoice: Sendable {
        enum Kind: Sendable {
            case roundRobin
            case random
            case weightedRoundRobin
            case weightedRandom
            case p2c(P2CLoadMetric)
            case consistentHash(tableSize: Int)
        }
        let kind: Kind

        /// Each instance in turn.
        public static let roundRobin = BalancerChoice(kind: .roundRobin)
        /// A uniformly random instance.
        public static let random = BalancerChoice(kind: .random)
        /// Instances in turn, in proportion to their weights (smooth weighted round robin).
        public static let weightedRoundRobin = BalancerChoice(kind: .weightedRoundRobin)
        /// A random instance, in proportion to the weights.
        public static let weightedRandom = BalancerChoice(kind: .weightedRandom)
        /// The better of two random instances by `metric` (`P2CBalancer`).
        public static func p2c(_ metric: P2CLoadMetric = .peakEWMA()) -> BalancerChoice {
            BalancerChoice(kind: .p2c(metric))
        }
        /// The instance of the RPC's ``GRPCRequestKey`` (`ConsistentHashBalancer`, Maglev).
        public static func consistentHash(tableSize: Int = 65_537) -> BalancerChoice {
            BalancerChoice(kind: .consistentHash(tableSize: tableSize))
        }
    }

    /// How the transport balances, connects and drains.
    public struct Configuration: Sendable {
        /// The balancer. Default ``BalancerChoice/p2c(_:)`` with peak EWMA.
        public var balancer: BalancerChoice = .p2c()
        /// Outlier ejection over the RPCs' outcomes; `nil` turns it off. Default `nil`.
        public var outlierDetection: OutlierDetector.Configuration?
        /// The status codes that count as a failed RPC for the balancer and the outlier detector.
        /// Default: `unavailable`, `internal`, `unknown`, `deadlineExceeded`, `resourceExhausted`
        /// (the server or the path to it is in trouble); codes such as `notFound` or
        /// `invalidArgument` are the application's answers, and count as successes.
        public var failureCodes: Set<RPCError.Code> = [.unavailable, .internalError, .unknown, .deadlineExceeded, .resourceExhausted]
        /// The metadata key whose value is an RPC's request key for
        /// ``BalancerChoice/consistentHash(tableSize:)`` (for example `"x-user-id"`), used when the
        /// RPC has no ``GRPCRequestKey``. Keys are matched in lowercase, as gRPC sends them. An RPC
        /// without the key goes to a random instance. Default `nil`: only ``GRPCRequestKey``.
        ///
        /// The instance of such an RPC is chosen once its request metadata is written (grpc-swift
        /// writes it after the client interceptors ran), so the `ClientContext` the interceptors
        /// see has empty `remotePeer` and `localPeer`. Every retry and hedge writes the same
        /// metadata again, so they go to the same key's instance.
        public var affinityMetadataKey: String?
        /// How long a removed instance's open streams may run on before its transport is closed.
        /// Default 30 s.
        public var drainTimeout: Duration = .seconds(30)
        /// How long a new instance may take to connect before it enters the set anyway (its RPCs
        /// then wait for the connection, or fail and count against it). Default 2 s.
        public var readinessTimeout: Duration = .seconds(2)
        /// Method configuration (timeouts, retry and hedging policies) and retry throttling, as
        /// grpc-swift's transports take them. Default: none.
        public var serviceConfig = ServiceConfig()
        /// Security of every instance's connection. Default plaintext.
        public var transportSecurity: HTTP2ClientTransport.Posix.TransportSecurity = .plaintext
        /// Configuration of every instance's transport (HTTP/2, backoff, keepalive, ...).
        public var transportConfig: HTTP2ClientTransport.Posix.Config = .defaults

        /// The defaults, with `balancer` and `outlierDetection` set.
        public init(balancer: BalancerChoice = .p2c(), outlierDetection: OutlierDetector.Configuration? = nil) {
            self.balancer = balancer
            self.outlierDetection = outlierDetection
        }
    }

    private enum Event: Sendable {
        case start(Subchannel)
        case shutdown
    }

    private struct State {
        var connectCalled = false
        var accepting = true
    }

    private let configuration: Configuration
    private let logger: Logger
    private let cache: EndpointCache<Void, Subchannel>
    private let balancer: AnyBalancer<Void, Subchannel>
    private let hashing: ConsistentHashBalancer<Void, Subchannel>?
    private let methodConfigs: MethodConfigLookup
    /// ``Configuration/affinityMetadataKey``, lowercased.
    private let affinityMetadataKey: String?
    private let events: AsyncStream<Event>
    private let eventSink: AsyncStream<Event>.Continuation
    private let state = Mutex(State())
    /// Fired at the shutdown: the cache stops following the publisher.
    private let stopFollowing = ShutdownSignal()

    /// The throttle of ``Configuration/serviceConfig``'s `retryThrottling`, if any.
    public let retryThrottle: RetryThrottle?

    /// The outlier detector, when ``Configuration/outlierDetection`` is set (for its events and
    /// ejection state).
    public let outlierDetector: OutlierDetector?

    /// Creates a transport over the instances of `publisher`.
    ///
    /// - Parameters:
    ///   - publisher: Where instances come from. The transport does not run it: run a publisher
    ///     that needs running (DNS, etcd, ZooKeeper, Consul) yourself.
    ///   - configuration: Balancer, failure codes, drain and readiness, service config, security.
    ///   - logger: Where the transport logs instances joining and leaving. Default: none.
    ///   - instrumentation: Metrics of the instances and the balanced RPCs: the set, picks, and
    ///     per instance the RPCs, their failures (``Configuration/failureCodes``) and latency.
    ///     RPCs get no span from the transport: grpc-swift's tracing interceptors trace them.
    ///     Default: none.
    public init(
        publisher: some InstancePublisher,
        configuration: Configuration = Configuration(),
        logger: Logger = Logger(label: "loadbalancer.grpc", factory: { _ in SwiftLogNoOpLogHandler() }),
        instrumentation: LoadBalancerInstrumentation? = nil
    ) {
        self.configuration = configuration
        self.logger = logger
        (events, eventSink) = AsyncStream.makeStream(of: Event.self)
        let sink = eventSink
        let factory = EndpointFactory<Void, Subchannel> { instance in
            let subchannel = try Subchannel(instance: instance, configuration: configuration)
            sink.yield(.start(subchannel))
            if await !subchannel.waitUntilReady(timeout: configuration.readinessTimeout) {
                logger.warning(
                    "instance not connected within the readiness timeout; it joins the set anyway",
                    metadata: ["loadbalancer.instance": "\(instance.id)", "loadbalancer.timeout": "\(configuration.readinessTimeout)"]
                )
            }
            return ManagedEndpoint(Endpoint(instance: instance) { _ in subchannel }, close: { subchannel.close() })
        }
        let cache = EndpointCache(publisher: publisher, factory: factory, logger: logger, instrumentation: instrumentation)
        self.cache = cache
        let detector = configuration.outlierDetection.map { OutlierDetector(cache, configuration: $0) }
        self.outlierDetector = detector
        let hash: ConsistentHashBalancer<Void, Subchannel>? =
            if case .consistentHash(let tableSize) = configuration.balancer.kind {
                ConsistentHashBalancer(cache, tableSize: tableSize, ejection: detector)
            } else {
                nil
            }
        hashing = hash
        balancer =
            switch configuration.balancer.kind {
            case .roundRobin: AnyBalancer(RoundRobinBalancer(cache, ejection: detector))
            case .random: AnyBalancer(RandomBalancer(cache, ejection: detector))
            case .weightedRoundRobin: AnyBalancer(WeightedRoundRobinBalancer(cache, ejection: detector))
            case .weightedRandom: AnyBalancer(WeightedRandomBalancer(cache, ejection: detector))
            case .p2c(let metric): AnyBalancer(P2CBalancer(cache, metric: metric, ejection: detector))
            case .consistentHash: AnyBalancer(hash!) // made above for this case
            }
        methodConfigs = MethodConfigLookup(configuration.serviceConfig)
        affinityMetadataKey = configuration.affinityMetadataKey?.lowercased()
        retryThrottle = configuration.serviceConfig.retryThrottling.map { RetryThrottle(policy: $0) }
    }

    /// Follows the publisher and keeps the instances' connections until ``beginGracefulShutdown()``
    /// has been called and every stream has ended, or until the calling task is cancelled (which
    /// closes every connection at once).
    ///
    /// - Throws: `RPCError` (`failedPrecondition`) when called a second time.
    public func connect() async throws {
        let accepting = state.withLock { state -> Bool? in
            if state.connectCalled { return nil }
            state.connectCalled = true
            return state.accepting
        }
        guard let accepting else {
            throw RPCError(code: .failedPrecondition, message: "connect() was already called on this transport")
        }
        guard accepting else { return }
        await withTaskGroup(of: Void.self) { group in
            let cache = self.cache
            let stopFollowing = self.stopFollowing
            // The cache follows the publisher until the shutdown (its run() ends only when
            // cancelled or when the publisher finishes).
            group.addTask {
                await withTaskGroup(of: Void.self) { following in
                    following.addTask { try? await cache.run() }
                    await stopFollowing.wait()
                    following.cancelAll()
                }
            }
            for await event in events {
                switch event {
                case .start(let subchannel):
                    let drainTimeout = configuration.drainTimeout
                    group.addTask { await subchannel.run(drainTimeout: drainTimeout) }
                case .shutdown:
                    // Closes every instance's transport (each drains its streams).
                    await cache.shutdown()
                    _ = stopFollowing.fire()
                    eventSink.finish()
                }
            }
            // Cancelled, or shut down: the cache's run ends, and each transport once drained.
            if Task.isCancelled { group.cancelAll() }
            await group.waitForAll()
        }
    }

    /// Stops taking new RPCs (they fail with `failedPrecondition`); open streams finish, then
    /// ``connect()`` returns.
    public func beginGracefulShutdown() {
        let wasAccepting = state.withLock { state in
            defer { state.accepting = false }
            return state.accepting
        }
        guard wasAccepting else { return }
        eventSink.yield(.shutdown)
    }

    /// The method configuration of ``Configuration/serviceConfig`` for `descriptor`: the entry
    /// naming the method, else the one naming its service, else the default entry (no names).
    public func config(forMethod descriptor: MethodDescriptor) -> MethodConfig? {
        methodConfigs[descriptor]
    }

    /// Opens a stream on the instance the balancer picks and runs `closure` with it.
    ///
    /// - Throws: `RPCError` `failedPrecondition` once shut down, `unavailable` when there is no
    ///   instance; what the instance's transport or `closure` throws.
    public func withStream<T: Sendable>(
        descriptor: MethodDescriptor,
        options: CallOptions,
        _ closure: (_ stream: RPCStream<Inbound, Outbound>, _ context: ClientContext) async throws -> T
    ) async throws -> T {
        let key = GRPCRequestKey.current
        if key == nil, hashing != nil, let metadataKey = affinityMetadataKey {
            return try await withStreamKeyedByMetadata(metadataKey, descriptor: descriptor, options: options, closure)
        }
        return try await withBalancedStream(descriptor: descriptor, options: options, key: key, closure)
    }

    /// Opens a stream on the instance of `key` (hashing) or the balancer's pick, and runs `body`
    /// with it, reporting the stream's outcome and latency.
    private func withBalancedStream<T: Sendable>(
        descriptor: MethodDescriptor,
        options: CallOptions,
        key: String?,
        _ body: (_ stream: RPCStream<Inbound, Outbound>, _ context: ClientContext) async throws -> T
    ) async throws -> T {
        // A pick whose instance closed before its stream opened is made again (bounded: the set
        // cannot keep closing every instance).
        for _ in 0..<16 {
            guard state.withLock({ $0.accepting }) else {
                throw RPCError(code: .failedPrecondition, message: "the transport is shutting down")
            }
            let lease = try await takeLease(options, key: key)
            let subchannel = try await lease.endpoint(())
            guard subchannel.beginStream() else {
                balancer.finish(lease, outcome: .cancelled, latency: .zero)
                continue
            }
            defer { subchannel.endStream() }
            let observer = StreamObserver()
            var opened = false
            do {
                let result = try await subchannel.transport.withStream(descriptor: descriptor, options: options) { stream, context in
                    opened = true
                    let observed = RPCStream(
                        descriptor: stream.descriptor,
                        inbound: RPCAsyncSequence(wrapping: ObservedInbound(base: stream.inbound, observer: observer)),
                        outbound: stream.outbound
                    )
                    return try await body(observed, context)
                }
                finish(lease, observer, error: nil)
                return result
            } catch let error as RPCError where !opened && (error.code == .failedPrecondition || subchannel.isClosing) {
                // The instance's transport began shutting down between the pick and the stream
                // (grpc-swift refuses the stream: failedPrecondition, or unavailable "channel is
                // closed"). No request byte left: another instance takes the RPC.
                balancer.finish(lease, outcome: .cancelled, latency: .zero)
                continue
            } catch {
                finish(lease, observer, error: error)
                throw error
            }
        }
        throw RPCError(code: .unavailable, message: "every instance picked was closing; try again")
    }

    /// Runs `closure` with a stream whose instance is chosen when its request metadata is
    /// written: by the value of `metadataKey`. Writes wait for the real stream; responses come
    /// from it; the real stream stays open until `closure` returns.
    private func withStreamKeyedByMetadata<T: Sendable>(
        _ metadataKey: String,
        descriptor: MethodDescriptor,
        options: CallOptions,
        _ closure: (_ stream: RPCStream<Inbound, Outbound>, _ context: ClientContext) async throws -> T
    ) async throws -> T {
        let metadata = DeferredValue<Metadata>()
        let realStream = DeferredValue<RPCStream<Inbound, Outbound>>()
        let ended = DeferredValue<Void>()
        let stream = RPCStream(
            descriptor: descriptor,
            inbound: RPCAsyncSequence(wrapping: DeferredInbound(stream: realStream)),
            outbound: RPCWriter.Closable(wrapping: DeferredOutbound(metadata: metadata, stream: realStream))
        )
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    let written = try await metadata.value()
                    let key = written[stringValues: metadataKey].first(where: { _ in true })
                    try await self.withBalancedStream(descriptor: descriptor, options: options, key: key) { opened, _ in
                        realStream.succeed(opened)
                        // The stream stays open until the caller's closure is done with it.
                        try? await ended.value()
                    }
                } catch {
                    realStream.fail(error)
                }
            }
            let result: Result<T, any Error>
            do {
                result = .success(try await closure(stream, ClientContext(descriptor: descriptor, remotePeer: "", localPeer: "")))
            } catch {
                result = .failure(error)
            }
            ended.succeed(())
            metadata.fail(RPCError(code: .cancelled, message: "the RPC ended before writing its metadata"))
            try await group.waitForAll()
            return try result.get()
        }
    }

    /// A lease for one RPC: by its key when hashing and it has one, else from the balancer.
    /// Before discovery has answered once, the RPC waits for it (at most its timeout, else
    /// ``Configuration/readinessTimeout``), as gRPC RPCs wait for name resolution.
    private func takeLease(_ options: CallOptions, key: String?) async throws -> EndpointLease<Void, Subchannel> {
        do {
            return try lease(key: key)
        } catch {
            guard !cache.discoveryStatus.isReady else {
                throw RPCError(code: .unavailable, message: "no instance to send the RPC to", cause: error)
            }
        }
        do {
            try await cache.waitUntilReady(timeout: options.timeout ?? configuration.readinessTimeout)
            return try lease(key: key)
        } catch let error as CancellationError {
            throw error
        } catch {
            throw RPCError(code: .unavailable, message: "no instance to send the RPC to", cause: error)
        }
    }

    private func lease(key: String?) throws(LoadBalancerError) -> EndpointLease<Void, Subchannel> {
        if let hashing, let key {
            return try hashing.lease(forKey: key)
        }
        return try balancer.lease()
    }

    /// Reports a stream's outcome and latency to the balancer.
    private func finish(_ lease: EndpointLease<Void, Subchannel>, _ observer: StreamObserver, error: (any Error)?) {
        let (code, latency) = observer.result()
        let outcome: CallRecord.Outcome
        if let code {
            outcome = code.map { configuration.failureCodes.contains($0) } == true ? .failure : .success
        } else if let error {
            outcome = error is CancellationError || (error as? RPCError)?.code == .cancelled ? .cancelled : .failure
        } else {
            outcome = .success
        }
        balancer.finish(lease, outcome: outcome, latency: latency)
        cache.instrumentCall(lease.endpoint.id, outcome: outcome, latency: latency)
    }
}

/// The request key a ``BalancingClientTransport`` hashes with ``BalancingClientTransport/BalancerChoice/consistentHash(tableSize:)``.
///
/// ```swift
/// let profile = try await GRPCRequestKey.$current.withValue(userID) {
///     try await profiles.get(.with { $0.userID = userID })
/// }
/// ```
public enum GRPCRequestKey {
    /// The key of the RPCs made in this task (and its child tasks, so retries and hedges too).
    @TaskLocal public static var current: String?
}

/// The method configurations of a service config, looked up as gRPC specifies: the entry naming
/// the method, then the one naming only its service, then the one naming neither.
struct MethodConfigLookup: Sendable {
    private var byMethod: [String: MethodConfig] = [:]
    private var byService: [String: MethodConfig] = [:]
    private var fallback: MethodConfig?

    init(_ serviceConfig: ServiceConfig) {
        for config in serviceConfig.methodConfig {
            for name in config.names {
                if name.service.isEmpty {
                    if fallback == nil { fallback = config }
                } else if name.method.isEmpty {
                    if byService[name.service] == nil { byService[name.service] = config }
                } else {
                    let key = name.service + "/" + name.method
                    if byMethod[key] == nil { byMethod[key] = config }
                }
            }
        }
    }

    subscript(descriptor: MethodDescriptor) -> MethodConfig? {
        byMethod[descriptor.service.fullyQualifiedService + "/" + descriptor.method] ?? byService[descriptor.service.fullyQualifiedService]
            ?? fallback
    }
}

/// A value that arrives later, once: waiters suspend until it is set or failed (the first of the
/// two wins); a waiter's cancellation ends its own wait with `CancellationError`.
final class DeferredValue<Value: Sendable>: Sendable {
    private struct State {
        var result: Result<Value, any Error>?
        var waiters: [UInt64: CheckedContinuation<Value, any Error>] = [:]
        var nextWaiter: UInt64 = 0
    }
    private let state = Mutex(State())

    /// Whether the value was set or failed.
    var isSet: Bool { state.withLock { $0.result != nil } }

    func succeed(_ value: Value) { complete(.success(value)) }
    func fail(_ error: any Error) { complete(.failure(error)) }

    private func complete(_ result: Result<Value, any Error>) {
        let waiters = state.withLock { state -> [CheckedContinuation<Value, any Error>] in
            guard state.result == nil else { return [] }
            state.result = result
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    /// The value, once set; throws the failure, or `CancellationError` if the task is cancelled
    /// first.
    func value() async throws -> Value {
        let id = state.withLock { state -> UInt64 in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let ready = state.withLock { state -> Result<Value, any Error>? in
                    if let result = state.result { return result }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    state.waiters[id] = continuation
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume(throwing: CancellationError())
        }
    }
}

/// The request side of a stream whose instance is not chosen yet: the first part written (the
/// metadata) chooses it; every write then goes to the real stream once it is open.
struct DeferredOutbound: ClosableRPCWriterProtocol {
    typealias Element = RPCRequestPart<GRPCNIOTransportBytes>
    let metadata: DeferredValue<Metadata>
    let stream: DeferredValue<RPCStream<BalancingClientTransport.Inbound, BalancingClientTransport.Outbound>>

    func write(_ element: Element) async throws {
        if case .metadata(let written) = element { metadata.succeed(written) }
        try await stream.value().outbound.write(element)
    }

    func write(contentsOf elements: some Sequence<Element>) async throws {
        for element in elements { try await write(element) }
    }

    func finish() async {
        // No metadata was written: there is no real stream to finish.
        metadata.fail(RPCError(code: .cancelled, message: "the request ended before its metadata"))
        guard let real = try? await stream.value() else { return }
        await real.outbound.finish()
    }

    func finish(throwing error: any Error) async {
        metadata.fail(error)
        guard let real = try? await stream.value() else { return }
        await real.outbound.finish(throwing: error)
    }
}

/// The response side of a stream whose instance is not chosen yet: the real stream's parts, once
/// it is open (or the error that kept it from opening).
struct DeferredInbound: AsyncSequence, Sendable {
    typealias Element = RPCResponsePart<GRPCNIOTransportBytes>
    typealias Failure = any Error
    let stream: DeferredValue<RPCStream<BalancingClientTransport.Inbound, BalancingClientTransport.Outbound>>

    struct AsyncIterator: AsyncIteratorProtocol {
        let stream: DeferredValue<RPCStream<BalancingClientTransport.Inbound, BalancingClientTransport.Outbound>>
        var base: RPCAsyncSequence<Element, any Error>.AsyncIterator?

        mutating func next(isolation actor: isolated (any Actor)?) async throws(any Error) -> Element? {
            if base == nil { base = try await stream.value().inbound.makeAsyncIterator() }
            return try await base?.next(isolation: actor)
        }

        mutating func next() async throws -> Element? {
            try await next(isolation: nil)
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(stream: stream, base: nil)
    }
}

/// What a stream showed: its status code (nil for `ok`) and when its first message came.
final class StreamObserver: Sendable {
    private struct State {
        var status: RPCError.Code?? = nil
        var firstMessage: ContinuousClock.Instant?
    }
    private let start = ContinuousClock.now
    private let state = Mutex(State())

    func sawMessage() {
        let now = ContinuousClock.now
        state.withLock { if $0.firstMessage == nil { $0.firstMessage = now } }
    }

    func sawStatus(_ status: Status) {
        let now = ContinuousClock.now
        state.withLock { state in
            state.status = .some(RPCError.Code(status.code))
            if state.firstMessage == nil { state.firstMessage = now }
        }
    }

    /// The status seen (`.some(nil)` for `ok`, `nil` when none came) and the latency.
    func result() -> (status: RPCError.Code??, latency: Duration) {
        let now = ContinuousClock.now
        return state.withLock { ($0.status, start.duration(to: $0.firstMessage ?? now)) }
    }
}

/// A stream's response parts, passed through while ``StreamObserver`` notes the first message and
/// the status.
struct ObservedInbound<Base: AsyncSequence<RPCResponsePart<GRPCNIOTransportBytes>, any Error> & Sendable>: AsyncSequence, Sendable {
    typealias Element = RPCResponsePart<GRPCNIOTransportBytes>
    typealias Failure = any Error

    let base: Base
    let observer: StreamObserver

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        let observer: StreamObserver

        mutating func next(isolation actor: isolated (any Actor)?) async throws(any Error) -> Element? {
            let part = try await base.next(isolation: actor)
            switch part {
            case .message: observer.sawMessage()
            case .status(let status, _): observer.sawStatus(status)
            case .metadata, nil: break
            }
            return part
        }

        mutating func next() async throws -> Element? {
            try await next(isolation: nil)
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: base.makeAsyncIterator(), observer: observer)
    }
}

/// One instance's HTTP/2 transport: its connection, readiness, open streams and drain.
final class Subchannel: Sendable {
    let instance: Instance
    let transport: HTTP2ClientTransport.Posix
    private let signals: Signals

    /// Readiness and close, shared with the connection callback made before the transport.
    final class Signals: Sendable {
        struct State {
            var closing = false
            var openStreams = 0
        }
        let state = Mutex(State())
        /// Set when the first TCP connection is up.
        let ready = DeferredValue<Void>()
        /// Set when the instance leaves the set.
        let closed = DeferredValue<Void>()
    }

    init(instance: Instance, configuration: BalancingClientTransport.Configuration) throws {
        self.instance = instance
        let signals = Signals()
        self.signals = signals
        var config = configuration.transportConfig
        let userCallback = config.channelDebuggingCallbacks.onCreateTCPConnection
        config.channelDebuggingCallbacks.onCreateTCPConnection = { channel in
            signals.ready.succeed(())
            return userCallback?(channel) ?? channel.eventLoop.makeSucceededVoidFuture()
        }
        guard let target = HostKind.target(of: instance) else {
            throw RPCError(
                code: .invalidArgument, message: "instance \(instance.id): host '\(instance.host)' is not an address or a host name")
        }
        transport = try HTTP2ClientTransport.Posix(
            target: target,
            transportSecurity: configuration.transportSecurity,
            config: config,
            serviceConfig: ServiceConfig(loadBalancingConfig: [.pickFirst(shuffleAddressList: false)])
        )
    }

    /// Waits until the connection is up, at most `timeout`; returns whether it is.
    func waitUntilReady(timeout: Duration) async -> Bool {
        let ready = signals.ready
        if ready.isSet { return true }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await ready.value() }
            group.addTask { try? await Task.sleep(for: timeout) }
            // Whichever came first: the other is cancelled.
            await group.next()
            group.cancelAll()
        }
        return ready.isSet
    }

    /// Counts a stream about to open; `false` when the instance is closing (pick another).
    func beginStream() -> Bool {
        signals.state.withLock { state in
            if state.closing { return false }
            state.openStreams += 1
            return true
        }
    }

    /// Whether the instance left the set (its transport is draining or closed).
    var isClosing: Bool { signals.state.withLock { $0.closing } }

    /// Counts a stream that ended.
    func endStream() {
        signals.state.withLock { $0.openStreams -= 1 }
    }

    /// The instance left the set: no new streams; ``run(drainTimeout:)`` drains and closes.
    func close() {
        signals.state.withLock { $0.closing = true }
        signals.closed.succeed(())
    }

    /// Runs the transport until the instance is closed and its streams have ended (at most
    /// `drainTimeout` after the close), or until the task is cancelled.
    func run(drainTimeout: Duration) async {
        let closed = signals.closed
        let transport = self.transport
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                try? await transport.connect()
                return true
            }
            // Wait for the close (or cancellation).
            try? await closed.value()
            // Open streams finish; new ones are refused. The transport's connect() returns once
            // they have, or the drain timer cancels it.
            transport.beginGracefulShutdown()
            group.addTask {
                try? await Task.sleep(for: drainTimeout)
                return false
            }
            _ = await group.next()
            group.cancelAll()
        }
    }
}
