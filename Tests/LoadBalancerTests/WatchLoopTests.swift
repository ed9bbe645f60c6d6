import LoadBalancer
import LoadBalancerTestKit
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// A service whose `run()` is a watch loop whose rounds always fail, counting them.
private final class FailingLoopService: Service {
    let loop: WatchLoop<ManualClock>
    let rounds = Mutex(0)

    init(clock: ManualClock) {
        loop = WatchLoop(backoff: Backoff(base: .milliseconds(100), cap: .seconds(1)), clock: clock, random: { 1 << 63 })
    }

    func run() async {
        await loop.run { _ in
            self.rounds.withLock { $0 += 1 }
            return .failed()
        }
    }
}

@Suite("Watch loop", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct WatchLoopTests {
    /// Half of every window: the jitter's middle draw.
    static let middle: @Sendable () -> UInt64 = { 1 << 63 }

    @Test("failures back off with full jitter: the n-th pause in a row is drawn in the n-th window, which doubles to the cap")
    func backoffWindows() async throws {
        let clock = ManualClock()
        let loop = WatchLoop(backoff: Backoff(base: .milliseconds(100), cap: .seconds(1)), clock: clock, random: Self.middle)
        let rounds = Mutex(0)
        let run = Task {
            await loop.run { _ in
                rounds.withLock { $0 += 1 }
                return .failed()
            }
        }
        // Windows 100, 200, 400, 800 ms, then the 1 s cap: each pause is half its window here.
        for (round, pause) in [50, 100, 200, 400, 500, 500].map(Duration.milliseconds).enumerated() {
            try await waitUntil { clock.sleeperCount == 1 && rounds.withLock { $0 } == round + 1 }
            #expect(clock.sleeperDelays == [pause], "round \(round + 1)")
            clock.advance(by: pause)
        }
        run.cancel()
        _ = await run.value
    }

    @Test("the jitter is full: pauses cover the whole window, from zero to the window itself")
    func fullJitter() {
        let loop = WatchLoop(backoff: Backoff(base: .milliseconds(100), cap: .seconds(1)), clock: ManualClock())
        for failures in 0..<6 {
            var count = failures
            let window = loop.backoff.window(forRetry: failures + 1)
            var pauses: [Duration] = []
            for _ in 0..<400 {
                count = failures
                pauses.append(loop.pause(after: .failed(), failures: &count) ?? .seconds(-1))
                #expect(count == failures + 1)
            }
            #expect(pauses.allSatisfy { $0 >= .zero && $0 <= window }, "window \(window)")
            // Uniform over the window: 400 draws all above a tenth or all below nine tenths would be a broken draw.
            #expect(pauses.contains { $0 < window / 10 }, "window \(window): \(pauses.min()!)")
            #expect(pauses.contains { $0 > window * 9 / 10 }, "window \(window): \(pauses.max()!)")
        }
        // Fixed bits give the ends of the window.
        let low = WatchLoop(backoff: Backoff(base: .milliseconds(100)), clock: ManualClock(), random: { 0 })
        let high = WatchLoop(backoff: Backoff(base: .milliseconds(100)), clock: ManualClock(), random: { .max })
        var one = 0
        #expect(low.pause(after: .failed(), failures: &one) == .zero)
        one = 0
        let top = high.pause(after: .failed(), failures: &one) ?? .zero
        #expect(top <= .milliseconds(100) && top > .milliseconds(99))
    }

    @Test("a success resets the count of failures; a Retry-After raises the pause, a cap lowers it")
    func successResetsAndBounds() {
        let loop = WatchLoop(backoff: Backoff(base: .milliseconds(100), cap: .seconds(10)), clock: ManualClock(), random: Self.middle)
        var failures = 0
        #expect(loop.pause(after: .failed(), failures: &failures) == .milliseconds(50))
        #expect(loop.pause(after: .failed(), failures: &failures) == .milliseconds(100))
        #expect(loop.pause(after: .again, failures: &failures) == .zero)
        #expect(failures == 2, "an event in between counts neither way")
        #expect(loop.pause(after: .failed(), failures: &failures) == .milliseconds(200))
        #expect(loop.pause(after: .succeeded(next: .seconds(3)), failures: &failures) == .seconds(3))
        #expect(failures == 0)
        #expect(loop.pause(after: .failed(), failures: &failures) == .milliseconds(50), "the first window again")
        #expect(loop.pause(after: .failed(atLeast: .seconds(2)), failures: &failures) == .seconds(2))
        #expect(loop.pause(after: .failed(atMost: .milliseconds(30)), failures: &failures) == .milliseconds(30))
        #expect(loop.pause(after: .failed(atLeast: .seconds(1), atMost: .milliseconds(30)), failures: &failures) == .seconds(1))
        #expect(loop.pause(after: .stop(), failures: &failures) == nil)
    }

    @Test("a round that progressed part way makes its failure the first in a row")
    func progressedResets() async throws {
        let clock = ManualClock()
        let loop = WatchLoop(backoff: Backoff(base: .milliseconds(100), cap: .seconds(1)), clock: clock, random: Self.middle)
        let seen = Mutex<[Int]>([])
        let run = Task {
            await loop.run { round in
                let count = seen.withLock { seen -> Int in
                    seen.append(round.failures)
                    return seen.count
                }
                if count == 3 { round.progressed() }
                return .failed()
            }
        }
        for (round, pause) in [50, 100, 50, 100].map(Duration.milliseconds).enumerated() {
            try await waitUntil { clock.sleeperCount == 1 && seen.withLock { $0.count } == round + 1 }
            #expect(clock.sleeperDelays == [pause])
            clock.advance(by: pause)
        }
        try await waitUntil { seen.withLock { $0.count } == 5 }
        run.cancel()
        _ = await run.value
        #expect(seen.withLock { Array($0.prefix(5)) } == [0, 1, 2, 1, 2])
    }

    @Test("errors travel in band and the last good set stays; the stopping error is published, then the subscriptions end")
    func lastGoodSetKept() async throws {
        let clock = ManualClock()
        let broadcaster = InstanceBroadcaster(staleness: .keepLastGood, clock: clock)
        let loop = WatchLoop(backoff: Backoff(base: .milliseconds(100), cap: .seconds(1)), clock: clock, random: Self.middle)
        let good = [try Instance(parsing: "127.0.0.1:1"), try Instance(parsing: "127.0.0.1:2")]
        var updates = broadcaster.updates().makeAsyncIterator()
        let run = Task {
            await loop.run(publishingTo: broadcaster, state: { 0 }) { round, _ in
                round += 1
                switch round {
                case 1:
                    broadcaster.publish(good)
                    return .succeeded(next: .seconds(1))
                case 2, 3:
                    broadcaster.fail(DiscoveryError(code: .registryUnavailable, message: "down \(round)"))
                    return .failed()
                default:
                    return .stop(DiscoveryError(code: .closed, message: "client closed"))
                }
            }
        }
        let first = try #require(await updates.next())
        #expect(first.instances == good && first.error == nil)
        try await waitUntil { clock.sleeperCount == 1 }
        clock.advance(by: .seconds(1))
        let failed = try #require(await updates.next())
        #expect(failed.instances == good, "the last good set stays")
        #expect(failed.error?.code == .registryUnavailable)
        try await waitUntil { clock.sleeperCount == 1 }
        clock.advance(by: .milliseconds(50))
        #expect(try #require(await updates.next()).instances == good)
        try await waitUntil { clock.sleeperCount == 1 }
        clock.advance(by: .milliseconds(100))
        let closed = try #require(await updates.next())
        #expect(closed.instances == good)
        #expect(closed.error?.code == .closed)
        #expect(await updates.next() == nil, "the loop's end ends the subscriptions")
        _ = await run.value
    }

    @Test("graceful shutdown of the service group ends the loop, sleeping or not")
    func gracefulShutdown() async throws {
        let clock = ManualClock()
        let service = FailingLoopService(clock: clock)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: service)], logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        )
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await waitUntil { clock.sleeperCount == 1 }
            clock.advance(by: .milliseconds(50))
            try await waitUntil { service.rounds.withLock { $0 } == 2 && clock.sleeperCount == 1 }
            await group.triggerGracefulShutdown()
            // The loop ends without the clock moving: its pause is cut short.
            try await tasks.waitForAll()
        }
        #expect(service.rounds.withLock { $0 } == 2)
        #expect(clock.sleeperCount == 0)
    }

    @Test("cancellation ends the loop, and a round that stops it returns its error")
    func cancellationAndStop() async throws {
        let clock = ManualClock()
        let loop = WatchLoop(backoff: Backoff(), clock: clock)
        let stopped = await loop.run { _ in .stop(TestFailure(message: "closed")) }
        #expect((stopped as? TestFailure)?.message == "closed")
        let run = Task { await loop.run { _ in .succeeded(next: .seconds(60)) } }
        try await waitUntil { clock.sleeperCount == 1 }
        run.cancel()
        #expect(await run.value == nil)
    }
}
