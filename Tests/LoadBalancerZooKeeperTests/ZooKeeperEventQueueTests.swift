import Testing

@testable import LoadBalancerZooKeeper

@Suite("ZooKeeper event queue: a client's events taken in batches")
struct ZooKeeperEventQueueTests {
    @Test("what came since the last take is one batch, in order; a reader waiting gets the next event")
    func batches() async {
        let queue = ZooKeeperEventQueue(id: 0)
        #expect(queue.available() == [])
        queue.append(.disconnected)
        queue.append(.sessionExpired)
        queue.append(.connected(sessionID: 7, newSession: true))
        #expect(await queue.next() == [.disconnected, .sessionExpired, .connected(sessionID: 7, newSession: true)])
        #expect(queue.available() == [])
        queue.append(.disconnected)
        #expect(queue.available() == [.disconnected])
        // Whether the reader waits already or not, the event is its batch.
        async let waited = queue.next()
        queue.append(.watch(.init(kind: .nodeCreated, path: "/a")))
        #expect(await waited == [.watch(.init(kind: .nodeCreated, path: "/a"))])
    }

    @Test("a deadline ends the wait with an empty batch (at once when it has passed); events before it come as usual")
    func deadline() async {
        let queue = ZooKeeperEventQueue(id: 0)
        #expect(await queue.next(until: .now - .seconds(1)) == [])
        #expect(await queue.next(until: .now + .milliseconds(20)) == [])
        queue.append(.disconnected)
        #expect(await queue.next(until: .now + .seconds(60)) == [.disconnected])
        queue.append(.sessionExpired)
        #expect(await queue.next(until: .now - .seconds(1)) == [.sessionExpired])
    }

    @Test("finished: what is queued is still taken, then nil; appends after it are dropped")
    func finished() async {
        let queue = ZooKeeperEventQueue(id: 0)
        queue.append(.disconnected)
        queue.finish()
        queue.append(.sessionExpired)
        #expect(await queue.next() == [.disconnected])
        #expect(await queue.next() == nil)
        #expect(await queue.next(until: .now + .seconds(60)) == nil)
    }

    @Test("a cancelled reader returns nil at once, waiting or not yet")
    func cancelled() async {
        let queue = ZooKeeperEventQueue(id: 0)
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return await queue.next()
        }
        #expect(await early.value == nil)
        let waiting = Task { await queue.next(until: .now + .seconds(60)) }
        waiting.cancel()
        #expect(await waiting.value == nil)
    }
}
