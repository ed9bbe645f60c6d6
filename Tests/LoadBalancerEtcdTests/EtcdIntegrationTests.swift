import LoadBalancer
import LoadBalancerEtcd
import LoadBalancerTestKit
import LoadBalancerTestServers
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// The ids of closed endpoints, in order.
final class ClosedEndpoints: Sendable {
    private let closed = Mutex<[String]>([])
    var ids: [String] { closed.withLock { $0 } }
    func add(_ id: String) { closed.withLock { $0.append(id) } }
}

/// A log handler that keeps messages, to see which path the publisher took.
final class MessageLog: Sendable {
    private let messages = Mutex<[String]>([])
    var all: [String] { messages.withLock { $0 } }
    func append(_ message: String) { messages.withLock { $0.append(message) } }

    var logger: Logger {
        Logger(label: "test") { _ in Handler(log: self) }
    }

    struct Handler: LogHandler {
        let log: MessageLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) { log.append(event.message.description) }
    }
}

/// Runs `body` with `client` running, and `services` beside it; cancels everything when `body` returns.
@discardableResult
func withRunning<T: Sendable>(
    _ client: EtcdClient,
    _ services: [@Sendable () async -> Void] = [],
    _ body: () async throws -> T
) async throws -> T {
    try await withRunning([{ try? await client.run() }] + services, body)
}

/// Reads `publisher`'s updates into `recorder` until cancelled.
func recording(_ publisher: EtcdPublisher, into recorder: Recorder) -> @Sendable () async -> Void {
    recorder.recording(publisher)
}

@Suite(
    "etcd against real etcd servers", .enabled(if: EtcdCluster.enabled), .serialized, .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes))
)
struct EtcdIntegrationTests {
    @Test("puts and deletes propagate; a bad value is skipped; JSON carries weight and priority")
    func putsAndDeletes() async throws {
        let cluster = try await EtcdCluster.start()
        let client = try EtcdClient(configuration: cluster.configuration)
        let log = MessageLog()
        let publisher = EtcdPublisher(prefix: "/svc/api/", client: client, logger: log.logger)
        let recorder = Recorder()
        try await withRunning(client, [{ try? await publisher.run() }, recording(publisher, into: recorder)]) {
            try await client.put("/svc/api/a", value: "127.0.0.1:8001")
            try await client.put("/svc/other/x", value: "127.0.0.1:9999")
            try await eventually(".a listed") { recorder.ids == ["127.0.0.1:8001"] }

            try await client.put("/svc/api/b", value: #"{"host":"127.0.0.2","port":8002,"weight":3,"priority":1,"metadata":{"zone":"z1"}}"#)
            try await client.put("/svc/api/bad", value: "not an instance")
            try await eventually("b added") { recorder.ids == ["127.0.0.1:8001", "127.0.0.2:8002"] }
            let b = try #require(recorder.latest?.instances.last)
            #expect(b.weight == 3 && b.priority == 1 && b.metadata == ["zone": "z1"])
            #expect(log.all.contains { $0.contains("not an instance") }, "the bad value is logged")
            try await eventually("the bad value reported in band") { recorder.latest?.error?.code == .invalidInstances }
            #expect(recorder.latest?.error?.message.contains("/svc/api/bad") == true)
            #expect(recorder.ids == ["127.0.0.1:8001", "127.0.0.2:8002"])

            try await client.delete("/svc/api/a")
            try await eventually("a deleted") { recorder.ids == ["127.0.0.2:8002"] }
            try await client.put("/svc/api/b", value: "127.0.0.3:8003")
            try await eventually("b changed") { recorder.ids == ["127.0.0.3:8003"] }
            try await client.delete("/svc/api/bad")
            try await eventually("no error once the bad value is gone") { recorder.latest?.error == nil }
            // A loaded machine may stall the server long enough for a reconnection (an error in
            // band); what must hold is that the set never emptied and ends current, without error.
            #expect(recorder.neverEmptiedOnceFilled)
            #expect(recorder.ids == ["127.0.0.3:8003"])
        }
    }

    @Test("watch events reach the cache as what changed (added, changed, removed), applied without comparing whole sets")
    func changeHints() async throws {
        let cluster = try await EtcdCluster.start()
        let client = try EtcdClient(configuration: cluster.configuration)
        let publisher = EtcdPublisher(prefix: "/svc/hinted/", client: client)
        let recorder = Recorder()
        let cache = EndpointCache<Int, String>(
            publisher: publisher,
            factory: EndpointFactory { instance in ManagedEndpoint(Endpoint(instance: instance) { _ in instance.id }) })
        try await withRunning(client, [{ try? await publisher.run() }, recording(publisher, into: recorder), { try? await cache.run() }]) {
            for port in 8001...8005 {
                try await client.put("/svc/hinted/\(port)", value: "127.0.0.1:\(port)")
            }
            try await eventually("five instances") { cache.snapshot.instances.count == 5 }
            let applied = cache.updatesAppliedByHint
            func lastUpdate(where matches: (InstanceUpdate) -> Bool) -> InstanceUpdate? { recorder.all.last(where: matches) }

            try await client.put("/svc/hinted/8006", value: "127.0.0.1:8006")
            try await eventually("added") { cache.snapshot.instances.contains { $0.id == "127.0.0.1:8006" } }
            let added = try #require(lastUpdate { $0.instances.count == 6 })
            #expect(added.changes?.upserted.map(\.id) == ["127.0.0.1:8006"])
            #expect(added.changes?.removed == [])
            #expect(added.changes?.base != nil && added.changes?.base != added.serial)

            try await client.put("/svc/hinted/8002", value: #"{"host":"127.0.0.1","port":8002,"weight":3}"#)
            try await eventually("changed") { cache.snapshot.instances.first { $0.id == "127.0.0.1:8002" }?.weight == 3 }
            let changed = try #require(lastUpdate { $0.instances.first { $0.id == "127.0.0.1:8002" }?.weight == 3 })
            #expect(changed.changes?.upserted.map(\.weight) == [3])
            #expect(changed.changes?.removed == [])
            #expect(changed.changes?.base == added.serial)

            try await client.delete("/svc/hinted/8001")
            try await eventually("removed") { !cache.snapshot.instances.contains { $0.id == "127.0.0.1:8001" } }
            let removed = try #require(lastUpdate { !$0.instances.contains { $0.id == "127.0.0.1:8001" } })
            #expect(removed.changes?.removed == ["127.0.0.1:8001"])
            #expect(removed.changes?.upserted == [])

            // Two keys naming one instance: the smaller key's is in the set; when it goes, the
            // other key's takes its place (a change of fields, not a removal).
            try await client.put("/svc/hinted/9003", value: #"{"host":"127.0.0.1","port":8003,"weight":2}"#)
            try await client.delete("/svc/hinted/8003")
            try await eventually("the other key's instance") {
                cache.snapshot.instances.first { $0.id == "127.0.0.1:8003" }?.weight == 2
            }
            let replaced = try #require(lastUpdate { $0.instances.first { $0.id == "127.0.0.1:8003" }?.weight == 2 })
            #expect(replaced.changes?.upserted.map(\.id) == ["127.0.0.1:8003"])
            #expect(replaced.changes?.removed == [])

            #expect(cache.updatesAppliedByHint >= applied + 4, "each change applied by what changed")
            #expect(cache.snapshot.instances == recorder.latest?.instances)
            #expect(cache.snapshot.endpoints.map(\.id) == recorder.latest?.instances.map(\.id))
        }
    }

    @Test("etcd down: the last good set stays, with the error in band; after a restart, changes flow again")
    func outageKeepsTheSet() async throws {
        let cluster = try await EtcdCluster.start()
        let member = cluster.members[0]
        let client = try EtcdClient(configuration: cluster.configuration)
        let publisher = EtcdPublisher(prefix: "/svc/", client: client, backoff: Backoff(base: .milliseconds(50), cap: .milliseconds(200)))
        let recorder = Recorder()
        try await withRunning(client, [{ try? await publisher.run() }, recording(publisher, into: recorder)]) {
            try await client.put("/svc/a", value: "127.0.0.1:8001")
            try await eventually("a listed") { recorder.ids == ["127.0.0.1:8001"] }
            await cluster.kill(member)
            try await eventually("the failure is reported") { recorder.latest?.error != nil }
            #expect(recorder.ids == ["127.0.0.1:8001"], "a registry failure never empties a good set")
            try await cluster.restart(member)
            try await client.put("/svc/b", value: "127.0.0.1:8002")
            try await eventually("b after the restart") {
                recorder.ids == ["127.0.0.1:8001", "127.0.0.1:8002"] && recorder.latest?.error == nil
            }
            #expect(recorder.neverEmptiedOnceFilled)
        }
    }

    @Test("a compaction past the watcher's revision leads to a new list, and no change is lost")
    func compactionRelists() async throws {
        let cluster = try await EtcdCluster.start()
        // The publisher reaches etcd through a relay the test cuts: while it is cut, the store
        // changes and is compacted past the publisher's revision.
        let proxy = try await TCPProxy.start(upstreamPort: cluster.members[0].clientPort)
        let writer = try EtcdClient(configuration: cluster.configuration)
        let client = try EtcdClient(configuration: EtcdConfiguration(members: [.init(host: "127.0.0.1", port: proxy.port)]))
        let log = MessageLog()
        let publisher = EtcdPublisher(
            prefix: "/svc/", client: client, backoff: Backoff(base: .milliseconds(50), cap: .milliseconds(200)), logger: log.logger
        )
        let recorder = Recorder()
        try await withRunning(writer, [{ try? await client.run() }, { try? await publisher.run() }, recording(publisher, into: recorder)]) {
            try await writer.put("/svc/a", value: "127.0.0.1:8001")
            try await writer.put("/svc/b", value: "127.0.0.1:8002")
            try await eventually("a and b listed") { recorder.ids == ["127.0.0.1:8001", "127.0.0.1:8002"] }

            proxy.cut()
            try await eventually("the failure is reported") { recorder.latest?.error != nil }
            try await writer.delete("/svc/a")
            try await writer.put("/svc/c", value: "127.0.0.1:8003")
            let revision = try await writer.put("/svc/d", value: "127.0.0.1:8004")
            try await writer.compact(revision: revision)
            #expect(recorder.ids == ["127.0.0.1:8001", "127.0.0.1:8002"], "nothing seen while cut off")
            proxy.restore()

            try await eventually("the changes made while cut off") {
                recorder.ids == ["127.0.0.1:8002", "127.0.0.1:8003", "127.0.0.1:8004"] && recorder.latest?.error == nil
            }
            #expect(log.all.contains { $0.contains("compacted past the watched revision") }, "\(log.all)")
            #expect(recorder.neverEmptiedOnceFilled)
        }
        try await proxy.stop()
    }

    @Test("3 members: killing the leader mid-watch keeps the set, and later changes arrive through another member")
    func leaderFailover() async throws {
        let cluster = try await EtcdCluster.start(size: 3)
        let leader = try await cluster.leader()
        // Point the client at the leader first, so the watch runs on the member that dies.
        var configuration = cluster.configuration
        configuration.members.sort { a, _ in a.port == leader.clientPort }
        configuration.requestTimeout = .seconds(2)
        let client = try EtcdClient(configuration: configuration)
        let publisher = EtcdPublisher(prefix: "/svc/", client: client, backoff: Backoff(base: .milliseconds(50), cap: .milliseconds(500)))
        let recorder = Recorder()
        try await withRunning(client, [{ try? await publisher.run() }, recording(publisher, into: recorder)]) {
            try await client.put("/svc/a", value: "127.0.0.1:8001")
            try await eventually("a listed") { recorder.ids == ["127.0.0.1:8001"] }
            #expect(client.preferredMember.port == leader.clientPort)

            await cluster.kill(leader)
            let newLeader = try await cluster.leader()
            #expect(newLeader.name != leader.name)
            try await client.put("/svc/b", value: "127.0.0.1:8002")
            try await eventually("b through another member") { recorder.ids == ["127.0.0.1:8001", "127.0.0.1:8002"] }
            #expect(client.preferredMember.port != leader.clientPort)
            #expect(recorder.neverEmptiedOnceFilled, "the set was never emptied")
            try await client.delete("/svc/a")
            try await eventually("a deleted") { recorder.ids == ["127.0.0.1:8002"] }
        }
    }

    @Test("a registrar registers, keeps its lease past several TTLs, and deregisters on shutdown")
    func registrarLifecycle() async throws {
        let cluster = try await EtcdCluster.start()
        let client = try EtcdClient(configuration: cluster.configuration)
        let publisher = EtcdPublisher(prefix: "/svc/", client: client)
        let recorder = Recorder()
        let instance = try Instance(host: "127.0.0.9", port: 9009, weight: 2)
        // A 3 s TTL (keep-alives every second), stretched under a sanitizer (TestTimeScale). With 1 s,
        // keep-alives came too late under AddressSanitizer, and once in a full run on a loaded machine
        // (etcd grants at least its minimum TTL, about 1.5 s with the default election timeout, anyway).
        let ttl = TestTimeScale.scaled(.seconds(3))
        let registrar = EtcdRegistrar(instance: instance, prefix: "/svc/", client: client, ttl: ttl)
        try await withRunning(client, [{ try? await publisher.run() }, recording(publisher, into: recorder)]) {
            let registration = Task { try? await registrar.run() }
            try await eventually("registered") { recorder.latest?.instances == [instance] }
            // Three TTLs later it is still there: the keep-alive works.
            let kept = ContinuousClock.now + ttl * 3
            while ContinuousClock.now < kept {
                #expect(recorder.latest?.instances == [instance])
                try await Task.sleep(for: .milliseconds(100))
            }
            let value = try await client.get("/svc/" + instance.id)
            #expect(value.keyValues.first?.lease == registrar.currentLease)
            registration.cancel()
            await registration.value
            try await eventually("deregistered at once", timeout: .seconds(2)) { recorder.ids.isEmpty }
        }
    }

    @Test("a registrar whose process stops talking disappears when its lease expires")
    func registrarCrash() async throws {
        let cluster = try await EtcdCluster.start()
        let watcher = try EtcdClient(configuration: cluster.configuration)
        let publisher = EtcdPublisher(prefix: "/svc/", client: watcher)
        let recorder = Recorder()
        let instance = try Instance(host: "127.0.0.9", port: 9010)
        try await withRunning(watcher, [{ try? await publisher.run() }, recording(publisher, into: recorder)]) {
            // The registrar's own client: stopping its connections is what a crash looks like to
            // etcd (keep-alives stop, no revoke arrives).
            let doomed = try EtcdClient(configuration: cluster.configuration)
            let registrar = EtcdRegistrar(instance: instance, prefix: "/svc/", client: doomed, ttl: .seconds(2))
            let connections = Task { try? await doomed.run() }
            let registration = Task { try? await registrar.run() }
            try await eventually("registered") { recorder.ids == [instance.id] }
            connections.cancel()
            await connections.value
            let crashed = ContinuousClock.now
            try await eventually("expired", timeout: .seconds(30)) { recorder.ids.isEmpty }
            let gone = ContinuousClock.now - crashed
            #expect(gone >= .milliseconds(1_000), "the key outlived the crash by the lease's TTL (\(gone))")
            registration.cancel()
            await registration.value
        }
    }

    @Test("with a user and password, requests authenticate; wrong credentials are a clear error")
    func authentication() async throws {
        let cluster = try await EtcdCluster.start()
        try await cluster.enableAuthentication(rootPassword: "s3cret")
        var configuration = cluster.configuration
        configuration.credentials = .init(username: "root", password: "s3cret")
        let client = try EtcdClient(configuration: configuration)
        try await withRunning(client) {
            try await client.put("/svc/a", value: "127.0.0.1:8001")
            let range = try await client.range(prefix: "/svc/")
            #expect(range.keyValues.map(\.key) == ["/svc/a"])
        }
        configuration.credentials = .init(username: "root", password: "wrong")
        let refused = try EtcdClient(configuration: configuration)
        try await withRunning(refused) {
            await #expect(throws: EtcdError.self) { try await refused.range(prefix: "/svc/") }
            do {
                _ = try await refused.range(prefix: "/svc/")
            } catch let error as EtcdError {
                #expect(error.code == .unauthenticated, "\(error)")
            }
        }
    }

    @Test("TLS: a client trusting the cluster's CA works; plaintext and an untrusted CA do not")
    func tls() async throws {
        let cluster = try await EtcdCluster.start(tls: true)
        let client = try EtcdClient(configuration: cluster.configuration)
        let publisher = EtcdPublisher(prefix: "/svc/", client: client)
        let recorder = Recorder()
        try await withRunning(client, [{ try? await publisher.run() }, recording(publisher, into: recorder)]) {
            try await client.put("/svc/a", value: "127.0.0.1:8001")
            try await eventually("a over TLS") { recorder.ids == ["127.0.0.1:8001"] }
        }
        var plaintext = cluster.configuration
        plaintext.tls = nil
        plaintext.requestTimeout = .seconds(1)
        let refused = try EtcdClient(configuration: plaintext)
        try await withRunning(refused) {
            await #expect(throws: EtcdError.self) { try await refused.range(prefix: "/svc/") }
        }
        var untrusted = cluster.configuration
        untrusted.tls = EtcdConfiguration.TLS(trustRootsPath: nil) // the system's roots do not know the test CA
        untrusted.requestTimeout = .seconds(1)
        let unverified = try EtcdClient(configuration: untrusted)
        try await withRunning(unverified) {
            await #expect(throws: EtcdError.self) { try await unverified.range(prefix: "/svc/") }
        }
    }

    @Test("in a ServiceGroup, graceful shutdown deregisters the registrar and closes every endpoint")
    func serviceGroupShutdown() async throws {
        let cluster = try await EtcdCluster.start()
        let client = try EtcdClient(configuration: cluster.configuration)
        let publisher = EtcdPublisher(prefix: "/svc/", client: client)
        let closed = ClosedEndpoints()
        let cache = EndpointCache<Int, String>(
            publisher: publisher,
            factory: EndpointFactory { instance in
                ManagedEndpoint(Endpoint(instance: instance) { _ in instance.id }) { closed.add(instance.id) }
            }
        )
        let me = try Instance(host: "127.0.0.5", port: 8005)
        let registrar = EtcdRegistrar(instance: me, prefix: "/svc/", client: client, ttl: .seconds(30))
        // Services shut down in reverse order: the registrar first, the client last.
        let group = ServiceGroup(
            configuration: .init(
                services: [client, publisher, cache, registrar], logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        )
        let watcher = try EtcdClient(configuration: cluster.configuration)
        try await withRunning(watcher) {
            let run = Task { try await group.run() }
            try await watcher.put("/svc/other", value: "127.0.0.6:8006")
            try await eventually("both endpoints made") { cache.snapshot.count == 2 }
            await group.triggerGracefulShutdown()
            try await run.value
            // The lease was revoked (not left to expire in 30 s): the key is gone now.
            let left = try await watcher.range(prefix: "/svc/")
            #expect(left.keyValues.map(\.key) == ["/svc/other"])
            #expect(closed.ids.sorted() == [me.id, "127.0.0.6:8006"].sorted(), "every endpoint closed once")
        }
    }

    @Test("bad configuration is a clear error")
    func badConfiguration() throws {
        #expect(throws: EtcdError.self) { try EtcdConfiguration(members: "") }
        #expect(throws: EtcdError.self) { try EtcdConfiguration(members: "127.0.0.1") }
        #expect(throws: EtcdError.self) { try EtcdConfiguration(members: "127.0.0.1:2379,:80") }
        #expect(throws: EtcdError.self) { try EtcdClient(configuration: EtcdConfiguration(members: [])) }
        let parsed = try EtcdConfiguration(members: "127.0.0.1:2379,[::1]:22379")
        #expect(parsed.members.map(\.description) == ["127.0.0.1:2379", "[::1]:22379"])
    }
}
