import LoadBalancer
import LoadBalancerTestKit
import LoadBalancerTestServers
import LoadBalancerZooKeeper
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// Every event of a client, recorded by a background reader.
final class EventLog: Sendable {
    private let events = Mutex<[ZooKeeperEvent]>([])
    var all: [ZooKeeperEvent] { events.withLock { $0 } }
    func record(_ event: ZooKeeperEvent) { events.withLock { $0.append(event) } }
}

/// Expects `body` to fail with a ZooKeeper error of `code`.
func expectCode(_ code: ZooKeeperError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("expected \(code), got success", sourceLocation: sourceLocation)
    } catch let error as ZooKeeperError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
    }
}

func connected(_ client: ZooKeeperClient) async throws {
    try await eventually("connected") { client.isConnected }
}

/// A client that reaches the (standalone) ensemble through a relay the test can cut.
func proxiedClient(_ ensemble: ZooKeeperEnsemble) async throws -> (ZooKeeperClient, TCPProxy) {
    let proxy = try await TCPProxy.start(upstreamPort: ensemble.servers[0].clientPort)
    var configuration = ensemble.configuration()
    configuration.servers = [.init(host: "127.0.0.1", port: proxy.port)]
    return (ZooKeeperClient(configuration: configuration), proxy)
}

/// Expires `client`'s session: cuts the relay it connects through (so it cannot take the session
/// back), takes the session over directly and closes it, then lets the client reconnect.
func expireSession(of client: ZooKeeperClient, through proxy: TCPProxy, ensemble: ZooKeeperEnsemble) async throws {
    let (id, password) = client.sessionCredentials
    proxy.cut()
    try await eventually("cut off") { !client.isConnected }
    try await ZooKeeperClient.closeSession(id: id, password: password, server: ensemble.servers[0].address)
    proxy.restore()
}

@Suite(
    "ZooKeeper against real ZooKeeper servers", .enabled(if: ZooKeeperEnsemble.enabled), .serialized,
    .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct ZooKeeperIntegrationTests {
    @Test("the client creates, reads, watches and deletes nodes; errors are typed")
    func clientBasics() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        let client = ZooKeeperClient(configuration: ensemble.configuration())
        let events = EventLog()
        let stream = client.events()
        try await withRunning([{ try? await client.run() }, { for await event in stream { events.record(event) } }]) {
            try await connected(client)
            #expect(client.negotiatedSessionTimeout == .seconds(8))
            let created = try await client.create("/a/b/c", data: Array("hello".utf8), createParents: true)
            #expect(created == "/a/b/c")
            let (data, stat) = try await client.getData("/a/b/c", watch: true)
            #expect(String(decoding: data, as: UTF8.self) == "hello" && stat.version == 0 && stat.ephemeralOwner == 0)
            let sequential = try await client.create("/a/b/s-", mode: .ephemeralSequential)
            #expect(sequential.hasPrefix("/a/b/s-") && sequential.count == "/a/b/s-".count + 10, "\(sequential)")
            let (children, _) = try await client.getChildren("/a/b", watch: true)
            #expect(Set(children) == ["c", String(sequential.dropFirst("/a/b/".count))])
            #expect(try await client.exists("/a/b/nothing", watch: true) == nil)

            try await client.setData("/a/b/c", data: Array("bye".utf8))
            try await eventually("data watch") { events.all.contains(.watch(.init(kind: .nodeDataChanged, path: "/a/b/c"))) }
            try await client.create("/a/b/nothing")
            try await eventually("exists watch") { events.all.contains(.watch(.init(kind: .nodeCreated, path: "/a/b/nothing"))) }
            try await eventually("child watch") { events.all.contains(.watch(.init(kind: .nodeChildrenChanged, path: "/a/b"))) }

            await expectCode(.nodeExists) { try await client.create("/a/b/c") }
            await expectCode(.notEmpty) { try await client.delete("/a/b") }
            await expectCode(.noNode) { _ = try await client.getData("/missing") }
            await expectCode(.badVersion) { try await client.delete("/a/b/c", version: 7) }
            await expectCode(.invalidArgument) { _ = try await client.getData("relative") }
            try await client.delete("/a/b/c")
            #expect(try await client.exists("/a/b/c") == nil)
        }
    }

    @Test("a chroot prefixes every path")
    func chroot() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        let rooted = ZooKeeperClient(configuration: ensemble.configuration(chroot: "/apps/prod"))
        let plain = ZooKeeperClient(configuration: ensemble.configuration())
        try await withRunning([{ try? await rooted.run() }, { try? await plain.run() }]) {
            try await connected(rooted)
            try await connected(plain)
            try await plain.create("/apps/prod", createParents: true)
            let path = try await rooted.create("/svc/x", data: Array("1".utf8), createParents: true)
            #expect(path == "/svc/x")
            #expect(try await plain.exists("/apps/prod/svc/x") != nil)
            #expect(try await rooted.getChildren("/").children == ["svc"])
        }
    }

    @Test("the publisher creates the parent, follows adds, removes and data changes, and reports bad data in band")
    func publisher() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        let client = ZooKeeperClient(configuration: ensemble.configuration())
        let publisher = ZooKeeperPublisher(path: "/services/web", client: client)
        let recorder = Recorder()
        try await withRunning([
            { try? await client.run() }, { try? await publisher.run() },
            { for await update in publisher.updates() { recorder.record(update) } },
        ]) {
            try await connected(client)
            try await eventually("the parent created") { (try? await client.exists("/services/web")) != nil }
            try await eventually("an empty set") { recorder.latest != nil }
            #expect(recorder.ids.isEmpty)
            try await client.create("/services/web/a", data: Array("127.0.0.1:8001".utf8))
            try await client.create("/services/web/b", data: Array(#"{"host":"127.0.0.2","port":8002,"weight":5}"#.utf8))
            try await client.create("/services/web/bad", data: Array("garbage".utf8))
            try await eventually("a and b") { recorder.ids == ["127.0.0.1:8001", "127.0.0.2:8002"] }
            #expect(recorder.latest?.instances.last?.weight == 5)
            // The bad child is left out and named in band, beside the good set.
            try await eventually("bad reported") { recorder.latest?.error?.code == .invalidInstances }
            #expect(recorder.latest?.error?.message.contains("/services/web/bad") == true, "\(String(describing: recorder.latest))")
            try await client.setData("/services/web/a", data: Array("127.0.0.1:8011".utf8))
            try await eventually("a changed") { recorder.ids == ["127.0.0.1:8011", "127.0.0.2:8002"] }
            try await client.delete("/services/web/b")
            try await eventually("b removed") { recorder.ids == ["127.0.0.1:8011"] }
            // A loaded machine may stall the server long enough for a reconnection (an error in
            // band); what must hold is that the set never emptied and ends current, with only the
            // bad child reported.
            #expect(recorder.neverEmptiedOnceFilled)
            #expect(recorder.latest?.error?.code == .invalidInstances)
            try await client.delete("/services/web/bad")
            try await eventually("no error once the bad child is gone") { recorder.latest?.error == nil }
            #expect(recorder.ids == ["127.0.0.1:8011"])
        }
    }

    @Test("changes reach the cache as what changed; a child watch reads only new children's data, a data watch only that child's")
    func changeHints() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        let client = ZooKeeperClient(configuration: ensemble.configuration())
        let publisher = ZooKeeperPublisher(path: "/services/hinted", client: client)
        let recorder = Recorder()
        let cache = EndpointCache<Int, String>(
            publisher: publisher,
            factory: EndpointFactory { instance in ManagedEndpoint(Endpoint(instance: instance) { _ in instance.id }) })
        try await withRunning([
            { try? await client.run() }, { try? await publisher.run() }, { try? await cache.run() },
            { for await update in publisher.updates() { recorder.record(update) } },
        ]) {
            try await connected(client)
            try await eventually("the parent created") { (try? await client.exists("/services/hinted")) != nil }
            for port in 8001...8005 {
                try await client.create("/services/hinted/n\(port)", data: Array("127.0.0.1:\(port)".utf8))
            }
            try await eventually("five children") { cache.snapshot.instances.count == 5 }
            let applied = cache.updatesAppliedByHint
            func lastUpdate(where matches: (InstanceUpdate) -> Bool) -> InstanceUpdate? { recorder.all.last(where: matches) }

            // A new child: the list is read again, but only the new child's data.
            var reads = client.dataReadCount
            try await client.create("/services/hinted/n8006", data: Array("127.0.0.1:8006".utf8))
            try await eventually("added") { cache.snapshot.instances.contains { $0.id == "127.0.0.1:8006" } }
            #expect(client.dataReadCount - reads == 1, "only the new child's data is read")
            let added = try #require(lastUpdate { $0.instances.count == 6 })
            #expect(added.changes?.upserted.map(\.id) == ["127.0.0.1:8006"])
            #expect(added.changes?.removed == [])

            // A child's data changes: only that child is read again.
            reads = client.dataReadCount
            try await client.setData("/services/hinted/n8002", data: Array(#"{"host":"127.0.0.1","port":8002,"weight":4}"#.utf8))
            try await eventually("changed") { cache.snapshot.instances.first { $0.id == "127.0.0.1:8002" }?.weight == 4 }
            #expect(client.dataReadCount - reads == 1, "only the changed child's data is read")
            let changed = try #require(lastUpdate { $0.instances.first { $0.id == "127.0.0.1:8002" }?.weight == 4 })
            #expect(changed.changes?.upserted.map(\.weight) == [4])
            #expect(changed.changes?.removed == [])

            // A child leaves: no data is read.
            reads = client.dataReadCount
            try await client.delete("/services/hinted/n8001")
            try await eventually("removed") { !cache.snapshot.instances.contains { $0.id == "127.0.0.1:8001" } }
            #expect(client.dataReadCount == reads, "a removal reads no data")
            let removed = try #require(lastUpdate { !$0.instances.contains { $0.id == "127.0.0.1:8001" } })
            #expect(removed.changes?.removed == ["127.0.0.1:8001"])
            #expect(removed.changes?.upserted == [])

            #expect(cache.updatesAppliedByHint >= applied + 3, "each change applied by what changed")
            #expect(cache.snapshot.instances == recorder.latest?.instances)
            #expect(cache.snapshot.endpoints.map(\.id) == recorder.latest?.instances.map(\.id))
        }
    }

    @Test("server restart: the session survives, the set stays, watches are set again, later changes arrive")
    func reconnectWithinSession() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        let server = ensemble.servers[0]
        let client = ZooKeeperClient(configuration: ensemble.configuration(sessionTimeout: .seconds(10)))
        let events = EventLog()
        let stream = client.events()
        let publisher = ZooKeeperPublisher(path: "/svc", client: client)
        let recorder = Recorder()
        let writer = ZooKeeperClient(configuration: ensemble.configuration())
        try await withRunning([
            { try? await client.run() }, { try? await writer.run() }, { for await event in stream { events.record(event) } },
            { try? await publisher.run() }, { for await update in publisher.updates() { recorder.record(update) } },
        ]) {
            try await connected(client)
            try await connected(writer)
            try await writer.create("/svc/a", data: Array("127.0.0.1:8001".utf8), createParents: true)
            try await eventually("a") { recorder.ids == ["127.0.0.1:8001"] }
            let session = client.sessionID

            await ensemble.kill(server)
            try await eventually("disconnected") { events.all.contains(.disconnected) }
            #expect(recorder.ids == ["127.0.0.1:8001"], "the last good set stays")
            try await ensemble.restart(server)
            try await eventually("reconnected in the same session") {
                events.all.contains(.connected(sessionID: session, newSession: false)) && client.isConnected
            }
            try await connected(writer)
            try await writer.create("/svc/b", data: Array("127.0.0.1:8002".utf8))
            try await eventually("b after the restart") { recorder.ids == ["127.0.0.1:8001", "127.0.0.1:8002"] }
            #expect(client.sessionID == session)
            #expect(!events.all.contains(.sessionExpired))
            #expect(recorder.neverEmptiedOnceFilled)
        }
    }

    @Test("session expiry: a new session, the publisher lists again, the registrar registers again")
    func sessionExpiry() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        let (client, proxy) = try await proxiedClient(ensemble)
        let events = EventLog()
        let stream = client.events()
        let instance = try Instance(host: "127.0.0.7", port: 7007)
        let registrar = ZooKeeperRegistrar(instance: instance, path: "/svc", client: client)
        let watcherClient = ZooKeeperClient(configuration: ensemble.configuration())
        let publisher = ZooKeeperPublisher(path: "/svc", client: watcherClient)
        let recorder = Recorder()
        try await withRunning([
            { try? await client.run() }, { for await event in stream { events.record(event) } }, { try? await registrar.run() },
            { try? await watcherClient.run() }, { try? await publisher.run() },
            { for await update in publisher.updates() { recorder.record(update) } },
        ]) {
            // The watcher can see the node before the registrar's create returns: wait for both.
            try await eventually("registered") { recorder.ids == [instance.id] && registrar.registeredNode != nil }
            let first = try #require(registrar.registeredNode)
            let session = client.sessionID

            try await expireSession(of: client, through: proxy, ensemble: ensemble)
            try await eventually("expired") { events.all.contains(.sessionExpired) }
            try await eventually("a new session") { client.isConnected && client.sessionID != session }
            try await eventually("registered again") {
                registrar.registeredNode != nil && registrar.registeredNode != first && recorder.ids == [instance.id]
            }
            #expect(try await watcherClient.exists(first) == nil, "the old session's node is gone")
        }
    }

    @Test("the publisher's own session expires: it lists again in the new session")
    func publisherSessionExpiry() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        let (client, proxy) = try await proxiedClient(ensemble)
        let publisher = ZooKeeperPublisher(path: "/svc", client: client)
        let recorder = Recorder()
        let writer = ZooKeeperClient(configuration: ensemble.configuration())
        try await withRunning([
            { try? await client.run() }, { try? await writer.run() }, { try? await publisher.run() },
            { for await update in publisher.updates() { recorder.record(update) } },
        ]) {
            try await connected(writer)
            try await writer.create("/svc/a", data: Array("127.0.0.1:8001".utf8), createParents: true)
            try await eventually("a") { recorder.ids == ["127.0.0.1:8001"] }
            let session = client.sessionID
            try await expireSession(of: client, through: proxy, ensemble: ensemble)
            try await eventually("a new session") { client.isConnected && client.sessionID != session }
            // Watches of the old session are gone: only a new listing (with new watches) sees this.
            try await writer.create("/svc/b", data: Array("127.0.0.1:8002".utf8))
            try await eventually("b in the new session") { recorder.ids == ["127.0.0.1:8001", "127.0.0.1:8002"] }
            #expect(recorder.neverEmptiedOnceFilled)
        }
    }

    @Test("an ephemeral disappears when its registering client dies; graceful shutdown deletes it at once")
    func registrarLifetimes() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        let watcher = ZooKeeperClient(configuration: ensemble.configuration())
        let publisher = ZooKeeperPublisher(path: "/svc", client: watcher)
        let recorder = Recorder()
        try await withRunning([
            { try? await watcher.run() }, { try? await publisher.run() },
            { for await update in publisher.updates() { recorder.record(update) } },
        ]) {
            // Graceful shutdown of a ServiceGroup: the registrar (last) stops first and deletes its
            // node; then the client closes its session.
            let graceful = ZooKeeperClient(configuration: ensemble.configuration())
            let one = try Instance(host: "127.0.0.1", port: 9001)
            let registrar = ZooKeeperRegistrar(instance: one, path: "/svc", client: graceful)
            let group = ServiceGroup(
                configuration: .init(
                    services: [graceful, registrar], logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
            )
            let run = Task { try await group.run() }
            try await eventually("one registered") { recorder.ids == [one.id] }
            let start = ContinuousClock.now
            await group.triggerGracefulShutdown()
            try await run.value
            try await eventually("one gone", timeout: .seconds(3)) { recorder.ids.isEmpty }
            #expect(ContinuousClock.now - start < TestTimeScale.scaled(.seconds(3)))

            // Dying: the client's connection stops (no goodbye); the server expires the session
            // after its timeout and deletes the node.
            let dying = ZooKeeperClient(configuration: ensemble.configuration(sessionTimeout: .seconds(2)))
            let two = try Instance(host: "127.0.0.1", port: 9002)
            let registrar2 = ZooKeeperRegistrar(instance: two, path: "/svc", client: dying)
            // Cancelled, not shut down gracefully: the connection just stops, no session close.
            let connection = Task { try? await dying.run() }
            let registration = Task { try? await registrar2.run() }
            try await eventually("two registered") { recorder.ids == [two.id] }
            connection.cancel()
            await connection.value
            let died = ContinuousClock.now
            try await eventually("two expired", timeout: .seconds(15)) { recorder.ids.isEmpty }
            #expect(ContinuousClock.now - died >= .seconds(1), "the node lived on until the session timed out")
            registration.cancel()
            await registration.value
        }
    }

    @Test("3 servers: killing the leader keeps the set, and later changes arrive")
    func ensembleLeaderFailover() async throws {
        let ensemble = try await ZooKeeperEnsemble.start(size: 3)
        let leader = try await ensemble.leader()
        var configuration = ensemble.configuration(sessionTimeout: .seconds(6))
        configuration.servers = [leader.address] + ensemble.servers.filter { $0.id != leader.id }.map(\.address)
        let client = ZooKeeperClient(configuration: configuration)
        let publisher = ZooKeeperPublisher(path: "/svc", client: client)
        let recorder = Recorder()
        let writerConfiguration = ZooKeeperConfiguration(servers: ensemble.servers.filter { $0.id != leader.id }.map(\.address))
        let writer = ZooKeeperClient(configuration: writerConfiguration)
        try await withRunning([
            { try? await client.run() }, { try? await writer.run() }, { try? await publisher.run() },
            { for await update in publisher.updates() { recorder.record(update) } },
        ]) {
            try await connected(writer)
            try await writer.create("/svc/a", data: Array("127.0.0.1:8001".utf8), createParents: true)
            try await eventually("a") { recorder.ids == ["127.0.0.1:8001"] }
            await ensemble.kill(leader)
            _ = try await ensemble.leader(timeout: .seconds(30))
            try await eventually("writer back", timeout: .seconds(30)) {
                (try? await writer.create("/svc/b", data: Array("127.0.0.1:8002".utf8))) != nil
            }
            try await eventually("b through another server", timeout: .seconds(30)) {
                recorder.ids == ["127.0.0.1:8001", "127.0.0.1:8002"]
            }
            #expect(recorder.neverEmptiedOnceFilled)
        }
    }

    @Test("3 servers: a watch set before a server dies fires for a change made while the client was away")
    func watchesSetAgainOnAnotherServer() async throws {
        let ensemble = try await ZooKeeperEnsemble.start(size: 3)
        let writer = ZooKeeperClient(configuration: ZooKeeperConfiguration(servers: ensemble.servers.dropFirst().map(\.address)))
        try await withRunning([{ try? await writer.run() }]) {
            try await connected(writer)
            try await writer.create("/w/x", data: Array("1".utf8), createParents: true)
            let client = ZooKeeperClient(configuration: ensemble.configuration(sessionTimeout: .seconds(8)))
            let events = EventLog()
            let stream = client.events()
            try await withRunning([{ try? await client.run() }, { for await event in stream { events.record(event) } }]) {
                try await connected(client)
                _ = try await client.getData("/w/x", watch: true)
                let session = client.sessionID
                // Kill the server the client is on; it moves to another one of the ensemble.
                let current = try await ensemble.serverOf(session: session)
                await ensemble.kill(current)
                try await eventually("disconnected") { events.all.contains(.disconnected) }
                try await eventually("write while away", timeout: .seconds(30)) {
                    (try? await writer.setData("/w/x", data: Array("2".utf8))) != nil
                }
                try await eventually("the watch fired after reconnecting", timeout: .seconds(30)) {
                    events.all.contains(.watch(.init(kind: .nodeDataChanged, path: "/w/x")))
                }
                #expect(client.sessionID == session)
                #expect(events.all.contains(.connected(sessionID: session, newSession: false)))
            }
        }
    }

    @Test("bad connect strings and paths are typed errors")
    func badInput() throws {
        #expect(throws: ZooKeeperError.self) { try ZooKeeperConfiguration(connectString: "") }
        #expect(throws: ZooKeeperError.self) { try ZooKeeperConfiguration(connectString: "127.0.0.1") }
        #expect(throws: ZooKeeperError.self) { try ZooKeeperConfiguration(connectString: "127.0.0.1:2181/bad/") }
        let parsed = try ZooKeeperConfiguration(connectString: "127.0.0.1:2181,[::1]:2182/apps/x")
        #expect(parsed.servers.map(\.description) == ["127.0.0.1:2181", "[::1]:2182"])
        #expect(parsed.chroot == "/apps/x")
    }
}
