import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LoadBalancer
import LoadBalancerGRPC
import LoadBalancerTestKit
import Synchronization
import Testing

/// Whether `error` or any error in its chain of causes is a `PublisherResolutionError`; that one.
func resolutionError(in error: any Error) -> PublisherResolutionError? {
    var current: (any Error)? = error
    for _ in 0..<8 {
        switch current {
        case let found as PublisherResolutionError:
            return found
        case let rpc as RPCError:
            current = rpc.cause
        case let runtime as RuntimeError:
            current = runtime.cause
        default:
            return nil
        }
    }
    return nil
}

@Suite("A grpc-swift client through the publisher resolver, against three servers", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct GRPCClientTests {
    @Test("round robin spreads 300 calls over all three servers, each at least 20%")
    func spreadsOverAll() async throws {
        try await withServers(3) { servers in
            let publisher = FixedPublisher(try await servers.asyncMap { try await $0.instance() })
            try await withClient(publisher) { client in
                // Connections open in parallel: wait until every server has answered once.
                try await eventually("every server has answered") {
                    _ = try await callCounts(client, 3)
                    return servers.allSatisfy { $0.calls.value > 0 }
                }
                let counts = try await callCounts(client, 300)
                for server in servers {
                    #expect(counts[server.name, default: 0] >= 60, "\(counts)")
                }
                #expect(counts.values.reduce(0, +) == 300)
            }
        }
    }

    @Test("a change of the set is followed: a removed server stops getting calls, an added one gets them")
    func followsChanges() async throws {
        try await withServers(3) { servers in
            let instances = try await servers.asyncMap { try await $0.instance() }
            let publisher = FixedPublisher(instances)
            try await withClient(publisher) { client in
                try await eventually("every server has answered") {
                    _ = try await callCounts(client, 3)
                    return servers.allSatisfy { $0.calls.value > 0 }
                }

                // Two servers left: calls stop reaching the removed one. A call racing the close of
                // the removed server's connection may fail with `unavailable` (grpc-swift does not
                // retry it unless the service config has a retry policy; see the next test); a few
                // such failures are allowed while the change is applied, none after.
                publisher.replace(with: [instances[0], instances[1]])
                var unavailable = 0
                try await eventually("calls no longer reach the removed server") {
                    let before = servers[2].calls.value
                    unavailable += try await callCountsAllowingUnavailable(client, 10).unavailable
                    return servers[2].calls.value == before
                }
                #expect(unavailable <= 3)
                let removedBefore = servers[2].calls.value
                let counts = try await callCounts(client, 60)
                #expect(servers[2].calls.value == removedBefore)
                #expect(counts[servers[0].name, default: 0] >= 15, "\(counts)")
                #expect(counts[servers[1].name, default: 0] >= 15, "\(counts)")

                // The third one back: it gets calls again, its fair share once connected.
                publisher.replace(with: instances)
                try await eventually("the re-added server answers again") {
                    _ = try await callCounts(client, 3)
                    return servers[2].calls.value > removedBefore
                }
                let again = try await callCounts(client, 90)
                for server in servers {
                    #expect(again[server.name, default: 0] >= 18, "\(again)")
                }
            }
        }
    }

    @Test("with a retry policy for unavailable in the service config, no call fails while servers are removed and added")
    func changesWithRetries() async throws {
        try await withServers(3) { servers in
            let instances = try await servers.asyncMap { try await $0.instance() }
            let publisher = FixedPublisher(instances)
            try await withClient(publisher, serviceConfig: roundRobinRetryingUnavailable) { client in
                try await eventually("every server has answered") {
                    _ = try await callCounts(client, 3)
                    return servers.allSatisfy { $0.calls.value > 0 }
                }
                // Calls run without a pause while the set changes under them, 30 times (without the
                // retry policy, some call fails with "Stream unexpectedly closed" in most runs).
                let result = try await callsWhileLastComesAndGoes(
                    publisher, instances: instances, callers: 1, callsToLast: { servers[2].calls.value },
                    call: { _ = try await who(client) }
                )
                #expect(result.calls > 0)
                #expect(result.failures.isEmpty, "\(result.failures.count) of \(result.calls) calls failed: \(result.failures.prefix(3))")
            }
        }
    }

    @Test("a publisher error keeps the endpoints: calls keep working, on all three servers")
    func errorKeepsEndpoints() async throws {
        try await withServers(3) { servers in
            let log = MessageLog()
            let publisher = FixedPublisher(try await servers.asyncMap { try await $0.instance() })
            try await withClient(publisher, logger: log.logger) { client in
                try await eventually("every server has answered") {
                    _ = try await callCounts(client, 3)
                    return servers.allSatisfy { $0.calls.value > 0 }
                }
                publisher.fail(DiscoveryError(code: .registryUnavailable, message: "registry unreachable"))
                try await eventually("the resolver has seen the error") {
                    log.contains("instance publisher reported an error")
                }
                let counts = try await callCounts(client, 90)
                #expect(counts.values.reduce(0, +) == 90)
                for server in servers {
                    #expect(counts[server.name, default: 0] >= 18, "\(counts)")
                }
            }
        }
    }

    @Test("an empty set fails calls with a clear error, not a hang; the first instance then serves")
    func emptySetFailsCalls() async throws {
        try await withServers(1) { servers in
            let publisher = FixedPublisher([])
            try await withClient(publisher) { client in
                // Long enough that a busy machine's slowness cannot pass for waiting it out.
                let timeout = Duration.seconds(60)
                let start = ContinuousClock.now
                let error = await #expect(throws: RPCError.self) { try await who(client, timeout: timeout) }
                let elapsed = ContinuousClock.now - start
                #expect(error?.code == .unavailable, "\(String(describing: error))")
                #expect(elapsed < timeout / 2, "the call waited \(elapsed)")
                let reason = error.flatMap { resolutionError(in: $0) }
                #expect(reason?.code == .noInstances, "\(String(describing: error))")

                publisher.replace(with: [try await servers[0].instance()])
                try await eventually("the first instance serves") {
                    (try? await who(client, timeout: .seconds(2))) == servers[0].name
                }
            }
        }
    }

    @Test("pick-first, when chosen, sends every call to one server")
    func pickFirst() async throws {
        try await withServers(3) { servers in
            let publisher = FixedPublisher(try await servers.asyncMap { try await $0.instance() })
            let config = ServiceConfig(loadBalancingConfig: [.pickFirst(shuffleAddressList: false)])
            try await withClient(publisher, serviceConfig: config) { client in
                let counts = try await callCounts(client, 30)
                #expect(counts.count == 1, "\(counts)")
                #expect(counts.values.first == 30)
            }
        }
    }

    @Test("an instance with a DNS host name is resolved (localhost) and served")
    func hostName() async throws {
        try await withServers(1) { servers in
            let publisher = FixedPublisher([try Instance(host: "localhost", port: try await servers[0].port())])
            try await withClient(publisher) { client in
                let answer = try await who(client)
                #expect(answer == servers[0].name)
                #expect(servers[0].calls.value == 1)
            }
        }
    }
}

/// A one-way flag shared between tasks.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
}

extension Array where Element: Sendable {
    /// `map` with an async transform, in order.
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        results.reserveCapacity(count)
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
