import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LoadBalancer
import LoadBalancerGRPC
import LoadBalancerTestKit
import MetricsTestKit
import Synchronization
import Testing

@Suite(
    "BalancingClientTransport: this library's balancers under a grpc-swift client", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct BalancingTransportTests {
    /// `count` sequential `Who` calls; the answers per server name.
    static func counts(_ client: GRPCClient<BalancingClientTransport>, _ count: Int) async throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for _ in 0..<count { counts[try await behavingWho(client), default: 0] += 1 }
        return counts
    }

    @Test("round robin spreads 300 unary calls evenly over three servers (per-thread rotation: within 20%)")
    func roundRobinSpreads() async throws {
        try await withBehavingServers(3) { servers in
            let publisher = FixedPublisher(try await servers.asyncMap { try await $0.instance() })
            try await withBalancingClient(publisher, configuration: .init(balancer: .roundRobin)) { client, _ in
                let counts = try await Self.counts(client, 300)
                for server in servers {
                    #expect((80...120).contains(counts[server.name, default: 0]), "\(counts)")
                }
            }
        }
    }

    @Test("P2C peak-EWMA sends few calls to a server ten times slower")
    func p2cAvoidsSlowServer() async throws {
        try await withBehavingServers(4) { servers in
            // 100 ms and 1 s: far above the latency this machine adds to a call when every suite
            // runs at once (up to a few hundred ms), so that the difference is the servers'.
            for server in servers { server.control.set { $0.delay = .milliseconds(100) } }
            servers[3].control.set { $0.delay = .seconds(1) }
            let publisher = FixedPublisher(try await servers.asyncMap { try await $0.instance() })
            // A decay time of 2 s, not the default 10 s: each server's first call (a new HTTP/2
            // connection's first stream) is slower than the rest, and peak EWMA holds that peak
            // for about the decay time, longer than these 200 calls take with 10 s.
            try await withBalancingClient(publisher, configuration: .init(balancer: .p2c(.peakEWMA(decayTime: .seconds(2))))) { client, _ in
                // Four concurrent callers, 50 calls each, each call timed as the balancer times it.
                let calls = try await withThrowingTaskGroup(of: [(server: String, latency: Duration)].self) { group in
                    for _ in 0..<4 {
                        group.addTask {
                            var calls: [(server: String, latency: Duration)] = []
                            for _ in 0..<50 {
                                let start = ContinuousClock.now
                                let server = try await behavingWho(client)
                                calls.append((server, .now - start))
                            }
                            return calls
                        }
                    }
                    return try await group.reduce(into: []) { $0 += $1 }
                }
                #expect(calls.count == 200)
                let counts = calls.reduce(into: [String: Int]()) { $0[$1.server, default: 0] += 1 }
                // Round robin would send every server 50. P2C learns the slow one is slow; as its
                // estimate decays it probes it again now and then: it gets at most two thirds of
                // what the least used fast server gets (about a third when the machine is quiet;
                // 29 against 56 seen with every suite running at once).
                let slow = counts[servers[3].name, default: 0]
                let leastFast = servers[0..<3].map { counts[$0.name, default: 0] }.min() ?? 0
                // That bound holds while the servers' delays are what tells them apart. A machine
                // busy enough to add about a second to every call (a fresh-clone CI run saw the 200
                // calls take 78 s: 1.5 s per call) leaves the slow server's calls less than twice
                // as long as the others', and P2C rightly sees less difference: then it must still
                // send the slow one fewer calls than any fast one.
                let fastCalls = calls.filter { $0.server != servers[3].name }.map { $0.latency.secondsValue }
                let slowCalls = calls.filter { $0.server == servers[3].name }.map { $0.latency.secondsValue }
                let seenRatio =
                    slowCalls.isEmpty || fastCalls.isEmpty
                    ? 10 : (slowCalls.reduce(0, +) / Double(slowCalls.count)) / (fastCalls.reduce(0, +) / Double(fastCalls.count))
                if seenRatio >= 4 {
                    #expect(slow * 3 <= leastFast * 2, "\(counts), slow calls \(seenRatio)x as long")
                } else {
                    #expect(slow < leastFast, "\(counts), slow calls only \(seenRatio)x as long")
                }
            }
        }
    }

    @Test("a server failing with unavailable is ejected; a server answering notFound is not (failure codes)")
    func failureCodesAndEjection() async throws {
        try await withBehavingServers(3) { servers in
            servers[1].control.set { $0.failure = .unavailable }
            servers[2].control.set { $0.failure = .notFound }
            let publisher = FixedPublisher(try await servers.asyncMap { try await $0.instance() })
            var detection = OutlierDetector.Configuration()
            detection.interval = .milliseconds(100)
            // Ejected for longer than the test can take on the most loaded machine (the default 30 s
            // ran out once while every suite and two other builds ran: the server came back on
            // probation and took a call).
            detection.baseEjectionTime = .seconds(600)
            detection.maxEjectionTime = .seconds(600)
            var configuration = BalancingClientTransport.Configuration(balancer: .roundRobin, outlierDetection: detection)
            configuration.failureCodes = [.unavailable]
            try await withBalancingClient(publisher, configuration: configuration) { client, transport in
                let detector = try #require(transport.outlierDetector)
                var failures: [RPCError.Code: Int] = [:]
                func call() async {
                    do {
                        _ = try await behavingWho(client)
                    } catch let error as RPCError {
                        failures[error.code, default: 0] += 1
                    } catch {
                        failures[.unknown, default: 0] += 1
                    }
                }
                try await eventually("server 1 is ejected") {
                    for _ in 0..<10 { await call() }
                    return !detector.ejectedInstanceIDs.isEmpty
                }
                #expect(detector.ejectedInstanceIDs == [try await servers[1].instance().id])
                // Picks follow the detector's version, moved inside the ejection's critical
                // section; calls already past their pick may still land. Wait until ten calls in a
                // row miss server 1.
                try await eventually("the ejection in effect for picks") {
                    let calls = servers[1].calls
                    for _ in 0..<10 { await call() }
                    return servers[1].calls == calls
                }
                // Ejected: the next 60 calls reach only servers 0 and 2 (the ejection lasts 600 s).
                let before = (servers[0].calls, servers[1].calls, servers[2].calls)
                failures = [:]
                for _ in 0..<60 { await call() }
                #expect(servers[1].calls == before.1, "the ejected server got calls")
                // Round robin rotates per thread, so the split of the 60 is near, not exactly, even.
                let (toZero, toTwo) = (servers[0].calls - before.0, servers[2].calls - before.2)
                #expect(toZero + toTwo == 60)
                #expect(toTwo >= 20, "notFound is the application's answer, not a failure: server 2 stays in the set")
                #expect(failures == [.notFound: toTwo], "\(failures)")
            }
        }
    }

    @Test("a server failing 20% of its calls with unavailable is ejected by its failure rate")
    func failureRateEjection() async throws {
        try await withBehavingServers(4) { servers in
            servers[3].control.set {
                $0.failure = .unavailable
                $0.failEvery = 5
            }
            let publisher = FixedPublisher(try await servers.asyncMap { try await $0.instance() })
            var detection = OutlierDetector.Configuration()
            // Only the failure-rate rule; judged on 5 calls (the server fails every fifth call, so
            // any 5 of its calls in a row hold a failure) every 10 s: long enough for the failing
            // server to get 5 calls even when every suite runs at once and a call takes a second.
            detection.interval = .seconds(10)
            detection.consecutiveFailures = 0
            detection.failureRate = .init(minimumRequests: 5)
            // Out for the rest of the test, however slowly a loaded machine runs its calls.
            detection.baseEjectionTime = .seconds(600)
            detection.maxEjectionTime = .seconds(600)
            try await withBalancingClient(publisher, configuration: .init(balancer: .roundRobin, outlierDetection: detection)) {
                client, transport in
                let detector = try #require(transport.outlierDetector)
                let failing = try await servers[3].instance().id
                var failures = 0
                try await eventually("server 3 is ejected", timeout: .seconds(90)) {
                    failures += try await withThrowingTaskGroup(of: Int.self) { group in
                        for _ in 0..<4 {
                            group.addTask {
                                var failed = 0
                                for _ in 0..<10 {
                                    do { _ = try await behavingWho(client) } catch { failed += 1 }
                                }
                                return failed
                            }
                        }
                        return try await group.reduce(0, +)
                    }
                    return detector.ejectedInstanceIDs.contains(failing)
                }
                #expect(detector.ejectedInstanceIDs == [failing])
                #expect(failures > 0, "the failing server's failures reached the caller before its ejection")
                let before = servers[3].calls
                for _ in 0..<20 { #expect(try await behavingWho(client) != servers[3].name) }
                #expect(servers[3].calls == before)
            }
        }
    }

    @Test("metrics count each instance's RPCs and failures (by the failure codes)")
    func metrics() async throws {
        try await withBehavingServers(3) { servers in
            servers[1].control.set { $0.failure = .unavailable }
            servers[2].control.set { $0.failure = .notFound }
            let instances = try await servers.asyncMap { try await $0.instance() }
            let metrics = TestMetrics()
            let instrumentation = LoadBalancerInstrumentation(service: "behaving", metrics: metrics)
            try await withBalancingClient(
                FixedPublisher(instances), configuration: .init(balancer: .roundRobin), instrumentation: instrumentation
            ) {
                client, _ in
                for _ in 0..<30 { _ = try? await behavingWho(client) }
                let service = ("service", "behaving")
                var requests = 0
                for (server, instance) in zip(servers, instances) {
                    let calls = try metrics.expectCounter("loadbalancer_requests_total", [service, ("instance", instance.id)]).totalValue
                    #expect(calls == Int64(server.calls), "\(server.name)")
                    requests += Int(calls)
                }
                #expect(requests == 30)
                let failures = try metrics.expectCounter("loadbalancer_failures_total", [service, ("instance", instances[1].id)]).totalValue
                #expect(failures == Int64(servers[1].calls), "unavailable is a failure")
                #expect(servers[1].calls > 0)
                let notFound = try? metrics.expectCounter("loadbalancer_failures_total", [service, ("instance", instances[2].id)])
                #expect((notFound?.totalValue ?? 0) == 0, "notFound is the application's answer")
            }
        }
    }

    @Test("server-streaming calls are balanced; a held stream counts as in flight until it ends")
    func streamsCountInFlight() async throws {
        try await withBehavingServers(2) { servers in
            let publisher = FixedPublisher(try await servers.asyncMap { try await $0.instance() })
            try await withBalancingClient(publisher, configuration: .init(balancer: .p2c(.leastOutstanding))) { client, _ in
                let messages = try await behavingCount(client, "5")
                #expect(messages.count == 5)
                let server = try #require(messages.first?.split(separator: " ").first.map(String.init))
                #expect(messages == (0..<5).map { "\(server) \($0)" })

                // Hold one stream open: least-outstanding sends every other call to the other server.
                let held = Task { try await behavingCount(client, "hold 2") }
                try await eventually("a stream is held") { servers.contains { $0.control.holding.load(ordering: .relaxed) == 1 } }
                let holder = try #require(servers.first { $0.control.holding.load(ordering: .relaxed) == 1 })
                let other = try #require(servers.first { $0.name != holder.name })
                let counts = try await Self.counts(client, 40)
                #expect(counts == [other.name: 40], "\(counts)")
                holder.control.released.store(true, ordering: .relaxed)
                let heldMessages = try await held.value
                #expect(heldMessages == ["\(holder.name) 0", "\(holder.name) 1"])
                // Ended: both get calls again.
                let again = try await Self.counts(client, 40)
                #expect(again.count == 2, "\(again)")
            }
        }
    }

    @Test("a removed instance gets no new calls and its open stream finishes; an added one gets calls")
    func drainsRemovedInstance() async throws {
        try await withBehavingServers(2) { servers in
            let instances = try await servers.asyncMap { try await $0.instance() }
            let publisher = FixedPublisher(instances)
            var configuration = BalancingClientTransport.Configuration(balancer: .roundRobin)
            // The held stream must finish by itself: a drain timeout (30 s by default) that a
            // loaded machine's slow steps outlast would cut it, as the next test shows on purpose.
            configuration.drainTimeout = .seconds(600)
            try await withBalancingClient(publisher, configuration: configuration) { client, _ in
                _ = try await Self.counts(client, 4)
                let stream = try await Self.holdStreamOnServerOne(servers, client)
                publisher.replace(with: [instances[0]])
                try await eventually("calls no longer reach server 1") {
                    let before = servers[1].calls
                    // A call whose stream was on server 1's connection as it began to close can
                    // fail with unavailable ("Stream unexpectedly closed"; no retry policy here,
                    // see the README's "Instances coming and going"); the calls after must not
                    // reach it. A full run of the suites on two cores saw it.
                    do {
                        _ = try await Self.counts(client, 4)
                    } catch let error as RPCError where error.code == .unavailable {}
                    return servers[1].calls == before
                }
                let removedCalls = servers[1].calls
                #expect(try await Self.counts(client, 20) == [servers[0].name: 20])
                #expect(servers[1].calls == removedCalls)
                // The held stream on the removed instance still finishes.
                servers[1].control.released.store(true, ordering: .relaxed)
                #expect(try await stream.value == (0..<3).map { "\(servers[1].name) \($0)" })

                publisher.replace(with: instances)
                try await eventually("the re-added server gets calls") {
                    let before = servers[1].calls
                    // As above: a call that met a connection as the set changed may fail with
                    // unavailable; the server must get calls after.
                    do {
                        _ = try await Self.counts(client, 4)
                    } catch let error as RPCError where error.code == .unavailable {}
                    return servers[1].calls > before
                }
            }
        }
    }

    /// A "hold 3" stream held open by server 1 of two (round robin: tried until one lands there).
    static func holdStreamOnServerOne(
        _ servers: [BehavingServer],
        _ client: GRPCClient<BalancingClientTransport>
    ) async throws -> Task<[String], any Error> {
        for _ in 0..<8 {
            let task = Task { try await behavingCount(client, "hold 3") }
            try await eventually("a stream is held") { servers.contains { $0.control.holding.load(ordering: .relaxed) == 1 } }
            if servers[1].control.holding.load(ordering: .relaxed) == 1 { return task }
            servers[0].control.released.store(true, ordering: .relaxed)
            _ = try await task.value
            servers[0].control.released.store(false, ordering: .relaxed)
        }
        throw RPCError(code: .internalError, message: "no stream landed on server 1 in 8 tries")
    }

    @Test("a removed instance's stream that does not end is cut at the drain timeout")
    func drainTimeoutCutsStream() async throws {
        try await withBehavingServers(2) { servers in
            let instances = try await servers.asyncMap { try await $0.instance() }
            let publisher = FixedPublisher(instances)
            var configuration = BalancingClientTransport.Configuration(balancer: .roundRobin)
            configuration.drainTimeout = .milliseconds(300)
            try await withBalancingClient(publisher, configuration: configuration) { client, _ in
                _ = try await Self.counts(client, 4)
                let stream = try await Self.holdStreamOnServerOne(servers, client)
                publisher.replace(with: [instances[0]])
                // Server 1 keeps holding the stream (for up to a minute); the drain timeout closes
                // its connection long before, and the stream fails instead of finishing.
                await #expect(throws: RPCError.self) { _ = try await stream.value }
                let released = servers[1].control.released.load(ordering: .relaxed)
                #expect(!released, "the server let the stream go by itself")
                // Server 0 still answers.
                #expect(try await Self.counts(client, 4) == [servers[0].name: 4])
            }
        }
    }

    @Test("with a retry policy, no call fails while servers are removed and added 30 times")
    func changesUnderLoad() async throws {
        try await withBehavingServers(3) { servers in
            let instances = try await servers.asyncMap { try await $0.instance() }
            let publisher = FixedPublisher(instances)
            var configuration = BalancingClientTransport.Configuration(balancer: .roundRobin)
            configuration.serviceConfig = retryingUnavailable(service: "loadbalancer.test.Behaving")
            try await withBalancingClient(publisher, configuration: configuration) { client, _ in
                let result = try await callsWhileLastComesAndGoes(
                    publisher, instances: instances, callers: 2, callsToLast: { servers[2].calls },
                    call: { _ = try await behavingWho(client) }
                )
                #expect(result.calls > 0)
                #expect(result.failures.isEmpty, "\(result.failures.count) of \(result.calls) calls failed: \(result.failures.prefix(3))")
            }
        }
    }

    @Test("grpc-swift's hedging policy applies: a call whose first attempt is on a slow server is answered by the other")
    func hedgingPolicyApplies() async throws {
        try await withBehavingServers(2) { servers in
            servers[0].control.set { $0.delay = .seconds(5) }
            let publisher = FixedPublisher(try await servers.asyncMap { try await $0.instance() })
            // Least outstanding: a first attempt goes to either server; while it is in flight on
            // the slow one, the hedge (a fresh pick 50 ms later) goes to the fast one.
            var configuration = BalancingClientTransport.Configuration(balancer: .p2c(.leastOutstanding))
            let hedging = HedgingPolicy(maxAttempts: 2, hedgingDelay: .milliseconds(50), nonFatalStatusCodes: [])
            configuration.serviceConfig = ServiceConfig(
                methodConfig: [
                    MethodConfig(names: [MethodConfig.Name(service: "loadbalancer.test.Behaving")], executionPolicy: .hedge(hedging))
                ]
            )
            try await withBalancingClient(publisher, configuration: configuration) { client, _ in
                for _ in 0..<10 {
                    let answer = try await behavingWho(client)
                    #expect(answer == servers[1].name)
                }
                #expect(servers[0].calls >= 1, "no first attempt reached the slow server")
            }
        }
    }

    @Test("consistent hashing keeps a key's calls on one server; keys spread over all")
    func affinity() async throws {
        try await withBehavingServers(3) { servers in
            let publisher = FixedPublisher(try await servers.asyncMap { try await $0.instance() })
            try await withBalancingClient(publisher, configuration: .init(balancer: .consistentHash())) { client, _ in
                var serverOfKey: [String: String] = [:]
                for key in (0..<60).map({ "user-\($0)" }) {
                    var answers = Set<String>()
                    for _ in 0..<5 {
                        answers.insert(try await GRPCRequestKey.$current.withValue(key) { try await behavingWho(client) })
                    }
                    #expect(answers.count == 1, "key \(key) went to \(answers)")
                    serverOfKey[key] = answers.first
                }
                #expect(Set(serverOfKey.values).count == 3, "60 keys should reach all three servers")
            }
        }
    }

    @Test("affinity by a metadata key: a key's calls and their retries stay on one server; keys spread over all")
    func affinityByMetadata() async throws {
        try await withBehavingServers(3) { servers in
            let publisher = FixedPublisher(try await servers.asyncMap { try await $0.instance() })
            var configuration = BalancingClientTransport.Configuration(balancer: .consistentHash())
            configuration.affinityMetadataKey = "X-User-ID"
            configuration.serviceConfig = retryingUnavailable(service: "loadbalancer.test.Behaving", initialBackoff: .milliseconds(1))
            try await withBalancingClient(publisher, configuration: configuration) { client, _ in
                var serverOfKey: [String: String] = [:]
                for key in (0..<60).map({ "user-\($0)" }) {
                    var answers = Set<String>()
                    for _ in 0..<3 { answers.insert(try await behavingWho(client, metadata: ["x-user-id": .string(key)])) }
                    #expect(answers.count == 1, "key \(key) went to \(answers)")
                    serverOfKey[key] = answers.first
                }
                #expect(Set(serverOfKey.values).count == 3, "60 keys should reach all three servers")

                // Every other call fails with unavailable: the retries of a key's calls go to the
                // key's server too (no other server sees a call).
                for server in servers {
                    server.control.set {
                        $0.failure = .unavailable
                        $0.failEvery = 2
                    }
                }
                for key in ["user-1", "user-2", "user-3"] {
                    let home = try #require(servers.first { $0.name == serverOfKey[key] })
                    let before = servers.map(\.calls)
                    for _ in 0..<4 { #expect(try await behavingWho(client, metadata: ["x-user-id": .string(key)]) == home.name) }
                    let delta = zip(servers.map(\.calls), before).map { $0 - $1 }
                    for (server, calls) in zip(servers, delta) where server.name != home.name {
                        #expect(calls == 0, "\(server.name) got \(calls) of key \(key)'s attempts")
                    }
                    #expect(
                        delta[servers.firstIndex { $0.name == home.name }!] >= 7, "4 calls, every other attempt failing: at least 3 retries"
                    )
                }
                // A call without the key still succeeds (a random server).
                for server in servers { server.control.set { $0.failure = nil } }
                _ = try await behavingWho(client)
            }
        }
    }

    @Test("after beginGracefulShutdown new calls fail with failedPrecondition and connect() returns")
    func gracefulShutdown() async throws {
        try await withBehavingServers(1) { servers in
            let publisher = FixedPublisher([try await servers[0].instance()])
            let transport = BalancingClientTransport(publisher: publisher, configuration: .init(balancer: .roundRobin))
            let connection = Task { try await transport.connect() }
            let client = GRPCClient(transport: transport)
            let running = Task { try await client.runConnections() }
            #expect(try await behavingWho(client) == servers[0].name)
            transport.beginGracefulShutdown()
            let error = await #expect(throws: RPCError.self) {
                try await transport.withStream(descriptor: BehavingService.who, options: .defaults) { _, _ in 0 }
            }
            #expect(error?.code == .failedPrecondition)
            try await connection.value
            client.beginGracefulShutdown()
            running.cancel()
            _ = try? await running.value
        }
    }

    @Test("method configuration is looked up by method, then service, then the default entry")
    func methodConfigLookup() async throws {
        let method = MethodConfig(names: [MethodConfig.Name(service: "a.S", method: "M")], timeout: .seconds(1))
        let service = MethodConfig(names: [MethodConfig.Name(service: "a.S")], timeout: .seconds(2))
        let fallback = MethodConfig(names: [MethodConfig.Name(service: "")], timeout: .seconds(3))
        var configuration = BalancingClientTransport.Configuration()
        configuration.serviceConfig = ServiceConfig(methodConfig: [fallback, service, method])
        let transport = BalancingClientTransport(publisher: FixedPublisher([]), configuration: configuration)
        #expect(transport.config(forMethod: MethodDescriptor(fullyQualifiedService: "a.S", method: "M"))?.timeout == .seconds(1))
        #expect(transport.config(forMethod: MethodDescriptor(fullyQualifiedService: "a.S", method: "N"))?.timeout == .seconds(2))
        #expect(transport.config(forMethod: MethodDescriptor(fullyQualifiedService: "b.T", method: "M"))?.timeout == .seconds(3))
        #expect(
            BalancingClientTransport(publisher: FixedPublisher([])).config(
                forMethod: MethodDescriptor(fullyQualifiedService: "a.S", method: "M")) == nil)
    }
}
