import LoadBalancer
import LoadBalancerTestKit
import MetricsTestKit
import Synchronization
import Testing

/// A check scripted by port: healthy unless told otherwise; a hanging port never answers (until
/// the checker gives up on it). It counts checks and records what it was told to forget.
final class ScriptedHealthCheck: HealthCheck {
    private struct State {
        var failing: Set<Int> = []
        var hanging: Set<Int> = []
        var checks: [Int: Int] = [:]
        var forgotten: [String] = []
    }
    private let state = Mutex(State())

    func setFailing(_ port: Int, _ failing: Bool) {
        state.withLock { state in
            if failing { state.failing.insert(port) } else { state.failing.remove(port) }
        }
    }
    func setHanging(_ port: Int, _ hanging: Bool) {
        state.withLock { state in
            if hanging { state.hanging.insert(port) } else { state.hanging.remove(port) }
        }
    }
    func checks(_ port: Int) -> Int { state.withLock { $0.checks[port, default: 0] } }
    var forgotten: [String] { state.withLock { $0.forgotten } }

    func check(_ instance: Instance, timeout: Duration) async throws {
        let (failing, hanging) = state.withLock { state in
            state.checks[instance.port, default: 0] += 1
            return (state.failing.contains(instance.port), state.hanging.contains(instance.port))
        }
        if hanging { try await Task.sleep(for: .seconds(3600)) }
        if failing { throw HealthCheckFailure("port \(instance.port) is down") }
    }

    func forget(_ instance: Instance) async {
        state.withLock { $0.forgotten.append(instance.id) }
    }
}

@Suite("Active health checks")
struct HealthCheckerTests {
    /// A cache of weight-1 instances on ports 1000..., a detector on `clock`'s time, a round-robin
    /// balancer honouring it, and a running checker with `check`.
    final class Setup: Sendable {
        let clock = ManualClock()
        let cache: EndpointCache<Int, Int>
        let detector: OutlierDetector
        let balancer: RoundRobinBalancer<Int, Int>
        let check = ScriptedHealthCheck()
        let checker: HealthChecker<ManualClock>
        let run: Task<Void, any Error>

        init(
            count: Int,
            metrics: TestMetrics? = nil,
            ejection: OutlierDetector.Configuration = OutlierDetector.Configuration(),
            _ configure: (inout HealthChecker<ManualClock>.Configuration) -> Void = { _ in }
        ) async throws {
            cache = EndpointCache<Int, Int>(
                factory: .calling { instance, _ in instance.port },
                instrumentation: metrics.map { LoadBalancerInstrumentation(service: "users", metrics: $0, tracer: nil) }
            )
            await cache.update(with: weighted([Int](repeating: 1, count: count)))
            let clock = self.clock
            detector = OutlierDetector(cache, configuration: ejection, now: { clock.now.offset })
            balancer = RoundRobinBalancer(cache, ejection: detector)
            var configuration = HealthChecker<ManualClock>.Configuration.defaults {
                $0.interval = .seconds(1)
                $0.timeout = .milliseconds(500)
                $0.jitter = 0
                $0.initialJitter = .zero
            }
            configure(&configuration)
            checker = try HealthChecker(detector, check: check, configuration: configuration, clock: clock, seed: 7)
            let checker = self.checker
            run = Task { try await checker.run() }
        }

        /// Waits until every instance in the set has been checked `rounds` times and sleeps again.
        func settle(rounds: Int) async throws {
            let count = cache.snapshot.instances.count
            try await waitUntil {
                let statuses = checker.statuses
                return statuses.count == count && statuses.values.allSatisfy { $0.checks == rounds } && clock.sleeperCount == count
            }
        }

        /// Advances one interval and waits for the round of checks it starts.
        func round(_ rounds: Int) async throws {
            clock.advance(by: .seconds(1))
            try await settle(rounds: rounds)
        }

        /// The ports 300 picks reach.
        func pickedPorts() throws -> Set<Int> {
            let set = cache.snapshot
            return Set(try (0..<300).map { _ in set.instances[try balancer.pick().index].port })
        }

        func stop() async throws {
            run.cancel()
            try await run.value
        }
    }

    @Test("unhealthy after the unhealthy threshold of failures in a row, healthy after the healthy threshold of passes")
    func thresholds() async throws {
        let s = try await Setup(count: 3) {
            $0.unhealthyThreshold = 2
            $0.healthyThreshold = 3
        }
        try await s.settle(rounds: 1)
        #expect(try s.pickedPorts() == [1000, 1001, 1002])
        #expect(s.checker.statuses["10.0.0.2:1001"]?.health == .healthy)

        s.check.setFailing(1001, true)
        try await s.round(2)
        #expect(try s.pickedPorts() == [1000, 1001, 1002], "one failure is below the threshold")
        #expect(s.checker.statuses["10.0.0.2:1001"]?.consecutiveFailures == 1)
        try await s.round(3)
        #expect(try s.pickedPorts() == [1000, 1002], "two failures in a row: out of picks")
        #expect(s.detector.failingHealthCheckIDs == ["10.0.0.2:1001"])
        #expect(s.detector.ejectedInstanceIDs.isEmpty, "a failing check is not a passive ejection")
        let status = try #require(s.checker.statuses["10.0.0.2:1001"])
        #expect(status.health == .unhealthy && status.lastFailure == "port 1001 is down")

        s.check.setFailing(1001, false)
        try await s.round(4)
        try await s.round(5)
        #expect(try s.pickedPorts() == [1000, 1002], "two passes are below the healthy threshold of 3")
        try await s.round(6)
        #expect(try s.pickedPorts() == [1000, 1001, 1002], "back after three passes")
        #expect(s.detector.failingHealthCheckIDs.isEmpty)
        let kinds = s.detector.events.filter { $0.instanceID == "10.0.0.2:1001" }.map(\.kind)
        #expect(kinds == [.passingHealthCheck, .failingHealthCheck, .passingHealthCheck])
        let times = s.detector.events.filter { $0.instanceID == "10.0.0.2:1001" }.map(\.time)
        #expect(times == [.zero, .seconds(2), .seconds(5)])
        try await s.stop()
    }

    @Test("a check that outlasts the timeout fails")
    func timeout() async throws {
        let s = try await Setup(count: 3) { $0.unhealthyThreshold = 1 }
        try await s.settle(rounds: 1)
        s.check.setHanging(1002, true)
        s.clock.advance(by: .seconds(1))
        // 1000 and 1001 sleep until the next round; 1002's check waits on its 500 ms timeout.
        try await waitUntil { s.check.checks(1002) == 2 && s.clock.sleeperCount == 3 }
        #expect(s.checker.statuses["10.0.0.3:1002"]?.checks == 1, "not judged before the timeout")
        s.clock.advance(by: .milliseconds(500))
        try await waitUntil { s.checker.statuses["10.0.0.3:1002"]?.checks == 2 }
        #expect(s.checker.statuses["10.0.0.3:1002"]?.lastFailure == "no answer within 0.5 seconds")
        #expect(try s.pickedPorts() == [1000, 1001])
        try await s.stop()
    }

    @Test("pauses are jittered around the interval, and first checks spread over the initial jitter")
    func jitter() async throws {
        let s = try await Setup(count: 40) {
            $0.jitter = 0.5
            $0.initialJitter = .seconds(1)
        }
        try await waitUntil { s.clock.sleeperCount == 40 }
        let first = s.clock.sleeperDelays
        #expect(first.allSatisfy { $0 >= .zero && $0 <= .seconds(1) })
        #expect(Set(first).count > 30, "first checks at different times: \(first)")
        s.clock.advance(by: .seconds(1))
        try await s.settle(rounds: 1)
        // Every first check ran when the clock jumped to 1 s: each pause, drawn from 0.5...1.5 s, starts there.
        let pauses = s.clock.sleeperDelays
        #expect(pauses.allSatisfy { $0 >= .milliseconds(500) && $0 <= .milliseconds(1500) }, "\(pauses)")
        #expect(Set(pauses).count > 30)
        #expect(pauses.contains { $0 > .milliseconds(1200) } && pauses.contains { $0 < .milliseconds(800) })
        try await s.stop()
    }

    @Test("a failing check takes instances out of picks past the ejection cap; the panic threshold still holds")
    func pastTheCap() async throws {
        let s = try await Setup(count: 10, ejection: .defaults { $0.maxEjectionPercent = 10 }) { $0.unhealthyThreshold = 1 }
        try await s.settle(rounds: 1)
        for port in [1000, 1001, 1002] { s.check.setFailing(port, true) }
        try await s.round(2)
        #expect(try s.pickedPorts() == Set(1003...1009), "three of ten out, where the cap allows one ejection")
        for port in [1003, 1004, 1005] { s.check.setFailing(port, true) }
        try await s.round(3)
        #expect(try s.pickedPorts() == Set(1000...1009), "four of ten healthy, under the panic threshold: all take traffic")
        try await s.stop()
    }

    @Test("a passing check ends a passive ejection only when configured")
    func passingEndsEjection() async throws {
        for ends in [false, true] {
            let s = try await Setup(
                count: 3,
                ejection: .defaults {
                    $0.consecutiveFailures = 1
                    $0.failureRate = nil
                    $0.maxEjectionPercent = 50
                }
            ) { $0.passingCheckEndsEjection = ends }
            try await s.settle(rounds: 1)
            report(s.detector, s.cache, port: 1001, .failure)
            #expect(s.detector.ejectedInstanceIDs == ["10.0.0.2:1001"])
            try await s.round(2)
            if ends {
                #expect(s.detector.ejectedInstanceIDs.isEmpty, "the passing check ended the ejection")
                #expect(s.detector.events.last?.kind == .returned)
                #expect(try s.pickedPorts() == [1000, 1001, 1002])
            } else {
                #expect(s.detector.ejectedInstanceIDs == ["10.0.0.2:1001"], "passing checks leave the ejection alone")
                #expect(try s.pickedPorts() == [1000, 1002])
            }
            try await s.stop()
        }
    }

    @Test("an instance new to the set waits for its first passing check; one that leaves is forgotten")
    func newAndLeaving() async throws {
        let s = try await Setup(count: 3) { $0.initialJitter = .milliseconds(500) }
        try await s.clock.waitForSleepers(count: 3)
        #expect(s.detector.failingHealthCheckIDs.count == 3, "the first set waits for its checks")
        #expect(try s.pickedPorts() == [1000, 1001, 1002], "all waiting: panic, every instance takes traffic")
        s.clock.advance(by: .milliseconds(500))
        try await s.settle(rounds: 1)
        #expect(s.detector.failingHealthCheckIDs.isEmpty)

        // A fourth instance: out of picks until its first check passes.
        await s.cache.update(with: weighted([1, 1, 1, 1]))
        try await waitUntil { s.checker.statuses.count == 4 && s.clock.sleeperCount == 4 }
        #expect(s.checker.statuses["10.0.0.4:1003"]?.health == .unchecked)
        #expect(try s.pickedPorts() == [1000, 1001, 1002])
        s.clock.advance(by: .milliseconds(500))
        try await waitUntil { s.checker.statuses["10.0.0.4:1003"]?.checks == 1 }
        #expect(try s.pickedPorts() == [1000, 1001, 1002, 1003])

        // The second leaves: its check stops, its state goes.
        await s.cache.update(with: [weighted([1, 1, 1, 1])[0]] + weighted([1, 1, 1, 1])[2...])
        try await waitUntil { s.check.forgotten == ["10.0.0.2:1001"] && s.checker.statuses["10.0.0.2:1001"] == nil }
        #expect(Set(s.checker.statuses.keys) == ["10.0.0.1:1000", "10.0.0.3:1002", "10.0.0.4:1003"])
        try await s.stop()
        #expect(Set(s.check.forgotten) == ["10.0.0.1:1000", "10.0.0.2:1001", "10.0.0.3:1002", "10.0.0.4:1003"])
    }

    @Test("with newInstancesWaitForCheck off, instances take traffic until a check fails them")
    func trustNewInstances() async throws {
        let s = try await Setup(count: 3) {
            $0.newInstancesWaitForCheck = false
            $0.initialJitter = .milliseconds(500)
            $0.unhealthyThreshold = 1
        }
        try await s.clock.waitForSleepers(count: 3)
        #expect(s.detector.failingHealthCheckIDs.isEmpty)
        s.check.setFailing(1000, true)
        s.clock.advance(by: .milliseconds(500))
        try await s.settle(rounds: 1)
        #expect(try s.pickedPorts() == [1001, 1002])
        try await s.stop()
    }

    @Test("a stopped checker leaves every instance to passive ejection")
    func stopDetaches() async throws {
        let s = try await Setup(count: 3) { $0.unhealthyThreshold = 1 }
        s.check.setFailing(1000, true)
        try await s.settle(rounds: 1)
        #expect(try s.pickedPorts() == [1001, 1002])
        try await s.stop()
        #expect(try s.pickedPorts() == [1000, 1001, 1002])
        #expect(s.detector.failingHealthCheckIDs.isEmpty)
        // The detector takes another checker once the first has stopped.
        let second = try HealthChecker(s.detector, check: s.check, clock: s.clock)
        let run = Task { try await second.run() }
        try await waitUntil { second.statuses.count == 3 }
        run.cancel()
        try await run.value
    }

    @Test("an instance back from a failing check ramps up again under slow start")
    func slowStartAfterFailingCheck() async throws {
        let s = try await Setup(count: 4) { $0.unhealthyThreshold = 1 }
        let clock = s.clock
        let balancer = RoundRobinBalancer(
            s.cache, ejection: s.detector, slowStart: SlowStart(window: .seconds(10), now: { clock.now.offset }))
        func share() throws -> Double {
            let set = s.cache.snapshot
            let picks = try (0..<20_000).map { _ in set.instances[try balancer.pick().index].port }
            return Double(picks.filter { $0 == 1000 }.count) / Double(picks.count)
        }
        try await s.settle(rounds: 1)
        #expect(abs(try share() - 0.25) < 0.03, "the first set ramps nothing")
        s.check.setFailing(1000, true)
        try await s.round(2)
        #expect(try share() == 0)
        s.check.setFailing(1000, false)
        try await s.round(3)
        try await s.round(4)
        #expect(try share() < 0.07, "back after two passes: 10% of its share at first")
        for round in 5...14 { try await s.round(round) }
        #expect(abs(try share() - 0.25) < 0.03, "the full share after the window")
        try await s.stop()
    }

    @Test("bad configurations and a second checker on one detector are typed errors")
    func errors() async throws {
        let detector = OutlierDetector()
        let check = ScriptedHealthCheck()
        let bad: [(inout HealthChecker<ManualClock>.Configuration) -> Void] = [
            { $0.interval = .zero }, { $0.timeout = .seconds(-1) }, { $0.jitter = 1 }, { $0.jitter = -0.1 },
            { $0.initialJitter = .seconds(-1) }, { $0.unhealthyThreshold = 0 }, { $0.healthyThreshold = 0 },
        ]
        for configure in bad {
            #expect(throws: HealthCheckerError.self) {
                _ = try HealthChecker(detector, check: check, configuration: .defaults(configure), clock: ManualClock())
            }
        }
        let clock = ManualClock()
        let cache = await cache(weighted([1]))
        let attached = OutlierDetector(cache)
        let first = try HealthChecker(attached, check: check, clock: clock)
        let run = Task { try await first.run() }
        // The first checker has attached once it checks the instance.
        try await waitUntil { first.statuses.count == 1 }
        await #expect(throws: HealthCheckerError.detectorHasChecker) {
            try await HealthChecker(attached, check: check, clock: clock).run()
        }
        run.cancel()
        try await run.value
    }

    @Test("checks and failing instances are counted in the cache's metrics")
    func metrics() async throws {
        let metrics = TestMetrics()
        let s = try await Setup(count: 3, metrics: metrics) { $0.unhealthyThreshold = 1 }
        s.check.setFailing(1000, true)
        try await s.settle(rounds: 1)
        let service = ("service", "users")
        #expect(try metrics.expectCounter("loadbalancer_health_checks_total", [service, ("result", "passed")]).totalValue == 2)
        #expect(try metrics.expectCounter("loadbalancer_health_checks_total", [service, ("result", "failed")]).totalValue == 1)
        #expect(try metrics.expectGauge("loadbalancer_instances_failing_health_check", [service]).lastValue == 1)
        s.check.setFailing(1000, false)
        try await s.round(2)
        try await s.round(3)
        #expect(try metrics.expectGauge("loadbalancer_instances_failing_health_check", [service]).lastValue == 0)
        try await s.stop()
    }
}
