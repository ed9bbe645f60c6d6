import LoadBalancer
import LoadBalancerTestKit
import LoadBalancerTestServers
import LoadBalancerZooKeeper
import Testing

/// A cache over `publisher` whose endpoints answer their instance's id.
private func cache(over publisher: ZooKeeperPublisher) -> EndpointCache<Int, String> {
    EndpointCache<Int, String>(
        publisher: publisher,
        factory: EndpointFactory { instance in ManagedEndpoint(Endpoint(instance: instance) { _ in instance.id }) })
}

private func value(_ port: Int) -> [UInt8] { Array("127.0.0.1:\(port)".utf8) }

@Suite(
    "ZooKeeper: the publisher under a persistent recursive watch, against a real server", .enabled(if: ZooKeeperEnsemble.enabled),
    .serialized, .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct ZooKeeperRecursiveWatchTests {
    @Test(
        "adds, removes and data changes reach the cache as what changed, one read each, a data change with no listing (persistent watch); the one-shot watches still work",
        arguments: [true, false])
    func changesAsHints(persistentWatch: Bool) async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        defer { ensemble.destroy() }
        let client = ZooKeeperClient(configuration: ensemble.configuration())
        let publisher = ZooKeeperPublisher(path: "/svc", client: client, persistentWatch: persistentWatch)
        let recorder = Recorder()
        let cache = cache(over: publisher)
        try await withRunning([{ try? await client.run() }]) {
            try await connected(client)
            // The first three before the publisher starts: its first listing sees them, so no event
            // of theirs (and no listing of the child watch) comes after it.
            for port in 8001...8003 { try await client.create("/svc/n\(port)", data: value(port), createParents: true) }
            try await withRunning([{ try? await publisher.run() }, { try? await cache.run() }, recorder.recording(publisher)]) {
                try await changes(client: client, publisher: publisher, cache: cache, recorder: recorder, persistentWatch: persistentWatch)
            }
        }
    }

    private func changes(
        client: ZooKeeperClient, publisher: ZooKeeperPublisher, cache: EndpointCache<Int, String>, recorder: Recorder, persistentWatch: Bool
    ) async throws {
        try await eventually("three") { cache.snapshot.instances.count == 3 }
        #expect(publisher.usesPersistentWatch == persistentWatch)
        #expect(client.childrenListCount == 1)
        let applied = cache.updatesAppliedByHint
        var lists = client.childrenListCount

        var reads = client.dataReadCount
        try await client.create("/svc/n8004", data: value(8004))
        try await eventually("added") { cache.snapshot.instances.contains { $0.id == "127.0.0.1:8004" } }
        // The child watch fires too: one listing (put off a little under the persistent watch),
        // which reads no child it knows.
        try await eventually("listed once more") { client.childrenListCount == lists + 1 }
        #expect(client.dataReadCount - reads == 1)
        let added = try #require(recorder.all.last { $0.instances.count == 4 })
        #expect(added.changes?.upserted.map(\.id) == ["127.0.0.1:8004"])
        #expect(added.changes?.removed == [])

        reads = client.dataReadCount
        lists = client.childrenListCount
        try await client.setData("/svc/n8002", data: Array(#"{"host":"127.0.0.1","port":8002,"weight":3}"#.utf8))
        try await eventually("changed") { cache.snapshot.instances.first { $0.id == "127.0.0.1:8002" }?.weight == 3 }
        #expect(client.dataReadCount - reads == 1)
        #expect(client.childrenListCount == lists, "a data change lists nothing")
        let changed = try #require(recorder.all.last { $0.instances.first { $0.id == "127.0.0.1:8002" }?.weight == 3 })
        #expect(changed.changes?.upserted.map(\.weight) == [3])
        #expect(changed.changes?.removed == [])

        reads = client.dataReadCount
        try await client.delete("/svc/n8001")
        try await eventually("removed") { !cache.snapshot.instances.contains { $0.id == "127.0.0.1:8001" } }
        #expect(client.dataReadCount == reads)
        let removed = try #require(recorder.all.last { !$0.instances.contains { $0.id == "127.0.0.1:8001" } })
        #expect(removed.changes?.removed == ["127.0.0.1:8001"])
        #expect(removed.changes?.upserted == [])

        // A removal fires the parent's child watch (and, one-shot, the child's data watch): one
        // or two listings, which read nothing.
        try await eventually("listed after the removal") { client.childrenListCount > lists }
        #expect(client.dataReadCount == reads)
        #expect(cache.updatesAppliedByHint >= applied + 3)
        #expect(cache.snapshot.instances == recorder.latest?.instances)
        #expect(recorder.latest?.error == nil)

    }

    @Test("a burst of changes from another client converges, each update a hint")
    func burst() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        defer { ensemble.destroy() }
        let client = ZooKeeperClient(configuration: ensemble.configuration())
        let writer = ZooKeeperClient(configuration: ensemble.configuration())
        let publisher = ZooKeeperPublisher(path: "/burst", client: client)
        let recorder = Recorder()
        let cache = cache(over: publisher)
        try await withRunning([
            { try? await client.run() }, { try? await writer.run() }, { try? await publisher.run() }, { try? await cache.run() },
            recorder.recording(publisher),
        ]) {
            try await connected(writer)
            try await writer.create("/burst/seed", data: value(7000), createParents: true)
            try await eventually("seed") { cache.snapshot.instances.count == 1 }
            #expect(publisher.usesPersistentWatch)
            let first = recorder.all.count
            // 120 nodes created, 32 at a time; then 40 deleted and 40 changed, also concurrently.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<120 {
                    if i >= 32 { try await group.next() }
                    group.addTask { try await writer.create("/burst/n\(i)", data: value(10_000 + i)) }
                }
                try await group.waitForAll()
                for i in 0..<80 {
                    if i >= 32 { try await group.next() }
                    group.addTask {
                        if i % 2 == 0 {
                            try await writer.delete("/burst/n\(i)")
                        } else {
                            try await writer.setData("/burst/n\(i)", data: value(20_000 + i))
                        }
                    }
                }
                try await group.waitForAll()
            }
            var expected: Set<String> = ["127.0.0.1:7000"]
            for i in 0..<120 where !(i < 80 && i % 2 == 0) {
                expected.insert("127.0.0.1:\(i < 80 ? 20_000 + i : 10_000 + i)")
            }
            try await eventually("converged") { Set(cache.snapshot.instances.map(\.id)) == expected }
            let updates = recorder.all.dropFirst(first)
            #expect(!updates.isEmpty)
            #expect(updates.allSatisfy { $0.changes != nil }, "every update says what changed")
            #expect(Set(try #require(recorder.latest).instances.map(\.id)) == expected)
            #expect(recorder.neverEmptiedOnceFilled)
        }
    }

    @Test("deeper nodes are not instances; the parent deleted gives an empty set, then new children arrive")
    func deeperAndParent() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        defer { ensemble.destroy() }
        let client = ZooKeeperClient(configuration: ensemble.configuration())
        let writer = ZooKeeperClient(configuration: ensemble.configuration())
        let publisher = ZooKeeperPublisher(path: "/deep", client: client)
        let recorder = Recorder()
        try await withRunning([
            { try? await client.run() }, { try? await writer.run() }, { try? await publisher.run() }, recorder.recording(publisher),
        ]) {
            try await connected(writer)
            try await writer.create("/deep/a", data: value(8001), createParents: true)
            try await eventually("a") { recorder.ids == ["127.0.0.1:8001"] }
            let reads = client.dataReadCount
            try await writer.create("/deep/a/x", data: Array("not an instance".utf8))
            try await writer.setData("/deep/a/x", data: Array("still not".utf8))
            // A marker after them: once it is in, the deeper events have been taken in too.
            try await writer.create("/deep/b", data: value(8002))
            try await eventually("b") { recorder.ids == ["127.0.0.1:8001", "127.0.0.1:8002"] }
            #expect(client.dataReadCount == reads + 1, "only b was read")

            try await writer.delete("/deep/a/x")
            try await writer.delete("/deep/a")
            try await writer.delete("/deep/b")
            try await writer.delete("/deep")
            try await eventually("empty, the parent created again") {
                guard recorder.ids.isEmpty else { return false }
                return (try? await writer.exists("/deep")) != nil
            }
            try await writer.create("/deep/c", data: value(8003))
            try await eventually("c") { recorder.ids == ["127.0.0.1:8003"] }
            #expect(publisher.usesPersistentWatch)
        }
    }

    @Test("changes made while the connection was cut are read again after the reconnection; later ones arrive by the watch set again")
    func reconnection() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        defer { ensemble.destroy() }
        let (client, proxy) = try await proxiedClient(ensemble)
        let writer = ZooKeeperClient(configuration: ensemble.configuration())
        let publisher = ZooKeeperPublisher(path: "/cut", client: client)
        let recorder = Recorder()
        try await withRunning([
            { try? await client.run() }, { try? await writer.run() }, { try? await publisher.run() }, recorder.recording(publisher),
        ]) {
            try await connected(writer)
            try await writer.create("/cut/a", data: value(8001), createParents: true)
            try await eventually("a") { recorder.ids == ["127.0.0.1:8001"] }
            let session = client.sessionID

            proxy.cut()
            try await eventually("cut off") { !client.isConnected }
            try await writer.create("/cut/b", data: value(8002))
            try await writer.delete("/cut/a")
            #expect(recorder.ids == ["127.0.0.1:8001"], "the last good set stays")
            proxy.restore()
            try await eventually("read again") { client.isConnected && recorder.ids == ["127.0.0.1:8002"] }
            #expect(client.sessionID == session, "the same session")
            #expect(client.hasPersistentWatch("/cut"))

            // A data change: nothing but the persistent watch reports it (no child has a data watch).
            try await writer.setData("/cut/b", data: value(8003))
            try await eventually("the change by the watch") { recorder.ids == ["127.0.0.1:8003"] }
            #expect(recorder.neverEmptiedOnceFilled)
        }
    }

    @Test("a server restart, and then a session expiry: the set converges each time")
    func restartAndExpiry() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        defer { ensemble.destroy() }
        let (client, proxy) = try await proxiedClient(ensemble)
        let writer = ZooKeeperClient(configuration: ensemble.configuration())
        let publisher = ZooKeeperPublisher(path: "/svc", client: client)
        let recorder = Recorder()
        try await withRunning([
            { try? await client.run() }, { try? await writer.run() }, { try? await publisher.run() }, recorder.recording(publisher),
        ]) {
            try await connected(writer)
            try await writer.create("/svc/a", data: value(8001), createParents: true)
            try await eventually("a") { recorder.ids == ["127.0.0.1:8001"] }
            await ensemble.kill(ensemble.servers[0])
            try await eventually("disconnected") { !client.isConnected }
            try await ensemble.restart(ensemble.servers[0])
            // Within the session when the restart is quicker than the session timeout; a new one
            // otherwise: either way the publisher reads again.
            try await connected(client)
            try await connected(writer)
            try await writer.create("/svc/b", data: value(8002))
            try await eventually("b after the restart") { recorder.ids == ["127.0.0.1:8001", "127.0.0.1:8002"] }

            let session = client.sessionID
            try await expireSession(of: client, through: proxy, ensemble: ensemble)
            try await eventually("a new session") { client.isConnected && client.sessionID != session }
            try await writer.delete("/svc/a")
            try await writer.create("/svc/c", data: value(8003))
            try await eventually("converged in the new session") { recorder.ids == ["127.0.0.1:8002", "127.0.0.1:8003"] }
            #expect(publisher.usesPersistentWatch)
            #expect(recorder.neverEmptiedOnceFilled)
        }
    }

    @Test("the persistent watch is removed from the server when the publisher stops")
    func removedOnStop() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        defer { ensemble.destroy() }
        let client = ZooKeeperClient(configuration: ensemble.configuration())
        let publisher = ZooKeeperPublisher(path: "/gone", client: client)
        let recorder = Recorder()
        let events = EventLog()
        let stream = client.events()
        try await withRunning([
            { try? await client.run() }, recorder.recording(publisher), { for await event in stream { events.record(event) } },
        ]) {
            try await withRunning([{ try? await publisher.run() }]) {
                try await eventually("watching") { publisher.usesPersistentWatch && recorder.latest != nil }
                #expect(client.hasPersistentWatch("/gone"))
                try await client.create("/gone/before", data: value(8001))
                try await eventually("before") { recorder.ids == ["127.0.0.1:8001"] }
            }
            #expect(!client.hasPersistentWatch("/gone"))
            // A change after the removal, then a marker a one-shot watch reports: the server
            // sends a session's events in order, so had the persistent watch stayed, its event for
            // the change would come before the marker's.
            try await client.create("/gone/after", data: value(8002))
            #expect(try await client.exists("/gone/marker", watch: true) == nil)
            try await client.create("/gone/marker")
            try await eventually("the marker's event") { events.all.contains(.watch(.init(kind: .nodeCreated, path: "/gone/marker"))) }
            #expect(events.all.contains(.watch(.init(kind: .nodeCreated, path: "/gone/before"))))
            #expect(!events.all.contains(.watch(.init(kind: .nodeCreated, path: "/gone/after"))), "\(events.all)")
            await expectCode(.noWatcher) { try await client.removeWatches("/gone") }

            // The client's own: set, then removed (the server finds it: no noWatcher).
            try await client.addWatch("/gone", mode: .persistentRecursive)
            #expect(client.hasPersistentWatch("/gone"))
            try await client.removeWatches("/gone")
            #expect(!client.hasPersistentWatch("/gone"))
            await expectCode(.noWatcher) { try await client.removeWatches("/gone") }
        }
    }
}
