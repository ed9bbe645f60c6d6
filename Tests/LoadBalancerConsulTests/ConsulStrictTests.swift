import AsyncHTTPClient
import ConsulTestServer
import Foundation
import LoadBalancer
import LoadBalancerConsul
import LoadBalancerTestKit
import LoadBalancerTestServers
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Testing

/// An HTTP answer as the test saw it.
struct RawAnswer {
    var status: Int
    var headers: HTTPHeaders
    var body: String
}

/// Sends one request to the test server without the Consul client, to see what it answers.
func raw(
    _ server: ConsulTestServer,
    _ pathAndQuery: String,
    method: HTTPMethod = .GET,
    token: String? = nil,
    body: String? = nil,
    timeout: Duration = .seconds(5)
) async throws -> RawAnswer {
    var request = HTTPClientRequest(url: "http://127.0.0.1:\(server.port)\(pathAndQuery)")
    request.method = method
    if let token { request.headers.add(name: "X-Consul-Token", value: token) }
    if let body { request.body = .bytes(ByteBuffer(string: body)) } else if method == .PUT { request.body = .bytes(ByteBuffer()) }
    let (seconds, attoseconds) = timeout.components
    let response = try await HTTPClient.shared.execute(
        request, timeout: .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000))
    let bytes = try await response.body.collect(upTo: 1 << 20)
    return RawAnswer(status: Int(response.status.code), headers: response.headers, body: String(buffer: bytes))
}

/// The test server behaves as a real agent does where a lenient one would hide client bugs, and
/// the client copes with what a real agent does.
@Suite("Consul: what a real agent requires, against the strict test server", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct ConsulStrictTests {
    // MARK: Point 1: no Port

    @Test("a zero port is left out of the answer; the publisher reports that entry and publishes the others")
    func portOmitted() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "good", name: "web", address: "10.0.0.1", port: 80)
        server.addService(id: "portless", name: "web", address: "10.0.0.2", port: 0)
        server.addService(id: "socket", name: "web", address: "10.0.0.3", port: 0, socketPath: "/run/web.sock")
        let answer = try await raw(server, "/v1/health/service/web")
        #expect(answer.status == 200)
        let object = try JSONSerialization.jsonObject(with: Data(answer.body.utf8))
        let list = try #require(object as? [[String: Any]])
        let services = list.compactMap { $0["Service"] as? [String: Any] }
        #expect(services.count == 3)
        let portless = services.filter { !$0.keys.contains("Port") }.count
        #expect(portless == 2, "\(answer.body)")
        #expect(services.contains { $0["SocketPath"] as? String == "/run/web.sock" })

        let consul = client(server)
        defer { Task { await consul.shutdown() } }
        let publisher = ConsulPublisher(service: "web", client: consul, configuration: fastConfiguration())
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.error != nil }
            #expect(recorder.ids == ["10.0.0.1:80"])
            #expect(recorder.error?.code == .invalidInstances)
            #expect(recorder.error?.message.contains("no port") == true)
            #expect(recorder.error?.message.contains("/run/web.sock") == true)
        }
    }

    @Test("an X-Consul-Index above 2^32 is read and blocked on as it is")
    func largeIndex() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80)
        server.resetIndex(to: HealthServiceFixtures.largeIndex)
        let answer = try await raw(server, "/v1/health/service/web")
        #expect(answer.headers.first(name: "X-Consul-Index") == "\(HealthServiceFixtures.largeIndex)")
        let consul = client(server)
        defer { Task { await consul.shutdown() } }
        let publisher = ConsulPublisher(service: "web", client: consul, configuration: fastConfiguration(wait: .seconds(30)))
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.ids == ["10.0.0.1:80"] }
            try await waitUntil { server.heldQueries == 1 }
            #expect(server.requests.last?.values("index") == ["\(HealthServiceFixtures.largeIndex)"])
            // The next change (index 2^32 + ...) wakes it: a client that cut the index to 32 bits
            // would block on a smaller one and be answered at once, again and again.
            server.addService(id: "b", name: "web", address: "10.0.0.2", port: 80)
            try await waitUntil { recorder.ids == ["10.0.0.1:80", "10.0.0.2:80"] }
            try await waitUntil { server.heldQueries == 1 }
            #expect(server.requests.last?.values("index") == ["\(HealthServiceFixtures.largeIndex + 1)"])
            #expect(recorder.error == nil)
        }
    }

    // MARK: Point 2: ACL filtering

    @Test("ACLs: anonymous and limited tokens get 200 [] with the filtered header; an unknown token 403")
    func aclAnswers() async throws {
        let server = try await ConsulTestServer.start(token: "root")
        defer { Task { await server.stop() } }
        server.addACLToken("reads-db", readableServices: ["db"])
        server.addService(id: "web-1", name: "web", address: "10.0.0.1", port: 80)

        let anonymous = try await raw(server, "/v1/health/service/web")
        #expect(anonymous.status == 200 && anonymous.body == "[]")
        #expect(anonymous.headers.first(name: "X-Consul-Results-Filtered-By-ACLs") == "true")
        let limited = try await raw(server, "/v1/health/service/web", token: "reads-db")
        #expect(limited.status == 200 && limited.body == "[]")
        #expect(limited.headers.first(name: "X-Consul-Results-Filtered-By-ACLs") == "true")
        let management = try await raw(server, "/v1/health/service/web", token: "root")
        #expect(management.status == 200 && management.body.contains("web-1"))
        #expect(management.headers.first(name: "X-Consul-Results-Filtered-By-ACLs") == nil)
        #expect(try await raw(server, "/v1/health/service/web", token: "no-such-token").status == 403)
        // Agent writes need write rights.
        #expect(try await raw(server, "/v1/agent/service/deregister/web-1", method: .PUT, token: "reads-db").status == 403)
        #expect(server.service(id: "web-1") != nil)
    }

    @Test("an ACL-filtered answer keeps the last good set and is reported in band; rights back, the set flows again")
    func aclFilteredKeepsSet() async throws {
        let server = try await ConsulTestServer.start(token: "root")
        defer { Task { await server.stop() } }
        server.addACLToken("reader", readableServices: ["web"])
        server.addService(id: "web-1", name: "web", address: "10.0.0.1", port: 80)
        let consul = client(server, token: "reader")
        defer { Task { await consul.shutdown() } }
        let publisher = ConsulPublisher(service: "web", client: consul, configuration: fastConfiguration())
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.ids == ["10.0.0.1:80"] }
            try await waitUntil { server.heldQueries == 1 }
            // The token loses its rights (a policy edited). As with Consul, a held query keeps
            // the authority it was asked with: the next change is still answered in full.
            server.addACLToken("reader", readableServices: [])
            server.addService(id: "web-2", name: "web", address: "10.0.0.2", port: 80)
            try await waitUntil { recorder.ids == ["10.0.0.1:80", "10.0.0.2:80"] }
            // The query after it is asked without rights: the next change is answered `200 []`
            // with X-Consul-Results-Filtered-By-ACLs.
            try await waitUntil { server.heldQueries == 1 }
            server.addService(id: "web-3", name: "web", address: "10.0.0.3", port: 80)
            try await waitUntil { recorder.error != nil }
            #expect((recorder.error?.cause as? ConsulError)?.code == .filteredByACLs)
            #expect(recorder.ids == ["10.0.0.1:80", "10.0.0.2:80"], "the filtered answer emptied the set")
            #expect(recorder.all.allSatisfy { !$0.instances.isEmpty })

            server.addACLToken("reader", readableServices: ["web"])
            try await waitUntil { recorder.error == nil && recorder.ids == ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"] }
        }
    }

    // MARK: Point 3: connection starvation

    @Test("more publishers than a default pool on one agent: the registrar's TTL passes still go through")
    func noStarvation() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        let publishers = 12 // AsyncHTTPClient's default pool has 8 connections per host
        for i in 0..<publishers { server.addService(id: "s\(i)", name: "svc-\(i)", address: "10.0.1.\(i + 1)", port: 80) }
        let consul = client(server)
        // A TTL long enough for a loaded machine; starved, the first pass would wait for a
        // blocking query to end (60 s) and the check would lapse after 3 s. Under a sanitizer it
        // stretches with the tests' other bounds (TestTimeScale).
        let ttl = TestTimeScale.scaled(.seconds(3))
        let registrar = ConsulRegistrar(
            instance: try Instance(host: "10.0.0.9", port: 8080),
            service: "me",
            client: consul,
            options: ConsulRegistrationOptions(id: "me-1", check: .init(ttl: ttl))
        )
        let services: [any Service] = (0..<publishers).map {
            ConsulPublisher(service: "svc-\($0)", client: consul, configuration: fastConfiguration(wait: .seconds(60)))
        }
        // The client first, so that it shuts down last (a group shuts down in reverse order).
        let group = ServiceGroup(
            services: [consul] + services + [registrar],
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        let running = Task { try await group.run() }
        // Every publisher's query is held by the agent.
        try await waitUntil { server.heldQueries == publishers }
        try await waitUntil { server.service(id: "me-1")?.checks["service:me-1"]?.status == "passing" }
        // Passes keep coming, every TTL/3, over three TTLs (a measurement window, sampled every
        // 100 ms): the check never lapses.
        let passes = server.service(id: "me-1")?.checks["service:me-1"]?.passes ?? 0
        let start = ContinuousClock.now
        while ContinuousClock.now - start < ttl * 3 {
            #expect(server.service(id: "me-1")?.checks["service:me-1"]?.status == "passing")
            try await Task.sleep(for: .milliseconds(100))
        }
        // At least one pass per TTL: a pass waits TTL/3 after the previous one was answered, so on a
        // loaded machine (the whole suite beside it) they come every 1.5-2 s, not every second.
        // Starved, there would be none.
        #expect((server.service(id: "me-1")?.checks["service:me-1"]?.passes ?? 0) >= passes + 3)
        #expect(server.heldQueries == publishers)

        await group.triggerGracefulShutdown()
        try await running.value
        // The registrar deregistered before the client shut down, and the client is shut down.
        #expect(server.service(id: "me-1") == nil)
        let error = await #expect(throws: ConsulError.self) { try await consul.healthService("svc-0", index: nil, wait: nil) }
        #expect(error?.code == .shutDown)
    }

    // MARK: Point 4: tag case

    @Test("tags match without regard to case, on the agent and in the publisher")
    func tagCase() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80, tags: ["Primary", "EU"])
        server.addService(id: "b", name: "web", address: "10.0.0.2", port: 80, tags: ["primary"])
        let answer = try await raw(server, "/v1/health/service/web?tag=PRIMARY&tag=eu")
        #expect(answer.body.contains("10.0.0.1") && !answer.body.contains("10.0.0.2"))
        let consul = client(server)
        defer { Task { await consul.shutdown() } }
        let publisher = ConsulPublisher(service: "web", tags: ["primary", "eu"], client: consul, configuration: fastConfiguration())
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.latest != nil }
            #expect(recorder.ids == ["10.0.0.1:80"])
        }
    }

    // MARK: Point 5: replace-existing-checks

    @Test("re-registering keeps the old checks unless replace-existing-checks; the client always replaces them")
    func replaceExistingChecks() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        func body(_ checkID: String) -> String {
            #"{"ID": "web-1", "Name": "web", "Port": 80, "Check": {"CheckID": "\#(checkID)", "TTL": "10s", "Status": "passing"}}"#
        }
        #expect(try await raw(server, "/v1/agent/service/register", method: .PUT, body: body("old")).status == 200)
        #expect(try await raw(server, "/v1/agent/service/register", method: .PUT, body: body("new")).status == 200)
        // The agent kept the old check: the lenient server replaced it.
        #expect(Set(server.service(id: "web-1")?.checks.keys.map { $0 } ?? []) == ["old", "new"])
        #expect(try await raw(server, "/v1/agent/service/register?replace-existing-checks", method: .PUT, body: body("new")).status == 200)
        #expect(Set(server.service(id: "web-1")?.checks.keys.map { $0 } ?? []) == ["new"])

        // Through the registrar: a check id that changes leaves no orphan, and the instance passes.
        let consul = client(server)
        defer { Task { await consul.shutdown() } }
        let instance = try Instance(host: "10.0.0.5", port: 8080)
        @Sendable func registrar(_ checkID: String) -> ConsulRegistrar {
            ConsulRegistrar(
                instance: instance,
                service: "api",
                client: consul,
                options: ConsulRegistrationOptions(id: "api-1", check: .init(ttl: .seconds(2), checkID: checkID))
            )
        }
        let first = Task { try await registrar("api-ttl-v1").run() }
        try await waitUntil { server.service(id: "api-1")?.checks["api-ttl-v1"]?.status == "passing" }
        // The process is replaced without deregistering (the new version starts under the same id).
        server.setFault(.status(500), for: .agent)
        first.cancel()
        try await first.value
        server.setFault(nil, for: .agent)
        let second = Task { try await registrar("api-ttl-v2").run() }
        defer { second.cancel() }
        try await waitUntil { server.service(id: "api-1")?.checks["api-ttl-v2"]?.status == "passing" }
        // No orphan: the old check, never passed again, would turn the instance critical for good.
        #expect(server.service(id: "api-1")?.checks.keys.sorted() == ["api-ttl-v2"])
        let registrations = server.requests.filter { $0.path == "/v1/agent/service/register" }.suffix(2)
        #expect(registrations.count == 2)
        #expect(registrations.allSatisfy { $0.values("replace-existing-checks") == ["true"] })
    }

    // MARK: Point 6: stalls and the rate limit

    @Test("an agent whose max_query_time is below wait/2: idle returns are not stalls, nothing backs off")
    func shortMaxQueryTime() async throws {
        let server = try await ConsulTestServer.start(maxQueryTime: .milliseconds(1500))
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80)
        let consul = client(server)
        defer { Task { await consul.shutdown() } }
        // A backoff that would show: a stall waits up to 10 s, the next up to 20 s (full jitter).
        var configuration = fastConfiguration(wait: .seconds(10))
        configuration.backoff = Backoff(base: .seconds(10), cap: .seconds(60))
        let publisher = ConsulPublisher(service: "web", client: consul, configuration: configuration)
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.ids == ["10.0.0.1:80"] }
            // Five idle returns at the agent's 1.5 s: about 8 s without backoff; with the old
            // rule (a return before wait/2 is a stall) more than 30 s.
            try await waitUntil(.seconds(20)) { server.requestCount(.health) >= 7 }
            let blocking = server.requests.dropFirst()
            #expect(blocking.allSatisfy { $0.values("wait") == ["10000ms"] })
            #expect(recorder.error == nil)
        }
    }

    // MARK: Point 7: registration validation

    @Test("bad weights are a configuration error: rejected at once by the client, and by the agent with 400")
    func weights() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        let consul = client(server)
        defer { Task { await consul.shutdown() } }
        // A weight of 0 is a valid instance ("only when nothing else is available"), not a valid Consul passing weight.
        let bad = ConsulRegistrar(
            instance: try Instance(host: "127.0.0.1", port: 80, weight: 0),
            service: "web",
            client: consul,
            options: ConsulRegistrationOptions(id: "a", check: .init(ttl: .seconds(10)))
        )
        let error = await #expect(throws: ConsulError.self) { try await bad.run() }
        #expect(error?.code == .invalidArgument)
        #expect(server.requests.isEmpty)
        // The agent's side.
        let answer = try await raw(
            server, "/v1/agent/service/register", method: .PUT,
            body: #"{"Name": "web", "Port": 80, "Weights": {"Passing": 70000, "Warning": 1}}"#)
        #expect(answer.status == 400)
        #expect(server.service(id: "web") == nil)
    }

    @Test("a registration the agent answers with 400 stops the registrar with the error, sent once")
    func rejectedRegistration() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        let consul = client(server)
        defer { Task { await consul.shutdown() } }
        server.setFault(.status(400), for: .agent)
        let registrar = ConsulRegistrar(
            instance: try Instance(host: "127.0.0.1", port: 80),
            service: "web",
            client: consul,
            options: ConsulRegistrationOptions(id: "a", check: .init(ttl: .seconds(10)))
        )
        let error = await #expect(throws: ConsulError.self) { try await registrar.run() }
        #expect(error?.code == .invalidArgument)
        #expect(error?.status == 400)
        #expect(server.requests.filter { $0.path == "/v1/agent/service/register" }.count == 1)
    }

    // MARK: The test server's other strictness

    @Test("bad passing and index values are 400; stale with consistent is 400; passing=false lists all")
    func badQueries() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80, status: "critical")
        #expect(try await raw(server, "/v1/health/service/web?passing=maybe").status == 400)
        #expect(try await raw(server, "/v1/health/service/web?index=ten").status == 400)
        #expect(try await raw(server, "/v1/health/service/web?index=-1").status == 400)
        #expect(try await raw(server, "/v1/health/service/web?stale&consistent").status == 400)
        #expect(try await raw(server, "/v1/health/service/web?wait=soon&index=1").status == 400)
        #expect(try await raw(server, "/v1/health/service/web?passing").body == "[]")
        #expect(try await raw(server, "/v1/health/service/web?passing=true").body == "[]")
        #expect(try await raw(server, "/v1/health/service/web?passing=false").body.contains("10.0.0.1"))
        #expect(try await raw(server, "/v1/health/service/web?index=18446744073709551615&wait=10ms").status == 200)
        let cached = try await raw(server, "/v1/health/service/web?cached")
        #expect(cached.headers.first(name: "X-Cache") != nil)
    }

    @Test("wait=0s means the default wait, not an answer at once; a held query goes when its client does")
    func zeroWaitAndDisconnect() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80)
        let index = server.index
        let held = Task { try await raw(server, "/v1/health/service/web?index=\(index)&wait=0s", timeout: .seconds(60)) }
        try await waitUntil { server.heldQueries == 1 }
        // The client goes away: the agent stops holding its query.
        held.cancel()
        _ = try? await held.value
        try await waitUntil { server.heldQueries == 0 }

        // The same through the Consul client: a publisher cancelled mid-query leaves nothing held.
        let consul = client(server)
        defer { Task { await consul.shutdown() } }
        let publisher = ConsulPublisher(service: "web", client: consul, configuration: fastConfiguration(wait: .seconds(60)))
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.ids == ["10.0.0.1:80"] }
            try await waitUntil { server.heldQueries == 1 }
        }
        // withRunning cancelled it; the request's connection closes with it.
        try await waitUntil { server.heldQueries == 0 }
    }

    @Test("DeregisterCriticalServiceAfter below a minute is raised to Consul's one-minute minimum")
    func deregisterMinimum() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        let consul = client(server)
        defer { Task { await consul.shutdown() } }
        try await consul.register(
            .init(id: "a", name: "web", port: 80, check: .init(ttl: .seconds(10), deregisterCriticalServiceAfter: .seconds(5)))
        )
        // Registered critical: not removed before a minute, removed after it (by the reaper).
        #expect(server.service(id: "a")?.checks["service:a"]?.deregisterCriticalServiceAfter == .seconds(60))
        server.advanceTime(by: .seconds(50))
        #expect(server.service(id: "a") != nil)
        server.advanceTime(by: .seconds(11))
        #expect(server.service(id: "a") == nil)
    }

    // MARK: What a Consul user expects

    @Test("warning instances, as an option, weighted by Weights.Warning")
    func warningInstances() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80, passingWeight: 10, warningWeight: 3)
        server.addService(id: "b", name: "web", address: "10.0.0.2", port: 80, passingWeight: 10, warningWeight: 3, status: "warning")
        server.addService(id: "c", name: "web", address: "10.0.0.3", port: 80, status: "critical")
        let consul = client(server)
        defer { Task { await consul.shutdown() } }
        let passingOnly = ConsulPublisher(service: "web", client: consul, configuration: fastConfiguration())
        try await withRunning(passingOnly) { recorder in
            try await waitUntil { recorder.latest != nil }
            #expect(recorder.ids == ["10.0.0.1:80"])
        }
        let withWarning = ConsulPublisher(service: "web", client: consul, configuration: fastConfiguration(includeWarning: true))
        try await withRunning(withWarning) { recorder in
            try await waitUntil { recorder.ids == ["10.0.0.1:80", "10.0.0.2:80"] }
            #expect(recorder.latest?.instances.map(\.weight) == [10, 3])
            server.setServiceStatus(id: "b", "critical")
            try await waitUntil { recorder.ids == ["10.0.0.1:80"] }
        }
        // The warning publisher asked without `passing`.
        #expect(server.requests.contains { request in !request.query.contains { $0.name == "passing" } })
    }

    @Test(
        "stale, consistent and cached are sent as asked",
        arguments: [
            (ConsulClient.Consistency.stale, "stale"), (.consistent, "consistent"), (.cached, "cached"),
        ])
    func consistency(_ consistency: ConsulClient.Consistency, _ item: String) async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80)
        let consul = client(server)
        defer { Task { await consul.shutdown() } }
        let publisher = ConsulPublisher(service: "web", client: consul, configuration: fastConfiguration(consistency: consistency))
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.ids == ["10.0.0.1:80"] }
            try await waitUntil { server.heldQueries == 1 }
        }
        let names = Set(server.requests.flatMap { $0.query.map(\.name) })
        #expect(names.contains(item))
        #expect(names.intersection(["stale", "consistent", "cached"]) == [item])
    }

    @Test("429: its own error code, and the agent's Retry-After is honoured")
    func rateLimited() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80)
        let consul = client(server)
        defer { Task { await consul.shutdown() } }
        let publisher = ConsulPublisher(service: "web", client: consul, configuration: fastConfiguration())
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.ids == ["10.0.0.1:80"] }
            try await waitUntil { server.heldQueries == 1 }
            server.setFault(.rateLimited(retryAfterSeconds: 2), for: .health)
            server.addService(id: "b", name: "web", address: "10.0.0.2", port: 80)
            try await waitUntil { recorder.error != nil }
            let cause = try #require(recorder.error?.cause as? ConsulError)
            #expect(recorder.error?.code == .registryUnavailable)
            #expect(cause.code == .rateLimited && cause.status == 429 && cause.retryAfter == .seconds(2))
            #expect(recorder.ids == ["10.0.0.1:80", "10.0.0.2:80"])
            // Each 429 is followed by at least the 2 s asked for (the backoff alone is under 1 s).
            try await waitUntil { server.requests.filter { $0.path.hasPrefix("/v1/health/") }.count >= 5 }
            server.setFault(nil, for: .health)
            let health = server.requests.filter { $0.path.hasPrefix("/v1/health/") }.map(\.time)
            let limited = Array(health.suffix(from: health.count - 3))
            for (earlier, later) in zip(limited, limited.dropFirst()) {
                #expect(later - earlier >= .milliseconds(1990), "\(later - earlier)")
            }
            try await waitUntil(.seconds(10)) { recorder.error == nil }
        }
    }

    @Test("429 to the registrar: its Retry-After is honoured too")
    func rateLimitedRegistrar() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        let consul = client(server)
        defer { Task { await consul.shutdown() } }
        server.setFault(.rateLimited(retryAfterSeconds: 1), for: .agent)
        let registrar = ConsulRegistrar(
            instance: try Instance(host: "127.0.0.1", port: 80),
            service: "web",
            client: consul,
            options: ConsulRegistrationOptions(id: "a", check: .init(ttl: .milliseconds(600)))
        )
        let running = Task { try await registrar.run() }
        defer { running.cancel() }
        try await waitUntil { server.requestCount(.agent) >= 3 }
        server.setFault(nil, for: .agent)
        // The backoff alone would be under the 200 ms pass interval; each retry waited the 1 s asked.
        let times = Array(server.requests.filter { $0.path == "/v1/agent/service/register" }.prefix(3).map(\.time))
        for (earlier, later) in zip(times, times.dropFirst()) {
            #expect(later - earlier >= .milliseconds(990), "\(later - earlier)")
        }
        try await waitUntil { server.service(id: "a")?.checks["service:a"]?.status == "passing" }
    }

    @Test("CONSUL_HTTP_ADDR=https://..., CONSUL_CACERT and CONSUL_HTTP_TOKEN: the client reads over HTTPS with the CA")
    func environmentTLS() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lb-consul-env-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let certificates = try await TestCertificates.make(in: directory)
        let server = try await ConsulTestServer.start(token: "env-token", tls: (certificates.certificatePath, certificates.keyPath))
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80)
        let environment = [
            "CONSUL_HTTP_ADDR": "https://127.0.0.1:\(server.port)",
            "CONSUL_CACERT": certificates.caPath,
            "CONSUL_HTTP_TOKEN": "env-token",
        ]
        let consul = ConsulClient(configuration: try .init(environment: environment, requestTimeout: .seconds(2)))
        defer { Task { await consul.shutdown() } }
        let result = try await consul.healthService("web", index: nil, wait: nil)
        #expect(result.entries.map(\.serviceID) == ["a"])
        #expect(server.requests.allSatisfy { $0.token == "env-token" })

        // A CA file that cannot be read: a clear error, in band for a publisher.
        var missing = environment
        missing["CONSUL_CACERT"] = directory.appendingPathComponent("missing.pem").path
        let broken = ConsulClient(configuration: try .init(environment: missing, requestTimeout: .seconds(2)))
        let error = await #expect(throws: ConsulError.self) { try await broken.healthService("web", index: nil, wait: nil) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("missing.pem") == true)
    }
}
