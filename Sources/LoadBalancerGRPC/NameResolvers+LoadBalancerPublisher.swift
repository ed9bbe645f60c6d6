import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LoadBalancer
import Logging

extension NameResolvers {
    /// A `NameResolverFactory` for `ResolvableTargets.LoadBalancerPublisher` targets: gives a
    /// grpc-swift client this library's service discovery.
    ///
    /// ```swift
    /// let publisher = DNSSRVPublisher(name: "_grpc._tcp.users.internal", client: dnsClient)
    /// var registry = NameResolverRegistry.defaults
    /// registry.registerFactory(NameResolvers.LoadBalancerPublisher(logger: logger))
    /// let transport = try HTTP2ClientTransport.Posix(
    ///     target: .publisher(publisher),
    ///     transportSecurity: .plaintext,
    ///     resolverRegistry: registry
    /// )
    /// let client = GRPCClient(transport: transport)
    /// // Run the publisher (it is a Service) and the client, e.g. in one ServiceGroup or task group.
    /// ```
    ///
    /// The resolver is push-based: each subscription of the channel is a subscription to the
    /// publisher's `updates()`, and each snapshot becomes a `NameResolutionResult` with one
    /// `Endpoint` per instance, in the publisher's order (by id), together with the target's
    /// service configuration. The resolver never runs the publisher: run a publisher that needs
    /// running (DNS, etcd, ZooKeeper, Consul) yourself.
    ///
    /// **Addresses.** An IPv4 or IPv6 literal host is used as it is. A DNS host name is resolved
    /// with `getaddrinfo` (through grpc-swift's own DNS resolver, off the event loops and off the
    /// concurrency pool) each time a snapshot arrives, all its addresses forming the instance's one
    /// endpoint; if resolving fails, the addresses last resolved for that instance are kept, and an
    /// instance that never resolved is left out (and logged). With `resolvesHostNames: false`,
    /// instances with a host name are left out (and logged). Names are not re-resolved between
    /// snapshots: for a service found by DNS, use a DNS publisher, which follows the records'
    /// TTLs.
    ///
    /// **Errors and empty sets.** A snapshot carrying a discovery error still carries the last good
    /// set (the publisher's contract), and that set is what the channel keeps: a registry error
    /// never empties it. When a snapshot gives no endpoint at all (an empty set, an error with
    /// nothing to fall back on, or no instance with a usable address):
    ///
    /// - if the channel has never had endpoints from this resolver, the resolver throws a
    ///   ``PublisherResolutionError``, so RPCs waiting for a connection fail at once with
    ///   `RPCError` code `unavailable` whose `cause` says why, rather than waiting until their
    ///   deadline. The channel subscribes again after its backoff (the transport's
    ///   `config.backoff`: 1 s, growing to 2 minutes by default; lower `backoff.max` to notice a
    ///   first instance sooner);
    /// - once the channel has endpoints, grpc-swift keeps using them whatever a resolver reports
    ///   (it ignores empty results and resolver errors while it has a load balancer), so the
    ///   update is logged and skipped, and the subscription stays open for the next set, which is
    ///   applied at once. RPCs to instances that went away then fail as those servers stop.
    ///
    /// **Load balancing.** The target's service configuration (round robin unless you choose
    /// otherwise, see `ResolvableTargets.LoadBalancerPublisher.serviceConfig`) is sent with
    /// every update. grpc-swift's round robin keeps the connections of instances that stay, opens
    /// connections to new ones and closes those of removed ones, letting their RPCs in flight
    /// finish. An RPC that picks a removed instance just as its connection closes fails with
    /// `unavailable`; a retry policy for `unavailable` in the service configuration
    /// (`MethodConfig(executionPolicy: .retry(...))`) sends it to another instance instead.
    public struct LoadBalancerPublisher: NameResolverFactory, Sendable {
        /// The target type this factory resolves.
        public typealias Target = ResolvableTargets.LoadBalancerPublisher

        /// Turns a host name and a port into socket addresses.
        typealias HostResolver = @Sendable (_ host: String, _ port: Int) async throws -> [SocketAddress]

        private let logger: Logger
        private let hostResolver: HostResolver?

        /// Creates the factory.
        ///
        /// - Parameters:
        ///   - resolvesHostNames: Whether instances whose host is a DNS name are resolved with
        ///     `getaddrinfo` (default `true`); when `false` they are left out, with a log message.
        ///   - logger: Where updates, skipped instances and kept endpoints are logged. Default: no
        ///     logging.
        public init(
            resolvesHostNames: Bool = true,
            logger: Logger = Logger(label: "loadbalancer.grpc", factory: { _ in SwiftLogNoOpLogHandler() })
        ) {
            let getaddrinfo: HostResolver = { host, port in try await Self.getaddrinfo(host: host, port: port) }
            self.init(hostResolver: resolvesHostNames ? getaddrinfo : nil, logger: logger)
        }

        /// Creates the factory with an injected host-name resolver (for tests).
        init(hostResolver: HostResolver?, logger: Logger) {
            self.hostResolver = hostResolver
            self.logger = logger
        }

        /// Makes the push-based resolver for `target`; see `NameResolvers.LoadBalancerPublisher`.
        ///
        /// - Parameter target: The publisher-backed target.
        /// - Returns: A resolver whose names follow the target's publisher.
        public func resolver(for target: Target) -> NameResolver {
            let names = PublisherNames(
                publisher: target.publisher,
                serviceConfig: target.serviceConfig,
                hostResolver: hostResolver,
                logger: logger
            )
            return NameResolver(
                names: RPCAsyncSequence(wrapping: names),
                updateMode: .push,
                authority: target.authority
            )
        }

        /// Resolves with grpc-swift's DNS resolver: `getaddrinfo` on a dispatch queue of its own.
        static func getaddrinfo(host: String, port: Int) async throws -> [SocketAddress] {
            let resolver = NameResolvers.DNS().resolver(for: .dns(host: host, port: port))
            var iterator = resolver.names.makeAsyncIterator()
            guard let result = try await iterator.next() else { return [] }
            return result.endpoints.flatMap(\.addresses)
        }
    }
}
