import ConsulTestServer
import LoadBalancer
import LoadBalancerConsul
import LoadBalancerTestKit
import LoadBalancerTestServers
import Logging
import ServiceLifecycle
import Testing

@Suite("ConsulRegistrar against the Consul-API test server", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct ConsulRegistrarTests {
    /// The instance every test registers: weight 5, two tags, one metadata key.
    func instance() throws -> Instance {
        try Instance(host: "10.0.0.7", port: 8080, weight: 5, tags: ["v2", "eu"], metadata: ["version": "1.2.3"])
    }

    /// Its options: the id `web-1` on the agent, warning weight 2, and the check.
    func options(ttl: Duration, deregisterAfter: Duration? = nil, checkID: String? = nil) -> ConsulRegistrationOptions {
        ConsulRegistrationOptions(
            id: "web-1",
            warningWeight: 2,
            check: .init(ttl: ttl, checkID: checkID, deregisterCriticalServiceAfter: deregisterAfter)
        )
    }

    /// A registrar of ``instance()`` as `web`, with ``options(ttl:deregisterAfter:checkID:)``.
    func makeRegistrar(_ options: ConsulRegistrationOptions, client: ConsulClient) throws -> ConsulRegistrar {
        ConsulRegistrar(instance: try instance(), service: "web", client: client, options: options)
    }

    @Test("a registrar whose client is shut down ends, instead of retrying forever")
    func clientShutDown() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        let consul = client(server)
        let registrar = try makeRegistrar(options(ttl: .seconds(2)), client: consul)
        let ended = Flag()
        let running = Task {
            try? await registrar.run()
            ended.set()
        }
        defer { running.cancel() }
        try await waitUntil { server.service(id: "web-1") != nil }
        await consul.shutdown()
        try await waitUntil(.seconds(10)) { ended.isSet }
    }

    @Test("registers, keeps the check passing past several TTLs, deregisters on graceful shutdown")
    func lifecycle() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        // A TTL long enough that a loaded 2-core machine does not stall a pass past it (a 600 ms TTL
        // lapsed once on CI, and a 1.5 s one once with the whole suite running beside it), short
        // enough that three TTLs pass in about ten seconds. Under a sanitizer it stretches with the
        // tests' other bounds (TestTimeScale), 15 s under ThreadSanitizer.
        let ttl = TestTimeScale.scaled(.seconds(3))
        let registrar = try makeRegistrar(options(ttl: ttl, deregisterAfter: .seconds(60), checkID: "web-1-ttl"), client: client(server))
        #expect(registrar.passInterval == ttl / 3)
        let publisher = ConsulPublisher(service: "web", client: client(server), configuration: fastConfiguration())
        let group = ServiceGroup(services: [registrar], logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let running = Task { try await group.run() }

        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.ids == ["10.0.0.7:8080"] }
            let instance = try #require(recorder.latest?.instances.first)
            #expect(instance.weight == 5)
            #expect(instance.tags == ["v2", "eu"])
            #expect(instance.metadata["version"] == "1.2.3")

            // What the agent holds: the registration as sent.
            let held = try #require(server.service(id: "web-1"))
            #expect(held.name == "web" && held.address == "10.0.0.7" && held.port == 8080)
            #expect(held.warningWeight == 2)
            let check = try #require(held.checks["web-1-ttl"])
            #expect(check.ttl == ttl)
            #expect(check.deregisterCriticalServiceAfter == .seconds(60))

            // Ten more passes (every TTL/3), over three TTLs: the check never lapsed.
            let start = ContinuousClock.now
            let passes = server.service(id: "web-1")?.checks["web-1-ttl"]?.passes ?? 0
            try await waitUntil(.seconds(30)) { (server.service(id: "web-1")?.checks["web-1-ttl"]?.passes ?? 0) >= passes + 10 }
            #expect(ContinuousClock.now - start >= ttl * 3)
            #expect(server.service(id: "web-1")?.checks["web-1-ttl"]?.status == "passing")
            let passTimes = server.requests.filter { $0.path == "/v1/agent/check/pass/web-1-ttl" }.map(\.time)
            let longestGap = zip(passTimes, passTimes.dropFirst()).map { $1 - $0 }.max() ?? .zero
            let seen = recorder.all.drop { $0.instances.isEmpty }
            #expect(
                seen.allSatisfy { $0.instances.map(\.id) == ["10.0.0.7:8080"] },
                "the instance left the passing set (longest gap between passes: \(longestGap))"
            )

            await group.triggerGracefulShutdown()
            try await running.value
            #expect(server.service(id: "web-1") == nil)
            #expect(server.requests.contains { $0.path == "/v1/agent/service/deregister/web-1" && $0.method == "PUT" })
            try await waitUntil { recorder.latest?.instances.isEmpty == true }
        }
        // Passes went to the check id that was set.
        #expect(server.requests.contains { $0.path == "/v1/agent/check/pass/web-1-ttl" })
    }

    @Test("cancelled, it deregisters too; the default check id is service:ID")
    func cancellation() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        let registrar = try makeRegistrar(options(ttl: .seconds(3)), client: client(server))
        let running = Task { try await registrar.run() }
        try await waitUntil { server.service(id: "web-1")?.checks["service:web-1"]?.status == "passing" }
        running.cancel()
        try await running.value
        #expect(server.service(id: "web-1") == nil)
    }

    @Test(
        "dying without deregistering: the check goes critical after the TTL, the instance leaves the passing set, then the agent removes it"
    )
    func diesWithoutDeregistering() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        let ttl = Duration.milliseconds(800)
        let registrar = try makeRegistrar(options(ttl: ttl, deregisterAfter: .seconds(1)), client: client(server))
        let publisher = ConsulPublisher(service: "web", client: client(server), configuration: fastConfiguration())
        try await withRunning(publisher) { recorder in
            let running = Task { try await registrar.run() }
            try await waitUntil { recorder.ids == ["10.0.0.7:8080"] }

            // The agent stops taking anything from this process (it is as good as dead): passes
            // and the deregistration fail.
            server.setFault(.status(500), for: .agent)
            let lastPass = ContinuousClock.now
            running.cancel()
            try await running.value
            #expect(server.requests.contains { $0.path == "/v1/agent/service/deregister/web-1" })
            #expect(server.service(id: "web-1") != nil, "the failed deregistration left the service registered")

            // One TTL after the last pass the check is critical, and `?passing` drops the instance.
            try await waitUntil(.seconds(10)) { recorder.latest?.instances.isEmpty == true }
            // The last good pass was at most a pass interval (TTL / 2) earlier, give or take the
            // scheduling of a loaded machine (a pass once ran 21 ms late in CI): not dropped at once.
            #expect(ContinuousClock.now - lastPass >= ttl / 4)
            #expect(recorder.error == nil)
            // Critical for DeregisterCriticalServiceAfter: the agent removes the service. The
            // registration asked for 1 s; Consul raises it to its one-minute minimum, so the
            // test moves the server's clock instead of waiting a minute.
            let check = try #require(server.service(id: "web-1")?.checks["service:web-1"])
            #expect(check.deregisterCriticalServiceAfter == .seconds(60))
            server.advanceTime(by: .seconds(30))
            #expect(server.service(id: "web-1") != nil, "removed before the one-minute minimum")
            server.advanceTime(by: .seconds(31))
            #expect(server.service(id: "web-1") == nil)
        }
    }

    @Test("an agent that forgot the check (it restarted) gets the registration again")
    func reregisters() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        let registrar = try makeRegistrar(options(ttl: .milliseconds(600)), client: client(server))
        let running = Task { try await registrar.run() }
        defer { running.cancel() }
        try await waitUntil { server.service(id: "web-1")?.checks["service:web-1"]?.status == "passing" }
        server.removeService(id: "web-1")
        try await waitUntil { server.service(id: "web-1")?.checks["service:web-1"]?.status == "passing" }
        let registrations = server.requests.filter { $0.path == "/v1/agent/service/register" }
        #expect(registrations.count == 2)
    }

    @Test("a registration Consul would reject is a typed error at once")
    func invalidRegistration() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        // An instance's port is valid by construction: an empty service name is what Consul rejects here.
        let registrar = ConsulRegistrar(instance: try instance(), service: "", client: client(server), options: options(ttl: .seconds(1)))
        await #expect(throws: ConsulError.self) { try await registrar.run() }
        var bad = ConsulServiceRegistration(instance: try instance(), service: "web", options: options(ttl: .seconds(1)))
        bad.port = 0
        await #expect(throws: ConsulError.self) { try await client(server).register(bad) }
        #expect(server.requests.isEmpty)
    }
}
