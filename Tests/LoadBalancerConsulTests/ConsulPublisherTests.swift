import AsyncHTTPClient
import ConsulTestServer
import Foundation
import LoadBalancer
import LoadBalancerTestKit
import LoadBalancerTestServers
import NIOSSL
import Testing

@testable import LoadBalancerConsul

/// The publisher against the project's Consul-API test server (each test has its own server on its
/// own port). Fault windows are measured over a fixed span of time: that span is the measurement,
/// not a wait for a condition; every wait for a condition is bounded polling.
@Suite("ConsulPublisher against the Consul-API test server", .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct ConsulPublisherTests {
    @Test("the service address wins over the node address; weights, tags and metadata come through")
    func addressesAndWeights() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addNode("node-2", address: "10.0.0.2")
        server.addService(id: "web-1", name: "web", node: "node-2", port: 8080, tags: ["v1"], meta: ["zone": "a"], passingWeight: 3)
        server.addService(id: "web-2", name: "web", node: "node-2", address: "10.1.1.1", port: 9090, passingWeight: 7)
        server.addService(id: "db-1", name: "db", port: 5432)

        let publisher = ConsulPublisher(service: "web", client: client(server), configuration: fastConfiguration())
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.ids.count == 2 }
            let instances = try #require(recorder.latest?.instances)
            #expect(recorder.error == nil)
            #expect(instances.map(\.id) == ["10.0.0.2:8080", "10.1.1.1:9090"])
            // No service address: the node's.
            #expect(instances[0].host == "10.0.0.2")
            #expect(instances[0].weight == 3)
            #expect(instances[0].tags == ["v1"])
            #expect(
                instances[0].metadata == ["zone": "a", "consul.node": "node-2", "consul.service_id": "web-1", "consul.datacenter": "dc1"])
            // A service address: it wins.
            #expect(instances[1].host == "10.1.1.1")
            #expect(instances[1].weight == 7)
        }
    }

    @Test("only passing instances: a critical check or a failed node drops the instance, passing again brings it back")
    func passingOnly() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addNode("node-2", address: "10.0.0.2")
        server.addService(id: "a", name: "web", address: "10.0.0.10", port: 80)
        server.addService(id: "b", name: "web", address: "10.0.0.11", port: 80, status: "critical")
        server.addService(id: "c", name: "web", node: "node-2", port: 80, status: "warning")
        server.addService(id: "d", name: "web", node: "node-2", address: "10.0.0.13", port: 80)

        let publisher = ConsulPublisher(service: "web", client: client(server), configuration: fastConfiguration())
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.ids == ["10.0.0.10:80", "10.0.0.13:80"] }
            server.setNodeStatus("node-2", "critical")
            try await waitUntil { recorder.ids == ["10.0.0.10:80"] }
            server.setNodeStatus("node-2", "passing")
            server.setServiceStatus(id: "b", "passing")
            try await waitUntil { recorder.ids == ["10.0.0.10:80", "10.0.0.11:80", "10.0.0.13:80"] }
            #expect(recorder.all.allSatisfy { $0.error == nil })
        }
        // Every query asked for passing instances only.
        #expect(server.requests.allSatisfy { $0.query.contains { $0.name == "passing" } })
    }

    @Test("an update propagates within a blocking call, well before the wait time")
    func blockingPropagation() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80)
        let publisher = ConsulPublisher(service: "web", client: client(server), configuration: fastConfiguration(wait: .seconds(30)))
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.ids == ["10.0.0.1:80"] }
            // The publisher is now held by the server on a blocking query.
            try await waitUntil { server.heldQueries == 1 }
            let requestsBefore = server.requestCount(.health)
            let held = try #require(server.requests.last)
            #expect(held.values("index").count == 1)
            #expect(held.values("wait") == ["30000ms"])

            let start = ContinuousClock.now
            server.addService(id: "b", name: "web", address: "10.0.0.2", port: 80)
            try await waitUntil { recorder.ids == ["10.0.0.1:80", "10.0.0.2:80"] }
            let elapsed = ContinuousClock.now - start
            // The held query answered at once: seen well within the 30 s wait (under half of it:
            // a busy machine can take seconds to run the publisher's task).
            #expect(elapsed < .seconds(15), "took \(elapsed)")
            // And without polling: the held query, then one new held query.
            try await waitUntil { server.heldQueries == 1 }
            #expect(server.requestCount(.health) - requestsBefore <= 1)
        }
    }

    @Test("an idle blocking query ends at the wait and is asked again with the same index")
    func waitElapses() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80)
        let publisher = ConsulPublisher(service: "web", client: client(server), configuration: fastConfiguration(wait: .milliseconds(300)))
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.ids == ["10.0.0.1:80"] }
            try await waitUntil { server.requestCount(.health) >= 5 }
            let blocking = server.requests.dropFirst()
            let indexes = Set(blocking.flatMap { $0.values("index") })
            #expect(indexes.count == 1, "\(indexes)")
            // Each waited about 300 ms (plus up to wait/16): no request followed another sooner
            // than the wait.
            let times = blocking.map(\.time)
            for (earlier, later) in zip(times, times.dropFirst()) {
                #expect(later - earlier >= .milliseconds(290))
            }
        }
    }

    @Test("tags: all must match; Consul filters by the first, the publisher by the others")
    func severalTags() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "abc", name: "web", address: "10.0.0.1", port: 80, tags: ["a", "b", "c"])
        server.addService(id: "ab", name: "web", address: "10.0.0.2", port: 80, tags: ["b", "a"])
        server.addService(id: "ac", name: "web", address: "10.0.0.3", port: 80, tags: ["a", "c"])
        server.addService(id: "bc", name: "web", address: "10.0.0.4", port: 80, tags: ["b", "c"])
        server.addService(id: "none", name: "web", address: "10.0.0.5", port: 80)

        let publisher = ConsulPublisher(service: "web", tags: ["a", "b"], client: client(server), configuration: fastConfiguration())
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.latest != nil }
            #expect(recorder.ids == ["10.0.0.1:80", "10.0.0.2:80"])
        }
        // Only the first tag was sent to Consul.
        #expect(server.requests.allSatisfy { $0.values("tag") == ["a"] })

        let three = ConsulPublisher(service: "web", tags: ["c", "b", "a"], client: client(server), configuration: fastConfiguration())
        try await withRunning(three) { recorder in
            try await waitUntil { recorder.latest != nil }
            #expect(recorder.ids == ["10.0.0.1:80"])
        }
        let none = ConsulPublisher(service: "web", tags: ["a", "zzz"], client: client(server), configuration: fastConfiguration())
        try await withRunning(none) { recorder in
            try await waitUntil { recorder.latest != nil }
            #expect(recorder.latest?.instances.isEmpty == true)
            #expect(recorder.error == nil)
        }
    }

    @Test("an index that goes backwards resets the loop to a plain read; later updates still arrive at once")
    func indexReset() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        for i in 1...20 { server.addService(id: "x\(i)", name: "other", port: 1000 + i) }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80)
        let publisher = ConsulPublisher(service: "web", client: client(server), configuration: fastConfiguration(wait: .seconds(30)))
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.ids == ["10.0.0.1:80"] }
            try await waitUntil { server.heldQueries == 1 }
            let heldIndex = try #require(server.requests.last?.values("index").first.flatMap { UInt64($0) })
            #expect(heldIndex > 20)

            // A restored snapshot: the index drops to 3 and the held query is answered with it.
            let resetAt = server.requests.count
            server.resetIndex(to: 3)
            try await waitUntil { server.heldQueries == 1 && server.requests.count >= resetAt + 2 }
            let after = Array(server.requests[resetAt...])
            // First a plain read (no index), then blocking at the new, lower index.
            #expect(after[0].values("index").isEmpty, "\(after.map { $0.values("index") })")
            #expect(after.last?.values("index") == ["3"])

            // The next change is index 4: seen at once. A client that kept its old index would
            // be held for the whole 30 s wait.
            let start = ContinuousClock.now
            server.addService(id: "b", name: "web", address: "10.0.0.2", port: 80)
            try await waitUntil(.seconds(10)) { recorder.ids == ["10.0.0.1:80", "10.0.0.2:80"] }
            #expect(ContinuousClock.now - start < TestTimeScale.scaled(.seconds(3)))
        }
    }

    /// Runs `fault` against a publisher that has a good set, for a window of `window` (stretched
    /// under a sanitizer by TestTimeScale, as are the request bounds the callers check with
    /// `atMost`); returns the health requests made in the window, after checking that the last good
    /// set stayed and the error came in band; then clears the fault and checks recovery.
    /// `requests`, a bound on the requests in a normal run's fault window, for the window as
    /// stretched by TestTimeScale.
    func atMost(_ requests: Int) -> Int {
        Int((Double(requests) * TestTimeScale.factor).rounded(.up))
    }

    func faultWindow(
        _ fault: ConsulTestServer.Fault,
        requestTimeout: Duration = .seconds(2),
        wait: Duration = .seconds(10),
        window: Duration = .seconds(2),
        atLeast: Int = 2,
        check: (DiscoveryError?) -> Void
    ) async throws -> Int {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80)
        let publisher = ConsulPublisher(
            service: "web",
            client: client(server, requestTimeout: requestTimeout),
            configuration: fastConfiguration(wait: wait)
        )
        return try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.ids == ["10.0.0.1:80"] }
            try await waitUntil { server.heldQueries == 1 }
            server.setFault(fault, for: .health)
            // A change wakes the held query; every request after it meets the fault.
            server.addService(id: "b", name: "web", address: "10.0.0.2", port: 80)
            try await waitUntil { recorder.ids == ["10.0.0.1:80", "10.0.0.2:80"] }
            let before = server.requestCount(.health)
            try await Task.sleep(for: TestTimeScale.scaled(window)) // the measurement window
            let during = server.requestCount(.health) - before
            // The loop keeps trying: `atLeast` requests since the fault began (on a loaded machine
            // perhaps only after the window, so waited for rather than counted in it).
            try await waitUntil(.seconds(30)) { server.requestCount(.health) - before >= atLeast }
            // The last good set stayed through the fault.
            #expect(recorder.ids == ["10.0.0.1:80", "10.0.0.2:80"])
            #expect(recorder.all.filter { $0.error == nil }.last?.instances.count == 2)
            let failures = recorder.all.compactMap(\.error)
            check(failures.last)

            // Fault cleared: the loop recovers, errors stop and changes flow again.
            server.setFault(nil, for: .health)
            server.removeService(id: "a")
            try await waitUntil { recorder.error == nil && recorder.ids == ["10.0.0.2:80"] }
            return during
        }
    }

    @Test("500s keep the last good set, arrive in band, and are backed off from")
    func serverErrors() async throws {
        let requests = try await faultWindow(.status(500)) { error in
            #expect(error?.code == .registryUnavailable)
            let cause = error?.cause as? ConsulError
            #expect(cause?.code == .httpStatus)
            #expect(cause?.status == 500)
        }
        // Backoff of 100 ms doubling to 800 ms (full jitter): about 7 requests in 2 s. A loop
        // without backoff makes hundreds.
        #expect(requests <= atMost(12), "\(requests) requests in the fault window")
    }

    @Test("garbage JSON keeps the last good set, arrives in band, and is backed off from")
    func garbage() async throws {
        let requests = try await faultWindow(.garbage) { error in
            #expect(error?.code == .other)
            #expect((error?.cause as? ConsulError)?.code == .invalidResponse)
        }
        #expect(requests <= atMost(12), "\(requests) requests in the fault window")
    }

    @Test("timeouts keep the last good set, arrive in band, and are backed off from")
    func timeouts() async throws {
        // Requests are held 5 s; the client gives up after its 300 ms request timeout (plain reads)
        // or the wait plus that (blocking queries).
        // (Both stretch under a sanitizer, TestTimeScale: a slowed answer must not look like the fault.)
        let requests = try await faultWindow(
            .delay(.seconds(5)), requestTimeout: TestTimeScale.scaled(.milliseconds(300)), wait: TestTimeScale.scaled(.milliseconds(500)),
            atLeast: 1
        ) { error in
            #expect(error?.code == .registryUnavailable)
            #expect((error?.cause as? ConsulError)?.code == .timeout)
        }
        #expect(requests <= atMost(8), "\(requests) requests in the fault window")
    }

    @Test("an agent that answers at once without moving the index is backed off from, not spun against (go-kit #627)")
    func indexDoesNotMove() async throws {
        let requests = try await faultWindow(.noBlocking) { error in
            // Not an error: the answers are good, only the loop slows down.
            #expect(error == nil)
        }
        #expect(requests <= atMost(12), "\(requests) requests in the fault window")
    }

    @Test("a server restart: the last good set stays while it is down, failures are backed off from, changes flow after")
    func restart() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        let port = server.port
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80)
        let publisher = ConsulPublisher(service: "web", client: client(server), configuration: fastConfiguration())
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.ids == ["10.0.0.1:80"] }
            try await waitUntil { server.heldQueries == 1 }

            await server.stop()
            try await waitUntil { recorder.error != nil }
            #expect(recorder.error?.code == .registryUnavailable)
            #expect((recorder.error?.cause as? ConsulError)?.code == .unavailable)
            #expect(recorder.ids == ["10.0.0.1:80"])
            let failuresBefore = recorder.all.filter { $0.error != nil }.count
            try await Task.sleep(for: .seconds(2)) // the measurement window
            let failures = recorder.all.filter { $0.error != nil }.count - failuresBefore
            #expect(failures <= 12, "\(failures) failed requests in 2 s")
            #expect(recorder.ids == ["10.0.0.1:80"])

            server.addService(id: "b", name: "web", address: "10.0.0.2", port: 80)
            try await server.restart()
            #expect(server.port == port)
            try await waitUntil { recorder.error == nil && recorder.ids == ["10.0.0.1:80", "10.0.0.2:80"] }
        }
    }

    @Test("datacenter and ACL token are sent; an unknown datacenter and a missing token arrive in band")
    func datacenterAndToken() async throws {
        let server = try await ConsulTestServer.start(token: "s3cret")
        defer { Task { await server.stop() } }
        server.addNode("far-1", address: "10.9.0.1", datacenter: "dc2")
        server.addService(id: "near", name: "web", address: "10.0.0.1", port: 80)
        server.addService(id: "far", name: "web", node: "far-1", port: 80)

        let local = ConsulPublisher(service: "web", client: client(server, token: "s3cret"), configuration: fastConfiguration())
        try await withRunning(local) { recorder in
            try await waitUntil { recorder.latest != nil }
            #expect(recorder.ids == ["10.0.0.1:80"])
        }
        let far = ConsulPublisher(
            service: "web", client: client(server, datacenter: "dc2", token: "s3cret"), configuration: fastConfiguration())
        try await withRunning(far) { recorder in
            try await waitUntil { recorder.latest != nil }
            #expect(recorder.ids == ["10.9.0.1:80"])
            #expect(recorder.latest?.instances.first?.metadata["consul.datacenter"] == "dc2")
        }
        #expect(server.requests.allSatisfy { $0.token == "s3cret" })
        #expect(server.requests.contains { $0.values("dc") == ["dc2"] })

        let unknown = ConsulPublisher(
            service: "web", client: client(server, datacenter: "dc9", token: "s3cret"), configuration: fastConfiguration())
        try await withRunning(unknown) { recorder in
            try await waitUntil { recorder.error != nil }
            #expect((recorder.error?.cause as? ConsulError)?.status == 500)
            #expect(recorder.latest?.instances.isEmpty == true)
        }
        // No token is the anonymous token: a real agent answers 200 [] with
        // X-Consul-Results-Filtered-By-ACLs (not 403), reported in band.
        let anonymous = ConsulPublisher(service: "web", client: client(server), configuration: fastConfiguration())
        try await withRunning(anonymous) { recorder in
            try await waitUntil { recorder.error != nil }
            #expect(recorder.error?.code == .other)
            #expect((recorder.error?.cause as? ConsulError)?.code == .filteredByACLs)
            #expect(recorder.latest?.instances.isEmpty == true)
        }
        // An unknown token is refused with 403.
        let unknownToken = ConsulPublisher(service: "web", client: client(server, token: "wrong"), configuration: fastConfiguration())
        try await withRunning(unknownToken) { recorder in
            try await waitUntil { recorder.error != nil }
            #expect(recorder.error?.code == .other)
            #expect((recorder.error?.cause as? ConsulError)?.status == 403)
        }
    }

    @Test("TLS: an https client does not speak plain HTTP to the agent, and says so in band")
    func tls() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80)
        let consul = ConsulClient(configuration: .init(host: "127.0.0.1", port: server.port, tls: true, requestTimeout: .seconds(2)))
        #expect(consul.configuration.baseURL == "https://127.0.0.1:\(server.port)")
        let publisher = ConsulPublisher(service: "web", client: consul, configuration: fastConfiguration())
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.error != nil }
            #expect(recorder.latest?.instances.isEmpty == true)
        }
        // The server never saw a well-formed HTTP request.
        #expect(server.requestCount(.health) == 0)
    }

    @Test("TLS: a client trusting the agent's CA reads over HTTPS; one that does not is refused in band")
    func tlsVerified() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lb-consul-tls-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let certificates = try await TestCertificates.make(in: directory)
        let server = try await ConsulTestServer.start(tls: (certificates.certificatePath, certificates.keyPath))
        defer { Task { await server.stop() } }
        server.addService(id: "a", name: "web", address: "10.0.0.1", port: 80)

        var configuration = ConsulClient.httpClientConfiguration()
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(certificates.caPath)
        configuration.tlsConfiguration = tls
        let httpClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let trusted = ConsulClient(configuration: .init(host: "127.0.0.1", port: server.port, tls: true), httpClient: httpClient)
        let publisher = ConsulPublisher(service: "web", client: trusted, configuration: fastConfiguration())
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.ids == ["10.0.0.1:80"] }
            #expect(recorder.error == nil)
        }
        try await httpClient.shutdown()

        // The default client trusts the system's roots only: the test CA is not among them.
        let untrusted = ConsulClient(configuration: .init(host: "127.0.0.1", port: server.port, tls: true, requestTimeout: .seconds(2)))
        let refused = ConsulPublisher(service: "web", client: untrusted, configuration: fastConfiguration())
        try await withRunning(refused) { recorder in
            try await waitUntil { recorder.error != nil }
            #expect(recorder.latest?.instances.isEmpty == true)
        }
    }

    @Test("entries that are not valid instances are reported in band; the good ones are published")
    func invalidEntries() async throws {
        let server = try await ConsulTestServer.start()
        defer { Task { await server.stop() } }
        server.addService(id: "good", name: "web", address: "10.0.0.1", port: 80)
        server.addService(id: "no-port", name: "web", address: "10.0.0.2", port: 0)
        server.addService(id: "bad-host", name: "web", address: "not a host", port: 80)
        let publisher = ConsulPublisher(service: "web", client: client(server), configuration: fastConfiguration())
        try await withRunning(publisher) { recorder in
            try await waitUntil { recorder.error != nil }
            #expect(recorder.ids == ["10.0.0.1:80"])
            #expect(recorder.error?.code == .invalidInstances)
        }
    }

    @Test(
        "the blocking-loop bookkeeping: reset on a lower index, 1 for 0, stall when nothing moved or blocked, a plain read after a failure")
    func loopState() {
        var state = BlockingLoopState(wait: .seconds(10))
        let fast = Duration.milliseconds(5)
        #expect(state.answered(index: 10, elapsed: fast) == .progressed)
        #expect(state.index == 10)
        #expect(state.answered(index: 10, elapsed: .seconds(10)) == .progressed) // the wait ended: normal
        #expect(state.answered(index: 10, elapsed: fast) == .stalled) // back at once, nothing moved
        #expect(state.stalls == 1)
        #expect(state.answered(index: 10, elapsed: fast) == .stalled)
        #expect(state.stalls == 2)
        #expect(state.answered(index: 12, elapsed: fast) == .progressed)
        #expect(state.stalls == 0)
        #expect(state.answered(index: 4, elapsed: fast) == .reset) // backwards: start over
        #expect(state.index == 0)
        #expect(state.stalls == 1)
        #expect(state.answered(index: 4, elapsed: fast) == .progressed)
        #expect(state.index == 4)
        #expect(state.answered(index: nil, elapsed: fast) == .stalled) // no index: cannot block
        #expect(state.index == 0)
        #expect(state.answered(index: 0, elapsed: fast) == .stalled) // 0 is never blocked on
        #expect(state.index == 1)
        #expect(state.failed() == 1)
        #expect(state.failed() == 2)
        _ = state.answered(index: 5, elapsed: fast)
        #expect(state.blockingIndex == 5)
        #expect(state.failed() == 1)
        // After a failure: a plain read, and its quick answer with the same index is no stall.
        #expect(state.blockingIndex == nil)
        #expect(state.answered(index: 5, elapsed: fast) == .progressed)
        #expect(state.stalls == 0)
        #expect(state.blockingIndex == 5)
    }
}
