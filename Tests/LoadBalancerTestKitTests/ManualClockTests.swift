import LoadBalancerTestKit
import Synchronization
import Testing

@Suite("ManualClock", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct ManualClockTests {
    @Test("a sleeper wakes when time reaches its deadline, not before")
    func wakesAtDeadline() async throws {
        let clock = ManualClock()
        let woke = Atomic(false)
        let sleeper = Task {
            try await clock.sleep(for: .seconds(10))
            woke.store(true, ordering: .relaxed)
        }
        try await clock.waitForSleepers(count: 1)
        #expect(clock.sleeperDelays == [.seconds(10)])

        clock.advance(by: .seconds(9))
        #expect(clock.sleeperCount == 1, "one second early: still asleep")
        let wokeEarly = woke.load(ordering: .relaxed)
        #expect(wokeEarly == false)
        #expect(clock.sleeperDelays == [.seconds(1)])

        clock.advance(by: .seconds(1))
        try await sleeper.value
        let wokeOnTime = woke.load(ordering: .relaxed)
        #expect(wokeOnTime)
        #expect(clock.sleeperCount == 0)
        #expect(clock.now == ManualClock.Instant(offset: .seconds(10)))
    }

    @Test("advancing wakes exactly the sleepers that are due, and the rest keep their deadlines")
    func wakesOnlyDue() async throws {
        let clock = ManualClock()
        var sleepers: [Task<ManualClock.Instant, any Error>] = []
        for seconds in [5, 10, 15] {
            sleepers.append(
                Task {
                    try await clock.sleep(until: ManualClock.Instant(offset: .seconds(seconds)))
                    return clock.now
                })
        }
        try await clock.waitForSleepers(count: 3)
        clock.advance(to: ManualClock.Instant(offset: .seconds(12)))
        #expect(try await sleepers[0].value.offset == .seconds(12), "woken by the advance to 12 s")
        #expect(try await sleepers[1].value.offset == .seconds(12))
        #expect(clock.sleeperDelays == [.seconds(3)], "the third keeps its deadline")

        #expect(clock.advanceToNextDeadline() == .seconds(3))
        #expect(try await sleepers[2].value.offset == .seconds(15))
        #expect(clock.now.offset == .seconds(15))
        #expect(clock.advanceToNextDeadline() == nil, "no sleeper: time stays")
        #expect(clock.now.offset == .seconds(15))
    }

    @Test("a deadline that has already come returns at once")
    func pastDeadline() async throws {
        let clock = ManualClock()
        clock.advance(by: .seconds(5))
        try await clock.sleep(until: ManualClock.Instant(offset: .seconds(5)))
        try await clock.sleep(for: .zero)
        #expect(clock.sleeperCount == 0)
    }

    @Test("time never goes back")
    func monotonic() {
        let clock = ManualClock()
        clock.advance(by: .seconds(3))
        clock.advance(by: .seconds(-2))
        #expect(clock.now.offset == .seconds(3))
        clock.advance(to: .zero)
        #expect(clock.now.offset == .seconds(3))
        #expect(clock.now.duration(to: clock.now.advanced(by: .seconds(2))) == .seconds(2))
        #expect(ManualClock.Instant.zero < clock.now)
        #expect(clock.minimumResolution == .zero)
    }

    @Test("a cancelled sleeper wakes at once with CancellationError and leaves the clock")
    func cancellationDuringSleep() async throws {
        let clock = ManualClock()
        let sleeper = Task { try await clock.sleep(for: .seconds(3600)) }
        try await clock.waitForSleepers(count: 1)
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
        #expect(clock.sleeperCount == 0)
        #expect(clock.now == .zero, "cancellation moves no time")
    }

    @Test("a task cancelled before it sleeps throws without sleeping, even for a deadline that has come")
    func cancellationBeforeSleep() async throws {
        let clock = ManualClock()
        let gate = AsyncStream<Void>.makeStream()
        let sleeper = Task {
            for await _ in gate.stream { break }
            try await clock.sleep(for: .seconds(1))
        }
        sleeper.cancel()
        gate.continuation.yield()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
        #expect(clock.sleeperCount == 0)
    }

    @Test("a wait for sleepers that never come ends with a timedOut error that says what it saw")
    func waitTimesOut() async throws {
        let clock = ManualClock()
        let error = try await #require(throws: TestKitError.self) {
            try await clock.waitForSleepers(count: 2, timeout: .milliseconds(20))
        }
        #expect(error.code == .timedOut)
        #expect(error.message.contains("2 sleeper(s)"), "\(error)")
        #expect(error.message.contains("0 asleep"), "\(error)")
    }

    @Test("the clock drives code that takes a Clock: Task.sleep-style timeouts in a task group")
    func drivesATimeout() async throws {
        let clock = ManualClock()
        let (stream, _) = AsyncStream<Int>.makeStream()
        let outcome = await withTaskGroup(of: String.self) { group in
            group.addTask {
                for await _ in stream { return "value" }
                return "ended"
            }
            group.addTask {
                do {
                    try await clock.sleep(for: .seconds(30))
                    return "timed out"
                } catch {
                    return "cancelled"
                }
            }
            try? await clock.waitForSleepers(count: 1)
            clock.advance(by: .seconds(30))
            let first = await group.next() ?? "none"
            group.cancelAll()
            return first
        }
        #expect(outcome == "timed out")
    }
}
