import LoadBalancerTestKit
import Synchronization
import Testing

@testable import LoadBalancer

/// A publisher whose registry never answers: no update ever comes.
private final class SilentRegistryPublisher: InstancePublisher {
    let broadcaster = InstanceBroadcaster()
    func updates() -> InstanceUpdates { broadcaster.updates() }
}

/// A gate that tasks wait at until it is opened (an endpoint factory waiting for a server that
/// has gone silent, say).
private final class Gate: Sendable {
    private let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation
    private let waiting = Mutex(0)

    init() { (stream, continuation) = AsyncStream.makeStream(of: Void.self) }

    var waiters: Int { waiting.withLock { $0 } }

    func wait() async {
        waiting.withLock { $0 += 1 }
        for await _ in stream { break }
    }

    func open() { continuation.finish() }
}

/// What ran, in order.
private final class Journal: Sendable {
    private let entries = Mutex<[String]>([])
    var all: [String] { entries.withLock { $0 } }
    func note(_ entry: String) { entries.withLock { $0.append(entry) } }
}

@Suite("Hand-written continuations resume on cancellation", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct CancellationTests {
    @Test("a task waiting for the FIFO lock stops waiting within 100 ms of its cancellation; the body does not run, the queue moves on")
    func lockWaiterCancelled() async throws {
        let lock = AsyncLock()
        let gate = Gate()
        let ran = Journal()
        let holder = Task {
            try? await lock.withLock {
                ran.note("holder")
                await gate.wait()
            }
        }
        try await waitUntil { gate.waiters == 1 }
        let next = Task { try? await lock.withLock { ran.note("next") } }
        try await waitUntil { lock.waiterCount == 1 }
        let (threwCancellation, elapsed) = try await timeToReturn(
            afterCancelling: {
                do {
                    try await lock.withLock { ran.note("cancelled") }
                    return false
                } catch {
                    return error is CancellationError
                }
            },
            once: { lock.waiterCount == 2 }
        )
        #expect(threwCancellation)
        #expect(elapsed < callTimeLimit(.milliseconds(100)), "\(elapsed)")
        #expect(lock.waiterCount == 1)
        #expect(lock.isLocked, "the holder still holds it")

        gate.open()
        await holder.value
        await next.value
        #expect(ran.all == ["holder", "next"])
        #expect(!lock.isLocked)
    }

    @Test("a lock waiter cancelled before it queues never takes the lock")
    func lockWaiterCancelledEarly() async throws {
        let lock = AsyncLock()
        let gate = Gate()
        let holder = Task { try? await lock.withLock { await gate.wait() } }
        try await waitUntil { gate.waiters == 1 }
        let early = Task { () -> Bool in
            withUnsafeCurrentTask { $0?.cancel() }
            do {
                try await lock.withLock {}
                return false
            } catch {
                return error is CancellationError
            }
        }
        #expect(await early.value)
        #expect(lock.waiterCount == 0)
        gate.open()
        await holder.value
        #expect(!lock.isLocked)
    }

    @Test("an update waiting behind one stuck on a silent server returns within 100 ms of its cancellation, its set not applied")
    func updateCancelled() async throws {
        let gate = Gate()
        let cache = EndpointCache<Int, String>(
            factory: EndpointFactory { instance in
                if instance.port == 1 { await gate.wait() }
                return ManagedEndpoint(Endpoint(instance: instance) { _ in instance.id })
            }
        )
        let stuck = Task { await cache.update(with: [try! Instance(parsing: "127.0.0.1:1")]) }
        try await waitUntil { gate.waiters == 1 }
        // The second update is queued on the cache's update lock when it is cancelled.
        let (_, elapsed) = try await timeToReturn(
            afterCancelling: { await cache.update(with: [try! Instance(parsing: "127.0.0.1:2")]) },
            once: { cache.updateLock.waiterCount == 1 }
        )
        #expect(elapsed < callTimeLimit(.milliseconds(100)), "\(elapsed)")
        gate.open()
        await stuck.value
        #expect(cache.snapshot.instances.map(\.port) == [1], "the cancelled update was not applied")
        await cache.shutdown()
        #expect(cache.snapshot.isEmpty)
    }

    @Test("waitUntilReady returns within 100 ms of its cancellation while the registry stays silent")
    func readinessWaitCancelled() async throws {
        let cache = EndpointCache(publisher: SilentRegistryPublisher(), factory: EndpointLedger().factory())
        let run = Task { try await cache.run() }
        let (_, elapsed) = try await timeToReturn(
            afterCancelling: { await cache.waitUntilReady() },
            once: { cache.readinessWaiterCount == 1 }
        )
        #expect(elapsed < callTimeLimit(.milliseconds(100)), "\(elapsed)")
        #expect(cache.readinessWaiterCount == 0)
        #expect(!cache.discoveryStatus.isReady)
        run.cancel()
        try await run.value
    }

    @Test("shutdown runs to its end in a cancelled task, after the update in progress")
    func shutdownWhenCancelled() async throws {
        let gate = Gate()
        let ledger = EndpointLedger()
        let made = ledger.factory()
        let cache = EndpointCache<Int, String>(
            factory: EndpointFactory { instance in
                if instance.port == 2 { await gate.wait() }
                return try await made.make(instance)
            }
        )
        await cache.update(with: [try Instance(parsing: "127.0.0.1:1")])
        let stuck = Task { await cache.update(with: [try! Instance(parsing: "127.0.0.1:1"), try! Instance(parsing: "127.0.0.1:2")]) }
        try await waitUntil { gate.waiters == 1 }
        let shutdown = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            await cache.shutdown()
        }
        gate.open()
        await stuck.value
        await shutdown.value
        #expect(cache.snapshot.isEmpty)
        #expect(ledger.snapshot.values.allSatisfy { $0.made == 1 && $0.closed == 1 })
        #expect(ledger.snapshot.count == 2)
    }
}
