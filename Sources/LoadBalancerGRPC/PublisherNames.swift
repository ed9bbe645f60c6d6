import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LoadBalancer
import Logging
import Synchronization

/// The names of a `NameResolvers.LoadBalancerPublisher` resolver: each iteration subscribes to
/// the publisher and turns its snapshots into name resolution results.
struct PublisherNames: AsyncSequence, Sendable {
    typealias Element = NameResolutionResult
    typealias Failure = any Error

    /// What the resolver's subscriptions share: whether the channel has had endpoints, and the
    /// addresses last resolved for each host name.
    final class Shared: Sendable {
        private struct State {
            var delivered = false
            var addresses: [String: [SocketAddress]] = [:]
        }
        private let state = Mutex(State())

        /// Whether any subscription has given the channel a non-empty set of endpoints.
        var delivered: Bool { state.withLock { $0.delivered } }
        func markDelivered() { state.withLock { $0.delivered = true } }

        func addresses(for hostPort: String) -> [SocketAddress]? { state.withLock { $0.addresses[hostPort] } }
        func remember(_ addresses: [SocketAddress], for hostPort: String) {
            state.withLock { $0.addresses[hostPort] = addresses }
        }
        /// Forgets the names no longer in the set, so the cache does not grow without bound.
        func keepOnly(_ hostPorts: Set<String>) {
            state.withLock { state in state.addresses = state.addresses.filter { hostPorts.contains($0.key) } }
        }
    }

    let publisher: any InstancePublisher
    let serviceConfig: ServiceConfig?
    let hostResolver: NameResolvers.LoadBalancerPublisher.HostResolver?
    let logger: Logger
    let shared = Shared()

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(names: self, updates: publisher.updates().makeAsyncIterator())
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        typealias Element = NameResolutionResult
        typealias Failure = any Error

        let names: PublisherNames
        var updates: InstanceUpdates.AsyncIterator
        /// The endpoints this subscription last handed over, not to send the same set twice.
        var last: [GRPCEndpoint]?

        mutating func next() async throws -> NameResolutionResult? {
            while true {
                guard let update = await updates.next() else {
                    // The subscription ended: by cancellation (the channel is closing), or because
                    // the publisher finished (the channel subscribes again after its backoff).
                    try Task.checkCancellation()
                    names.logger.debug("instance publisher finished; the gRPC channel will subscribe again")
                    return nil
                }
                let (endpoints, lastError) = await names.endpoints(for: update.instances)
                try Task.checkCancellation()

                guard !endpoints.isEmpty else {
                    let error = PublisherNames.emptyError(update: update, resolutionError: lastError)
                    if names.shared.delivered {
                        names.logger.warning(
                            "no endpoints from the instance publisher; the gRPC channel keeps its last ones",
                            metadata: ["loadbalancer.grpc.reason": "\(error)"]
                        )
                        continue
                    }
                    names.logger.warning(
                        "no endpoints from the instance publisher; waiting RPCs fail",
                        metadata: ["loadbalancer.grpc.reason": "\(error)"]
                    )
                    throw error
                }
                if let error = update.error {
                    names.logger.warning(
                        "instance publisher reported an error; keeping its last good set",
                        metadata: ["loadbalancer.grpc.error": "\(error)", "loadbalancer.grpc.endpoints": "\(endpoints.count)"]
                    )
                }
                if endpoints == last { continue }
                last = endpoints
                names.shared.markDelivered()
                names.logger.debug(
                    "instance set updated",
                    metadata: ["loadbalancer.grpc.instances": "\(update.instances.map(\.id))"]
                )
                return NameResolutionResult(endpoints: endpoints, serviceConfig: names.serviceConfig.map { .success($0) })
            }
        }
    }

    /// The error for an update that gave no endpoints.
    static func emptyError(update: InstanceUpdate, resolutionError: (any Error)?) -> PublisherResolutionError {
        if !update.instances.isEmpty {
            return PublisherResolutionError(
                code: .noUsableInstances,
                message:
                    "none of the \(update.instances.count) instances has a usable address: \(update.instances.map(\.hostPort).joined(separator: ", "))",
                cause: resolutionError
            )
        }
        if let error = update.error {
            return PublisherResolutionError(
                code: .discoveryFailed,
                message: "service discovery failed and there is no last good set of instances",
                cause: error
            )
        }
        return PublisherResolutionError(code: .noInstances, message: "the instance publisher's set is empty")
    }

    /// One endpoint per instance that has addresses, in the instances' order, without duplicates;
    /// and the last host-name resolution error, if any.
    func endpoints(for instances: [Instance]) async -> ([GRPCEndpoint], (any Error)?) {
        var endpoints: [GRPCEndpoint] = []
        var seen = Set<GRPCEndpoint>()
        var lastError: (any Error)?
        var hostNames = Set<String>()
        for instance in instances {
            let addresses: [SocketAddress]
            switch HostKind(instance.host) {
            case .ipv4:
                addresses = [.ipv4(host: instance.host, port: instance.port)]
            case .ipv6:
                addresses = [.ipv6(host: instance.host, port: instance.port)]
            case .invalid:
                logger.warning(
                    "instance skipped: its host is not a valid address",
                    metadata: ["loadbalancer.grpc.instance": "\(instance.id)", "loadbalancer.grpc.host": "\(instance.host)"]
                )
                continue
            case .hostName:
                hostNames.insert(instance.hostPort)
                guard let resolved = await resolve(instance, lastError: &lastError) else { continue }
                addresses = resolved
            }
            let endpoint = GRPCEndpoint(addresses: addresses)
            if seen.insert(endpoint).inserted {
                endpoints.append(endpoint)
            } else {
                logger.debug(
                    "instance skipped: same addresses as another instance",
                    metadata: ["loadbalancer.grpc.instance": "\(instance.id)"]
                )
            }
        }
        shared.keepOnly(hostNames)
        return (endpoints, lastError)
    }

    /// The addresses of an instance whose host is a DNS name: freshly resolved, or the last ones
    /// when resolving fails; `nil` (logged) when there are none.
    private func resolve(_ instance: Instance, lastError: inout (any Error)?) async -> [SocketAddress]? {
        guard let hostResolver else {
            logger.warning(
                "instance skipped: its host is a DNS name and host-name resolution is off",
                metadata: ["loadbalancer.grpc.instance": "\(instance.id)"]
            )
            return nil
        }
        do {
            let addresses = try await hostResolver(instance.host, instance.port)
            if !addresses.isEmpty {
                shared.remember(addresses, for: instance.hostPort)
                return addresses
            }
            lastError = PublisherResolutionError(code: .noUsableInstances, message: "\(instance.host) has no addresses")
        } catch {
            lastError = error
        }
        if let previous = shared.addresses(for: instance.hostPort) {
            logger.warning(
                "host name did not resolve; keeping its last addresses",
                metadata: ["loadbalancer.grpc.instance": "\(instance.id)", "loadbalancer.grpc.error": "\(lastError.map { "\($0)" } ?? "")"]
            )
            return previous
        }
        logger.warning(
            "instance skipped: its host name did not resolve",
            metadata: ["loadbalancer.grpc.instance": "\(instance.id)", "loadbalancer.grpc.error": "\(lastError.map { "\($0)" } ?? "")"]
        )
        return nil
    }
}

/// grpc-swift's endpoint (a group of equivalent addresses), not this library's `Endpoint`.
typealias GRPCEndpoint = GRPCNIOTransportHTTP2Posix.Endpoint
