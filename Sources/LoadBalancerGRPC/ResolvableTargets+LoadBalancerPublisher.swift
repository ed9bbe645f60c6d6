import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LoadBalancer

extension ResolvableTargets {
    /// A gRPC target whose endpoints come from an `InstancePublisher`: one endpoint per instance,
    /// following every snapshot the publisher emits.
    ///
    /// Resolve it with `NameResolvers.LoadBalancerPublisher`, registered in the transport's
    /// `NameResolverRegistry`:
    ///
    /// ```swift
    /// var registry = NameResolverRegistry.defaults
    /// registry.registerFactory(NameResolvers.LoadBalancerPublisher())
    /// let transport = try HTTP2ClientTransport.Posix(
    ///     target: .publisher(publisher),
    ///     transportSecurity: .plaintext,
    ///     resolverRegistry: registry
    /// )
    /// ```
    ///
    /// The resolver only subscribes to the publisher's `updates()`. A publisher with a background
    /// loop (`DNSSRVPublisher`, `EtcdPublisher`, `ZooKeeperPublisher`, `ConsulPublisher`) must be
    /// run by you, for example in the same `ServiceGroup` as the gRPC client.
    public struct LoadBalancerPublisher: ResolvableTarget, Sendable {
        /// Where the instances come from.
        public var publisher: any InstancePublisher

        /// The service configuration the resolver hands the channel with every set of endpoints.
        ///
        /// It takes precedence over the `serviceConfig` given to the transport. The default,
        /// ``defaultServiceConfig``, balances round robin over all instances. Set
        /// `ServiceConfig(loadBalancingConfig: [.pickFirst(shuffleAddressList: true)])` for
        /// pick-first (every RPC of a client on one instance, each client on a random one), or
        /// `nil` to use the transport's `serviceConfig` instead (which, when not given, means
        /// pick-first).
        public var serviceConfig: ServiceConfig?

        /// The `:authority` (and TLS server name) the channel uses for every instance, or `nil` to
        /// derive it from each instance's address. Set it when the servers expect one name, such
        /// as the service's TLS certificate name. The transport's `config.http2.authority`, when
        /// set, takes precedence.
        public var authority: String?

        /// Round-robin load balancing: every RPC goes to the next ready instance, so traffic
        /// spreads over all of them.
        public static var defaultServiceConfig: ServiceConfig {
            ServiceConfig(loadBalancingConfig: [.roundRobin])
        }

        /// Creates a target.
        ///
        /// - Parameters:
        ///   - publisher: Where the instances come from. If it needs running, run it yourself.
        ///   - serviceConfig: The service configuration handed to the channel with each update;
        ///     default ``defaultServiceConfig`` (round robin); `nil` defers to the transport's.
        ///   - authority: The `:authority` for every instance; default `nil` (derived per address).
        public init(
            publisher: some InstancePublisher,
            serviceConfig: ServiceConfig? = Self.defaultServiceConfig,
            authority: String? = nil
        ) {
            self.publisher = publisher
            self.serviceConfig = serviceConfig
            self.authority = authority
        }
    }
}

extension ResolvableTarget where Self == ResolvableTargets.LoadBalancerPublisher {
    /// A target whose endpoints come from `publisher`, one per instance; see
    /// `ResolvableTargets.LoadBalancerPublisher`.
    ///
    /// - Parameters:
    ///   - publisher: Where the instances come from. If it needs running, run it yourself.
    ///   - serviceConfig: The service configuration handed to the channel with each update;
    ///     default round robin; `nil` defers to the transport's.
    ///   - authority: The `:authority` for every instance; default `nil` (derived per address).
    /// - Returns: The target, for `HTTP2ClientTransport.Posix(target:…)`.
    public static func publisher(
        _ publisher: some InstancePublisher,
        serviceConfig: ServiceConfig? = ResolvableTargets.LoadBalancerPublisher.defaultServiceConfig,
        authority: String? = nil
    ) -> Self {
        Self(publisher: publisher, serviceConfig: serviceConfig, authority: authority)
    }
}
