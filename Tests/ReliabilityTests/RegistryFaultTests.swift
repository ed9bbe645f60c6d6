import AsyncHTTPClient
import ConsulTestServer
import LoadBalancer
import LoadBalancerConsul
import LoadBalancerDNS
import LoadBalancerEtcd
import LoadBalancerHTTP
import LoadBalancerLocalBackends
import LoadBalancerTestKit
import LoadBalancerTestServers
import LoadBalancerZooKeeper
import Synchronization
import Testing

/// Load through a balancer fed by a registry while the registry fails (its leader dies, it is
/// restarted, it answers 500s): no request may fail because of it, and a backend registered after
/// the recovery must get traffic.
@Suite("Reliability: registry faults under load", .serialized, .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct RegistryFaultTests {
    /// What a test needs of a registry.
    struct Registry: Sendable {
        var publisher: any InstancePublisher
        var services: [@Sendable () async -> Void]
        /// Registers backend `i` (retried by the caller until it succeeds).
        var register: @Sendable (Int, Instance) async throws -> Void
        /// Makes the registry fail and come back: a cluster's leader is killed, a new one elected
        /// and the old one restarted; a single server is killed or answers 500s until the
        /// publisher has seen it fail, then restarts.
        var fault: @Sendable () async throws -> Void
    }

    /// Runs at least 4,000 requests through `registry`'s set of three backends; after 1,000 the
    /// registry fails, then a fourth backend is registered; the load goes on until it has served.
    func run(_ name: String, _ makeRegistry: () async throws -> Registry) async throws {
        var started: [LocalHTTPBackend] = []
        for i in 0..<4 { started.append(try await LocalHTTPBackend.start(.init(latency: .milliseconds(1), seed: UInt64(i + 1)))) }
        let backends = started
        let instances = try backends.map { try Instance(host: "127.0.0.1", port: $0.port) }
        let registry = try await makeRegistry()

        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPEndpointFactory.clientConfiguration())
        let cache = EndpointCache(publisher: registry.publisher, factory: HTTPEndpointFactory.make(client: client))
        let retry = Retry(RoundRobinBalancer(cache), maxAttempts: 3, timeout: .seconds(5))
        let outcomes = Outcomes()
        let tickets = Tickets()
        let total = 4_000
        let faultDone = Flag()
        let phase = Phase()

        do {
            // A run that has not ended within the bound fails with where it stood, instead of
            // waiting for the suite's time limit (a hang then says which step and which calls).
            try await phase.bounded(
                by: TestTimeScale.scaled(.seconds(150)),
                describing: {
                    let result = outcomes.snapshot
                    return "\(result.succeeded) succeeded, \(result.failed) failed, \(cache.snapshot.count) in the set"
                }
            ) {
                try await withRunning(registry.services + [{ try? await cache.run() }]) {
                    for i in 0..<3 {
                        phase.enter("registering backend \(i)")
                        try await registry.register(i, instances[i])
                    }
                    phase.enter("waiting for three backends in the set")
                    try await eventually("three backends in the set") { cache.snapshot.count == 3 }
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for _ in 0..<8 {
                            group.addTask {
                                // At least `total` requests, and on until the fault is handled.
                                while !Task.isCancelled {
                                    let n = tickets.take()
                                    guard n < total || !faultDone.isSet else { return }
                                    await phase.tracking { await outcomes.measure { _ = try await retry(HTTPCall(path: "/")) } }
                                }
                            }
                        }
                        group.addTask {
                            phase.enter("load before the fault")
                            // Bounded generously: beside the other suites on two cores the load starts slowly.
                            try await eventually("a quarter of the load", timeout: .seconds(60)) {
                                outcomes.snapshot.succeeded + outcomes.snapshot.failed >= total / 4
                            }
                            let faultStart = ContinuousClock.now
                            phase.enter("the fault")
                            try await registry.fault()
                            let faultSeen = ContinuousClock.now
                            phase.enter("registering the fourth backend")
                            try await eventually("registered after the recovery", timeout: .seconds(60)) {
                                (try? await registry.register(3, instances[3])) != nil
                            }
                            let registered = ContinuousClock.now
                            phase.enter("waiting for the fourth backend in the set")
                            try await eventually("the fourth backend in the set", timeout: .seconds(60)) { cache.snapshot.count == 4 }
                            let inSet = ContinuousClock.now
                            // Give the new backend some of the remaining load.
                            phase.enter("waiting for the fourth backend to serve")
                            try await eventually("the fourth backend served", timeout: .seconds(60)) { backends[3].served.total > 0 }
                            print(
                                "registry fault (\(name)): fault \(faultSeen - faultStart), registered \(registered - faultSeen) later, in the set \(inSet - registered) after that"
                            )
                            faultDone.set()
                            phase.enter("the load's last calls")
                        }
                        // Not `waitForAll()`: it waits for every task before rethrowing, and the load runs
                        // until the fault task is done, so a fault task that failed left it running for ever.
                        // The first error ends the group, which cancels the load.
                        for try await _ in group {}
                    }
                    phase.enter("stopping the registry's services")
                }
            }
        } catch {
            for backend in backends { await backend.kill() }
            try? await client.shutdown()
            throw error
        }
        let result = outcomes.snapshot
        print(
            "registry fault (\(name)): \(result.succeeded) succeeded, \(result.failed) failed, longest \(result.longest), fourth backend served \(backends[3].served.total)"
        )
        #expect(result.failed == 0, "\(result.failed) requests failed: \(result.errors)")
        #expect(backends[3].served.total > 0)
        for backend in backends { await backend.kill() }
        try await client.shutdown()
    }

    @Test("etcd, 3 members: the leader killed under load, then restarted", .enabled(if: EtcdCluster.enabled))
    func etcdLeader() async throws {
        let cluster = try await EtcdCluster.start(size: 3)
        try await run("etcd") {
            var configuration = cluster.configuration
            configuration.requestTimeout = .seconds(2)
            let client = try EtcdClient(configuration: configuration)
            let publisher = EtcdPublisher(prefix: "/svc/", client: client)
            return Registry(
                publisher: publisher,
                services: [{ try? await client.run() }, { try? await publisher.run() }],
                register: { i, instance in try await client.put("/svc/\(i)", value: instance.registryJSON) },
                fault: {
                    // The leader dies; the other two elect a new one; the old one comes back (the
                    // election bounded at 60 s, as the ZooKeeper one is, for a loaded machine).
                    let leader = try await cluster.leader()
                    await cluster.kill(leader)
                    _ = try await cluster.leader(timeout: .seconds(60))
                    try await cluster.restart(leader)
                }
            )
        }
        cluster.destroy()
    }

    @Test("ZooKeeper, 3 servers: the leader killed under load, then restarted", .enabled(if: ZooKeeperEnsemble.enabled))
    func zooKeeperLeader() async throws {
        let ensemble = try await ZooKeeperEnsemble.start(size: 3)
        try await run("ZooKeeper") {
            let client = ZooKeeperClient(configuration: ensemble.configuration())
            let publisher = ZooKeeperPublisher(path: "/svc", client: client)
            let writer = ZooKeeperClient(configuration: ensemble.configuration())
            return Registry(
                publisher: publisher,
                services: [{ try? await client.run() }, { try? await publisher.run() }, { try? await writer.run() }],
                register: { i, instance in
                    try await eventually("writer connected") { writer.isConnected }
                    do {
                        try await writer.create("/svc/\(i)", data: Array(instance.registryJSON.utf8), createParents: true)
                    } catch let error as ZooKeeperError where error.code == .nodeExists {
                        // Created by an earlier try whose reply was lost.
                    }
                },
                fault: {
                    // The leader dies; the other two elect a new one; the old one comes back. Beside
                    // the other suites on two cores an election can take longer than 20 s: 60 s.
                    let leader = try await ensemble.leader()
                    await ensemble.kill(leader)
                    _ = try await ensemble.leader(timeout: .seconds(60))
                    try await ensemble.restart(leader)
                }
            )
        }
        ensemble.destroy()
    }

    @Test("dnsmasq: killed under load, restarted with a fourth SRV record", .enabled(if: DnsmasqEnvironment.enabled))
    func dnsmasqRestart() async throws {
        let server = try await Dnsmasq.start([])
        try await run("dnsmasq") {
            let client = DNSClient(configuration: .nameserver(server.nameserver, timeout: .milliseconds(300), attempts: 1))
            // dnsmasq serves its records with a TTL of 1 s (`--local-ttl=1`).
            var refresh = DNSRefresh.ttl(minimum: .milliseconds(200), maximum: .seconds(1))
            refresh.retryAfterFailure = .milliseconds(200)
            let publisher = DNSSRVPublisher(name: "_http._tcp.svc.test", client: client, refresh: refresh)
            let recorder = Recorder()
            let registered = Mutex<[Int: Instance]>([:])
            return Registry(
                publisher: publisher,
                services: [{ try? await publisher.run() }, recorder.recording(publisher)],
                register: { i, instance in
                    let records = registered.withLock { registered in
                        registered[i] = instance
                        return registered.sorted { $0.key < $1.key }.flatMap { key, instance in
                            [
                                "srv-host=_http._tcp.svc.test,b\(key).svc.test,\(instance.port),1,1",
                                "host-record=b\(key).svc.test,\(instance.host)",
                            ]
                        }
                    }
                    // dnsmasq reads SRV records only when it starts.
                    try await server.launch(records)
                },
                fault: {
                    await server.stop()
                    // Down (the load going on) until a lookup has failed; the caller then restarts it.
                    try await eventually("the publisher saw dnsmasq down") { recorder.latest?.error != nil }
                }
            )
        }
        await server.stop()
    }

    @Test("Consul test server: 500s under load, then stopped and restarted", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
    func consulFaults() async throws {
        let server = try await ConsulTestServer.start()
        try await run("Consul") {
            let client = ConsulClient(configuration: .init(host: "127.0.0.1", port: server.port, requestTimeout: .seconds(2)))
            let publisher = ConsulPublisher(
                service: "web",
                client: client,
                // A short wait: a query held when the faults begin ends soon (they apply to new requests).
                configuration: .init(
                    wait: .seconds(2), rateLimit: .init(requestsPerSecond: 50, burst: 10),
                    backoff: Backoff(base: .milliseconds(100), cap: .milliseconds(800)))
            )
            let recorder = Recorder()
            return Registry(
                publisher: publisher,
                services: [{ try? await publisher.run() }, recorder.recording(publisher)],
                register: { i, instance in
                    server.addService(id: "web-\(i)", name: "web", address: instance.host, port: instance.port)
                },
                fault: {
                    // Every health query answered 500: the publisher reports it and backs off.
                    let before = server.requestCount(.health)
                    server.setFault(.status(500), for: .health)
                    try await eventually("the publisher saw the 500s") { recorder.latest?.error != nil }
                    try await eventually("three 500s answered") { server.requestCount(.health) >= before + 3 }
                    // Then the agent goes away and comes back on the same port, catalog kept.
                    await server.stop()
                    server.setFault(nil, for: .health)
                    try await server.restart()
                    try await eventually("the publisher recovered") { recorder.latest.map { $0.error == nil } ?? false }
                }
            )
        }
        await server.stop()
    }
}

/// Where a run stands, and the calls in flight, for the message of a run that did not end.
final class Phase: Sendable {
    private let state = Mutex((name: "starting", since: ContinuousClock.now, inFlight: [Int: ContinuousClock.Instant](), next: 0))

    func enter(_ name: String) {
        state.withLock {
            $0.name = name
            $0.since = .now
        }
    }

    /// Runs one call, keeping its start among the calls in flight until it ends.
    func tracking(_ call: () async -> Void) async {
        let id = state.withLock { state in
            defer { state.next += 1 }
            state.inFlight[state.next] = .now
            return state.next
        }
        await call()
        _ = state.withLock { $0.inFlight.removeValue(forKey: id) }
    }

    var description: String {
        state.withLock { state in
            let now = ContinuousClock.now
            let oldest = state.inFlight.values.min().map { ", the oldest for \(now - $0)" } ?? ""
            return "at '\(state.name)' for \(now - state.since); \(state.inFlight.count) calls in flight\(oldest)"
        }
    }

    /// Runs `body`; past `bound`, cancels it and throws an error saying where it stood.
    func bounded(
        by bound: Duration, describing details: @escaping @Sendable () -> String, _ body: @escaping @Sendable () async throws -> Void
    ) async throws {
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await body()
                return true
            }
            group.addTask {
                try await Task.sleep(for: bound)
                return false
            }
            defer { group.cancelAll() }
            guard try await group.next() == true else {
                let message = "the run did not end within \(bound): \(self.description); \(details())"
                print("registry fault: \(message)")
                throw ClusterError(message)
            }
        }
    }
}

/// A flag set once.
final class Flag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}
