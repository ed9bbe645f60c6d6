import Logging
import ServiceLifecycle

/// Runs discovery, an endpoint cache and a balancer for the duration of `body`.
///
/// It starts the publisher's loop (when the publisher is a `Service`) and the cache's, waits until
/// the cache is ready (the registry has answered with a set: see ``EndpointCache/waitUntilReady()``),
/// calls `body` with the balancer, and when `body` returns or throws, stops discovery and closes
/// every endpoint before returning. While the registry is down it keeps waiting (the publisher
/// retries); cancelling the task ends the wait with `CancellationError`, without calling `body`.
///
/// ```swift
/// let response = try await withLoadBalancer(
///     publisher: StaticPublisher(["127.0.0.1:8080", "127.0.0.1:8081"]),
///     factory: .calling { instance, path in try await fetch(instance, path) },
///     balancer: { RoundRobinBalancer($0) }
/// ) { balancer in
///     try await balancer.call("/hello")
/// }
/// ```
///
/// For a long-running server, put the cache (and the publisher, if it is a `Service`) in your
/// `ServiceGroup` instead.
public func withLoadBalancer<Request: Sendable, Response: Sendable, B: Balancer, Result>(
    publisher: some InstancePublisher,
    factory: EndpointFactory<Request, Response>,
    balancer makeBalancer: (EndpointCache<Request, Response>) -> B,
    logger: Logger = Logger(label: "loadbalancer", factory: { _ in SwiftLogNoOpLogHandler() }),
    isolation: isolated (any Actor)? = #isolation,
    _ body: (B) async throws -> Result
) async throws -> Result where B.Request == Request, B.Response == Response {
    let cache = EndpointCache(publisher: publisher, factory: factory, logger: logger)
    let balancer = makeBalancer(cache)
    let service = publisher as? any Service
    return try await withThrowingTaskGroup(of: Void.self) { group in
        if let service {
            group.addTask { try await service.run() }
        }
        group.addTask { try await cache.run() }
        do {
            await cache.waitUntilReady()
            try Task.checkCancellation()
            let result = try await body(balancer)
            group.cancelAll()
            return result
        } catch {
            group.cancelAll()
            throw error
        }
    }
}
