import InMemoryTracing
import LoadBalancer
import LoadBalancerTestKit
import MetricsTestKit
import Synchronization
import Testing
import Tracing

/// `n` endpoints answering their port, on ports 1000, 1001, ...
private func fixedEndpoints(_ n: Int, weights: [Int]? = nil) -> [Endpoint<Int, Int>] {
    (0..<n).map { i in
        let instance = try! Instance(host: "10.0.0.\(i + 1)", port: 1000 + i, weight: weights?[i] ?? 1)
        return Endpoint<Int, Int>(instance: instance) { _ in instance.port }
    }
}

@Suite("Balancer state and pick explanations")
struct ObservationTests {
    @Test("picks are counted per instance while observed, per interval, and not at all otherwise")
    func pickCounts() async throws {
        let endpoints = await cache(weighted([1, 1, 1]))
        let balancer = RoundRobinBalancer(endpoints, start: 0, rotation: .exact)
        for _ in 0..<50 { _ = try balancer.pick() } // Nobody observes: nothing is counted.

        let observer = balancer.observe()
        let empty = observer.state()
        #expect(empty.instances.map(\.picks) == [0, 0, 0])
        #expect(empty.instances.map(\.share) == [0, 0, 0])
        #expect(empty.balancer == "RoundRobinBalancer")

        for _ in 0..<300 { _ = try balancer.pick() }
        let first = observer.state()
        #expect(first.instances.map(\.id) == ["10.0.0.1:1000", "10.0.0.2:1001", "10.0.0.3:1002"])
        #expect(first.instances.map(\.picks) == [100, 100, 100])
        #expect(first.picks == 300)
        #expect(first.instances.allSatisfy { abs($0.share - 1.0 / 3) < 1e-9 })
        #expect(first.instances.allSatisfy { $0.usable && $0.ejection == nil && $0.health == .notChecked && $0.slowStartFactor == 1 })
        #expect(first.instances.allSatisfy { $0.inFlight == nil && $0.latencyEstimate == nil && $0.successRate == nil })
        #expect(!first.panic && first.levels.isEmpty)

        // Leases and calls count too; the next state holds only the picks since the last one.
        for _ in 0..<30 { _ = try await balancer.call(0) }
        #expect(observer.state().instances.map(\.picks) == [10, 10, 10])

        observer.stop()
        for _ in 0..<30 { _ = try balancer.pick() }
        let later = balancer.observe()
        #expect(later.state().picks == 0, "picks made while nobody observed are not counted")
    }

    @Test("picks from many threads at once are all counted (per-shard counters, summed when read)")
    func concurrentCounts() async throws {
        let endpoints = await cache(weighted([1, 1, 1, 1]))
        let balancer = RandomBalancer(endpoints)
        let observer = balancer.observe()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask { for _ in 0..<5_000 { _ = try? balancer.pick() } }
            }
        }
        let state = observer.state()
        #expect(state.picks == 40_000)
        #expect(state.instances.allSatisfy { $0.picks > 8_000 && $0.picks < 12_000 }, "\(state.instances.map(\.picks))")
    }

    @Test("P2C: calls in flight, the latency estimate and the success rate of each instance")
    func p2cLoad() async throws {
        let time = TestTime()
        time.advance(.seconds(1))
        let balancer = P2CBalancer<Int, Int>(endpoints: fixedEndpoints(2), metric: .peakEWMA(), seed: 1, now: { time.now })
        let observer = balancer.observe()
        let held = try balancer.lease()
        var state = observer.state()
        let heldIndex = try #require(state.instances.firstIndex { $0.id == held.endpoint.id })
        #expect(state.instances[heldIndex].inFlight == 1)
        #expect(state.instances[1 - heldIndex].inFlight == 0)
        #expect(state.inFlight == 1)
        #expect(state.instances.allSatisfy { $0.latencyEstimate == nil && $0.successRate == nil }, "no call has ended")

        balancer.finish(held, outcome: .success, latency: .milliseconds(20))
        state = observer.state()
        #expect(state.instances[heldIndex].inFlight == 0)
        // The first latency replaces the estimate; no time has passed since, so nothing decayed.
        #expect(state.instances[heldIndex].latencyEstimate == .milliseconds(20))
        #expect(state.instances[heldIndex].successRate == 1)

        let failed = try balancer.lease()
        balancer.finish(failed, outcome: .failure, latency: .milliseconds(1))
        state = observer.state()
        let failedIndex = try #require(state.instances.firstIndex { $0.id == failed.endpoint.id })
        // One failure moves the failure average by the default weight 0.1.
        let success = try #require(state.instances[failedIndex].successRate)
        #expect(abs(success - 0.9) < 1e-9, "\(success)")
        #expect(state.picks == 1)
    }

    @Test("ejections: why, until when and how long is left; panic when too few are healthy")
    func ejections() async throws {
        let time = TestTime()
        let endpoints = await cache(weighted([1, 1, 1, 1]))
        let detector = OutlierDetector(
            endpoints,
            configuration: .defaults {
                $0.consecutiveFailures = 2
                $0.failureRate = nil
                $0.maxEjectionPercent = 50
                $0.panicThreshold = 0.6
            }, now: { time.now })
        let balancer = RoundRobinBalancer(endpoints, ejection: detector)
        let observer = balancer.observe()
        report(detector, endpoints, port: 1001, .success)
        report(detector, endpoints, port: 1001, .failure)
        report(detector, endpoints, port: 1003, .failure, latency: .milliseconds(2))
        report(detector, endpoints, port: 1003, .failure)
        var state = observer.state()
        #expect(state.ejected == 1)
        let ejected = try #require(state.instances[3].ejection)
        #expect(ejected.reason == .consecutiveFailures)
        #expect(ejected.until == .seconds(30) && ejected.remaining == .seconds(30) && ejected.count == 1)
        #expect(!state.instances[3].usable && state.instances[0].usable)
        #expect(state.instances[1].successRate == 0.5, "the detector's interval: one success, one failure")
        #expect(state.instances[0].successRate == nil, "no call yet")
        #expect(!state.panic, "3 of 4 healthy is above 60%")

        time.advance(.seconds(10))
        state = observer.state()
        #expect(state.instances[3].ejection?.remaining == .seconds(20))

        // A second ejection leaves 2 of 4 healthy, under 60%: panic, every instance takes calls.
        report(detector, endpoints, port: 1000, .failure)
        report(detector, endpoints, port: 1000, .failure)
        state = observer.state()
        #expect(state.ejected == 2)
        #expect(state.panic)
        #expect(state.instances.allSatisfy { $0.usable })

        // Back from the first ejection: on probation.
        time.advance(.seconds(20))
        report(detector, endpoints, port: 1002, .success)
        state = observer.state()
        #expect(state.instances[3].ejection == nil && state.instances[3].probation)
    }

    @Test("health checks: failing until the first pass, then passing")
    func healthChecks() async throws {
        let endpoints = await cache(weighted([1, 1]))
        let detector = OutlierDetector(endpoints, configuration: .defaults { $0.consecutiveFailures = 0 })
        let balancer = RoundRobinBalancer(endpoints, ejection: detector)
        let observer = balancer.observe()
        #expect(observer.state().instances.map(\.health) == [.notChecked, .notChecked])
        let view = try detector.attachHealthChecker(newInstancesWaitForCheck: true) { _ in }
        var state = observer.state()
        #expect(state.healthChecked)
        #expect(state.instances.map(\.health) == [.failing, .failing])
        detector.healthCheckChanged(slot: view.slots[0], id: view.instances[0].id, passing: true, endsEjection: false)
        state = observer.state()
        #expect(state.instances.map(\.health) == [.passing, .failing])
        #expect(state.instances[0].usable, "one of two passing is the panic threshold's 50%: not panic")
        #expect(!state.instances[1].usable)
    }

    @Test("priority levels: each level's share, health and panic")
    func priorityLevels() async throws {
        let (endpoints, detector) = await levels([0, 0, 1, 1])
        let balancer = PriorityBalancer(endpoints, ejection: detector)
        let observer = balancer.observe()
        #expect(
            observer.state().levels == [
                PriorityLevelState(priority: 0, share: 100, panic: false, healthy: 2, total: 2),
                PriorityLevelState(priority: 1, share: 0, panic: false, healthy: 2, total: 2),
            ])
        report(detector, endpoints, port: 1000, .failure)
        let state = observer.state()
        // Level 0 at half health × 1.4 takes 70%; level 1 the rest.
        #expect(state.levels.map(\.share) == [70, 30])
        #expect(state.levels.map(\.healthy) == [1, 2])
        #expect(state.instances.map(\.usable) == [false, true, true, true])
        #expect(state.instances.map(\.priority) == [0, 0, 1, 1])
    }

    @Test("slow start: a new instance's factor ramps over the window")
    func slowStartFactor() async throws {
        let time = TestTime()
        let endpoints = EndpointCache<Int, Int>(factory: .calling { instance, _ in instance.port })
        await endpoints.update(with: weighted([1, 1]))
        let balancer = RoundRobinBalancer(endpoints, slowStart: SlowStart(window: .seconds(10), now: { time.now }))
        let observer = balancer.observe()
        #expect(observer.state().instances.map(\.slowStartFactor) == [1, 1])
        await endpoints.update(with: weighted([1, 1, 1]))
        #expect(observer.state().instances.map(\.slowStartFactor) == [1, 1, 0.1])
        time.advance(.seconds(5))
        #expect(observer.state().instances.map(\.slowStartFactor) == [1, 1, 0.5])
    }

    @Test("P2C explanations: the two candidates and their costs; explained picks are the plain picks")
    func p2cExplanations() async throws {
        let endpoints = fixedEndpoints(5)
        let plain = P2CBalancer<Int, Int>(endpoints: endpoints, metric: .leastOutstanding, seed: 42)
        let explained = P2CBalancer<Int, Int>(endpoints: endpoints, metric: .leastOutstanding, seed: 42)
        let observer = explained.observe(explainingEvery: 1)
        #expect(plain.observe().explanations().isEmpty)
        var held: [(EndpointLease<Int, Int>, EndpointLease<Int, Int>)] = []
        for _ in 0..<60 {
            let a = try plain.lease()
            let b = try explained.lease()
            #expect(a.endpoint.id == b.endpoint.id, "the explained path draws as the plain one")
            held.append((a, b))
        }
        let explanations = observer.explanations()
        #expect(explanations.count == 60)
        for (explanation, (_, lease)) in zip(explanations, held) {
            #expect(explanation.balancer == "P2CBalancer")
            #expect(explanation.instanceID == lease.endpoint.id)
            #expect(explanation.candidates.count == 2)
            let winner = try #require(explanation.candidates.first { $0.instanceID == explanation.instanceID })
            let other = try #require(explanation.candidates.first { $0.instanceID != explanation.instanceID })
            #expect(winner.cost <= other.cost)
            #expect(winner.cost == Double(winner.inFlight + 1), "least outstanding: in flight + 1")
            #expect(explanation.description.contains(" vs "))
        }
        #expect(observer.explanations().isEmpty, "taken once")
        for (a, b) in held {
            plain.finish(a, outcome: .success, latency: .milliseconds(1))
            explained.finish(b, outcome: .success, latency: .milliseconds(1))
        }
    }

    @Test("sampling: one pick in N is explained")
    func sampling() async throws {
        let balancer = RoundRobinBalancer<Int, Int>(endpoints: fixedEndpoints(3), start: 0)
        let observer = balancer.observe(explainingEvery: 10)
        for _ in 0..<100 { _ = try balancer.pick() }
        let explanations = observer.explanations()
        #expect(explanations.count == 10)
        #expect(explanations.allSatisfy { $0.candidates.isEmpty && $0.level == nil && $0.ring == nil })
        #expect(observer.state().picks == 100)
    }

    @Test("priority and consistent-hash explanations: the level drawn, the key's ring position")
    func levelAndRing() async throws {
        let (endpoints, detector) = await levels([0, 0, 1, 1])
        report(detector, endpoints, port: 1000, .failure)
        let priority = PriorityBalancer(endpoints, ejection: detector)
        let observer = priority.observe(explainingEvery: 1)
        for _ in 0..<200 { _ = try priority.pick() }
        let explanations = observer.explanations()
        #expect(explanations.count == 200)
        for explanation in explanations {
            let level = try #require(explanation.level)
            #expect(level.priority == (explanation.instanceID.hasSuffix(":1001") ? 0 : 1), "\(explanation)")
            #expect(level.share == (level.priority == 0 ? 70 : 30))
        }
        #expect(Set(explanations.compactMap(\.level?.priority)) == [0, 1])

        let hashing = ConsistentHashBalancer<Int, Int>(endpoints: fixedEndpoints(4))
        let ring = hashing.observe(explainingEvery: 1)
        let lease = try hashing.lease(forKey: "user-7")
        let explanation = try #require(ring.explanations().first)
        let position = try #require(explanation.ring)
        #expect(position.hash == ConsistentHashBalancer<Int, Int>.stableHash("user-7"))
        #expect(position.tableSize == hashing.tableSize && (0..<hashing.tableSize).contains(position.entry))
        #expect(position.ownerID == lease.endpoint.id && explanation.instanceID == lease.endpoint.id && !position.movedOn)
        #expect(hashing.instances(forKey: "user-7").first?.id == lease.endpoint.id)
        hashing.finish(lease, outcome: .success, latency: .zero)
    }

    @Test("zone-aware routing: each zone's share, and the zone each explained pick drew")
    func zones() async throws {
        let instances = (0..<6).map { i in try! Instance(host: "10.0.0.\(i + 1)", port: 1000 + i, zone: ["a", "b"][i / 3]) }
        let endpoints = await cache(instances)
        let time = TestTime()
        let detector = OutlierDetector(
            endpoints,
            configuration: .defaults {
                $0.consecutiveFailures = 1
                $0.failureRate = nil
                $0.maxEjectionPercent = 100
                $0.panicThreshold = 0
            }, now: { time.now })
        let balancer = RandomBalancer(endpoints, ejection: detector, zones: ZoneAwareRouting(localZone: "a"))
        let observer = balancer.observe(explainingEvery: 1)
        #expect(observer.state().zoneShares == ["a": 1])
        // Two of zone a's three instances out: the zone keeps what its one healthy instance can
        // carry, the rest spills to zone b.
        report(detector, endpoints, port: 1000, .failure)
        report(detector, endpoints, port: 1001, .failure)
        let state = observer.state()
        let shareA = try #require(state.zoneShares["a"])
        let shareB = try #require(state.zoneShares["b"])
        #expect(shareA > 0 && shareA < 1 && abs(shareA + shareB - 1) < 1e-9, "\(state.zoneShares)")
        for _ in 0..<300 { _ = try balancer.pick() }
        let explanations = observer.explanations()
        #expect(explanations.count == 300)
        for explanation in explanations {
            let zone = try #require(explanation.zone)
            #expect(zone.name == (explanation.instanceID.hasSuffix(":1002") ? "a" : "b"), "\(explanation)")
            #expect(zone.share == (zone.name == "a" ? shareA : shareB))
        }
        let fromA = explanations.count { $0.zone?.name == "a" }
        #expect(abs(Double(fromA) / 300 - shareA) < 0.15, "\(fromA) of 300 against \(shareA)")
    }

    @Test("an explained pick is a span `loadbalancer.pick` with the event `loadbalancer.pick`")
    func spans() async throws {
        let tracer = InMemoryTracer()
        let endpoints = fixedEndpoints(3)
        let byID = Dictionary(uniqueKeysWithValues: endpoints.map { ($0.id, $0) })
        let cache = EndpointCache<Int, Int>(
            factory: EndpointFactory { instance in ManagedEndpoint(byID[instance.id]!) },
            instrumentation: LoadBalancerInstrumentation(service: "users", metrics: TestMetrics(), tracer: tracer)
        )
        await cache.update(with: endpoints.map(\.instance))
        let balancer = P2CBalancer(cache, metric: .leastOutstanding)
        _ = try await balancer.call(0)
        #expect(!tracer.finishedSpans.contains { $0.operationName == "loadbalancer.pick" }, "off by default")

        let observer = balancer.observe(explainingEvery: 1)
        let answer = try await balancer.call(0)
        let pick = try #require(tracer.finishedSpans.first { $0.operationName == "loadbalancer.pick" })
        let event = try #require(pick.events.first)
        #expect(event.name == "loadbalancer.pick")
        #expect(event.attributes["loadbalancer.instance"]?.toSpanAttribute() == SpanAttribute.string("10.0.0.\(answer - 999):\(answer)"))
        #expect(event.attributes["loadbalancer.service"]?.toSpanAttribute() == "users")
        #expect(event.attributes["loadbalancer.candidates"] != nil)
        #expect(observer.explanations().count == 1)
    }
}
