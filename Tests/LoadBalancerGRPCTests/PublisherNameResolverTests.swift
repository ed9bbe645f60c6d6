import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LoadBalancer
import LoadBalancerTestKit
import Logging
import Synchronization
import Testing

@testable import LoadBalancerGRPC

/// A host-name resolver whose answers the test sets: a name maps to addresses, or fails.
final class ScriptedHostResolver: Sendable {
    private let answers = Mutex<[String: [SocketAddress]]>([:])
    struct NotFound: Error {}

    func set(_ host: String, _ addresses: [SocketAddress]?) {
        answers.withLock { $0[host] = addresses }
    }

    var resolve: NameResolvers.LoadBalancerPublisher.HostResolver {
        { host, _ in
            guard let addresses = self.answers.withLock({ $0[host] }) else { throw NotFound() }
            return addresses
        }
    }
}

/// The resolver a factory makes for `publisher`, and an iterator over its names.
func names(
    _ publisher: some InstancePublisher,
    hosts: ScriptedHostResolver = ScriptedHostResolver(),
    logger: Logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
) -> NameResolver {
    let factory = NameResolvers.LoadBalancerPublisher(hostResolver: hosts.resolve, logger: logger)
    return factory.resolver(for: .publisher(publisher))
}

/// The addresses of each endpoint of a result.
func addresses(_ result: NameResolutionResult?) -> [[SocketAddress]] {
    (result?.endpoints ?? []).map(\.addresses)
}

@Suite("Publisher name resolver", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct PublisherNameResolverTests {
    @Test("literal hosts become socket addresses, host names are resolved, one endpoint per instance in id order")
    func endpointsFromInstances() async throws {
        let hosts = ScriptedHostResolver()
        hosts.set("users.internal", [.ipv4(host: "10.1.1.1", port: 82), .ipv6(host: "fd00::9", port: 82)])
        let publisher = FixedPublisher([
            try Instance(parsing: "10.0.0.2:80"),
            try Instance(parsing: "[fd00::3]:81"),
            try Instance(parsing: "users.internal:82"),
            try Instance(parsing: "10.0.0.1:80"),
        ])
        let resolver = names(publisher, hosts: hosts)
        #expect(resolver.updateMode == .push)

        var iterator = resolver.names.makeAsyncIterator()
        let result = try await iterator.next()
        #expect(
            addresses(result) == [
                [.ipv4(host: "10.0.0.1", port: 80)],
                [.ipv4(host: "10.0.0.2", port: 80)],
                [.ipv6(host: "fd00::3", port: 81)],
                [.ipv4(host: "10.1.1.1", port: 82), .ipv6(host: "fd00::9", port: 82)],
            ]
        )
        let config = try #require(try result?.serviceConfig?.get())
        #expect(config.loadBalancingConfig == [.roundRobin])

        // The next snapshot is the next result.
        publisher.replace(with: [try Instance(parsing: "10.0.0.2:80")])
        #expect(addresses(try await iterator.next()) == [[.ipv4(host: "10.0.0.2", port: 80)]])
    }

    @Test("the service config is the target's: pick-first when chosen, none to defer to the transport's")
    func serviceConfigChoice() async throws {
        let publisher = FixedPublisher([try Instance(parsing: "10.0.0.1:80")])
        let factory = NameResolvers.LoadBalancerPublisher()
        let pickFirst = ServiceConfig(loadBalancingConfig: [.pickFirst(shuffleAddressList: true)])

        var iterator = factory.resolver(for: .publisher(publisher, serviceConfig: pickFirst)).names.makeAsyncIterator()
        #expect(try await iterator.next()?.serviceConfig == .success(pickFirst))

        var deferring = factory.resolver(for: .publisher(publisher, serviceConfig: nil)).names.makeAsyncIterator()
        let result = try await deferring.next()
        #expect(result != nil)
        #expect(result?.serviceConfig == nil)

        let withAuthority = factory.resolver(for: .publisher(publisher, authority: "users.example.com"))
        #expect(withAuthority.authority == "users.example.com")
    }

    @Test("a host name that stops resolving keeps its last addresses; one that never resolved is left out")
    func hostNameFailures() async throws {
        let hosts = ScriptedHostResolver()
        hosts.set("a.internal", [.ipv4(host: "10.2.0.1", port: 80)])
        let log = MessageLog()
        let publisher = FixedPublisher([try Instance(parsing: "a.internal:80"), try Instance(parsing: "b.internal:80")])
        var iterator = names(publisher, hosts: hosts, logger: log.logger).names.makeAsyncIterator()
        #expect(addresses(try await iterator.next()) == [[.ipv4(host: "10.2.0.1", port: 80)]])
        #expect(log.contains("its host name did not resolve"))

        // a.internal now fails, b.internal resolves: a keeps its last addresses.
        hosts.set("a.internal", nil)
        hosts.set("b.internal", [.ipv4(host: "10.2.0.2", port: 80)])
        publisher.replace(with: [
            try Instance(parsing: "a.internal:80"), try Instance(parsing: "b.internal:80"), try Instance(parsing: "10.0.0.9:80"),
        ])
        #expect(
            addresses(try await iterator.next()) == [
                [.ipv4(host: "10.0.0.9", port: 80)],
                [.ipv4(host: "10.2.0.1", port: 80)],
                [.ipv4(host: "10.2.0.2", port: 80)],
            ]
        )
        #expect(log.contains("keeping its last addresses"))
    }

    @Test("with host-name resolution off, instances with a DNS name are left out")
    func hostNamesOff() async throws {
        let publisher = FixedPublisher([try Instance(parsing: "localhost:80"), try Instance(parsing: "127.0.0.1:81")])
        let factory = NameResolvers.LoadBalancerPublisher(resolvesHostNames: false)
        var iterator = factory.resolver(for: .publisher(publisher)).names.makeAsyncIterator()
        #expect(addresses(try await iterator.next()) == [[.ipv4(host: "127.0.0.1", port: 81)]])
    }

    @Test("getaddrinfo resolves localhost")
    func getaddrinfoLocalhost() async throws {
        let addresses = try await NameResolvers.LoadBalancerPublisher.getaddrinfo(host: "localhost", port: 8080)
        #expect(
            addresses.contains(.ipv4(host: "127.0.0.1", port: 8080)) || addresses.contains(.ipv6(host: "::1", port: 8080)),
            "\(addresses)"
        )
    }

    @Test("a publisher error keeps the last good endpoints: no empty result, no throw, the next set follows")
    func errorKeepsEndpoints() async throws {
        let log = MessageLog()
        let publisher = FixedPublisher([try Instance(parsing: "10.0.0.1:80"), try Instance(parsing: "10.0.0.2:80")])
        var iterator = names(publisher, logger: log.logger).names.makeAsyncIterator()
        #expect(addresses(try await iterator.next()).count == 2)

        // The publisher changes while the resolver waits for its next snapshot.
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                publisher.fail(DiscoveryError(code: .registryUnavailable, message: "registry down"))
                try await eventually("the resolver has seen the error") {
                    log.contains("instance publisher reported an error")
                }
                publisher.replace(with: [try Instance(parsing: "10.0.0.3:80")])
            }
            #expect(addresses(try await iterator.next()) == [[.ipv4(host: "10.0.0.3", port: 80)]])
            try await group.waitForAll()
        }
    }

    @Test("once endpoints were given, an empty set is skipped (the channel keeps its endpoints) and the next set follows")
    func emptyAfterEndpoints() async throws {
        let log = MessageLog()
        let publisher = FixedPublisher([try Instance(parsing: "10.0.0.1:80")], staleness: .invalidate(after: .zero))
        var iterator = names(publisher, logger: log.logger).names.makeAsyncIterator()
        #expect(addresses(try await iterator.next()).count == 1)

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                publisher.replace(with: [])
                try await eventually("the resolver has seen the empty set") {
                    log.count(of: "the gRPC channel keeps its last ones") == 1
                }
                // A failure that drops the set (staleness policy) is skipped the same way.
                publisher.fail(DiscoveryError(code: .registryUnavailable, message: "registry down"))
                try await eventually("the resolver has seen the invalidating failure") {
                    log.count(of: "the gRPC channel keeps its last ones") == 2
                }
                publisher.replace(with: [try Instance(parsing: "10.0.0.2:80")])
            }
            #expect(addresses(try await iterator.next()) == [[.ipv4(host: "10.0.0.2", port: 80)]])
            try await group.waitForAll()
        }
    }

    /// A publisher state with nothing to connect to, and the code the resolver throws for it.
    struct NothingToConnectTo: Sendable, CustomTestStringConvertible {
        var name: String
        var instances: [String]
        var failure: DiscoveryError?
        var code: PublisherResolutionError.Code
        var testDescription: String { name }
    }

    @Test(
        "before any endpoints, nothing to connect to throws a typed error saying why",
        arguments: [
            NothingToConnectTo(name: "an empty set", instances: [], failure: nil, code: .noInstances),
            NothingToConnectTo(
                name: "an error and no set",
                instances: [],
                failure: DiscoveryError(code: .registryUnavailable, message: "registry down"),
                code: .discoveryFailed
            ),
            NothingToConnectTo(name: "only unresolvable names", instances: ["nowhere.internal:80"], failure: nil, code: .noUsableInstances),
        ]
    )
    func nothingToConnectTo(_ scenario: NothingToConnectTo) async throws {
        let publisher = FixedPublisher(try scenario.instances.map { try Instance(parsing: $0) })
        if let failure = scenario.failure { publisher.fail(failure) }
        var iterator = names(publisher).names.makeAsyncIterator()
        let error = await #expect(throws: PublisherResolutionError.self) { try await iterator.next() }
        #expect(error?.code == scenario.code)
        if scenario.failure != nil { #expect(error?.cause is DiscoveryError) }
    }

    @Test("a host with a colon that is not IPv6 is left out, not a crash")
    func invalidHost() async throws {
        let publisher = FixedPublisher([
            try Instance(host: "fd00::zz", port: 80), try Instance(host: "1:2:3:4:5:6:7:8:9", port: 80),
        ])
        var iterator = names(publisher).names.makeAsyncIterator()
        let error = await #expect(throws: PublisherResolutionError.self) { try await iterator.next() }
        #expect(error?.code == .noUsableInstances)
    }

    @Test(
        "host kinds",
        arguments: [
            ("10.0.0.7", HostKind.ipv4), ("255.255.255.255", .ipv4), ("0.0.0.0", .ipv4),
            ("256.1.1.1", .hostName), ("1.2.3", .hostName), ("01.2.3.4", .hostName), ("1.2.3.4.5", .hostName),
            ("users.internal", .hostName), ("localhost", .hostName),
            ("::1", .ipv6), ("::", .ipv6), ("fd00::3", .ipv6), ("1:2:3:4:5:6:7:8", .ipv6), ("1::", .ipv6),
            ("::ffff:10.0.0.7", .ipv6), ("fe80::1%eth0", .ipv6), ("1:2:3:4:5:6:1.2.3.4", .ipv6),
            ("1:2:3:4:5:6:7:8:9", .invalid), ("1::2::3", .invalid), (":::", .invalid), ("fd00::zz", .invalid),
            ("12345::1", .invalid), ("1:2:3:4:5:6:7", .invalid), ("fe80::1%", .invalid), ("::1.2.3", .invalid),
            ("1:2:3:4:5:6:7:1.2.3.4", .invalid), (":1", .invalid),
        ]
    )
    func hostKinds(_ host: String, _ kind: HostKind) {
        #expect(HostKind(host) == kind)
    }
}
