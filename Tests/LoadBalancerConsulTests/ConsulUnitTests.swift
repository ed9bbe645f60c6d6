import LoadBalancer
import Testing

@testable import LoadBalancerConsul

@Suite("Consul answers, configuration and loop rules, without a server")
struct ConsulUnitTests {
    func decode(_ json: String) throws -> [ConsulServiceEntry] {
        try ConsulClient.decodeHealthEntries(Array(json.utf8))
    }

    @Test("the documented answer decodes; the fields the client does not use are ignored")
    func documentedAnswer() throws {
        let entries = try decode(HealthServiceFixtures.documented)
        let entry = try #require(entries.first)
        #expect(entries.count == 1)
        #expect(entry.node == "worker-7" && entry.nodeAddress == "192.168.40.7" && entry.datacenter == "eu-west")
        #expect(entry.serviceID == "billing-7a" && entry.serviceName == "billing")
        #expect(entry.address == "192.168.40.70" && entry.port == 7300 && entry.socketPath == nil)
        #expect(entry.tags == ["blue", "v3"] && entry.meta == ["build": "2024.06"])
        #expect(entry.passingWeight == 12 && entry.warningWeight == 2)
        #expect(entry.checkStatuses == ["passing", "passing"])
        #expect(entry.nodeMeta == ["rack": "r12"] && entry.zone == nil)

        let (instances, invalid) = ConsulServiceEntry.instances(from: entries, tags: ["V3"])
        #expect(invalid.isEmpty)
        let instance = try #require(instances.first)
        #expect(instance.id == "192.168.40.70:7300" && instance.weight == 12)
        #expect(instance.metadata["consul.datacenter"] == "eu-west" && instance.metadata["build"] == "2024.06")
    }

    @Test("an entry without Port, or on a Unix socket, is reported; the others still count")
    func portless() throws {
        let entries = try decode(HealthServiceFixtures.portless)
        #expect(entries.map(\.port) == [9100, 0, 0])
        #expect(entries[2].socketPath == "/run/api/api.sock")
        let (instances, invalid) = ConsulServiceEntry.instances(from: entries, tags: [])
        #expect(instances.map(\.id) == ["10.20.0.1:9100"])
        #expect(invalid.count == 2)
        #expect(invalid[0].contains("api-2") && invalid[0].contains("no port"), "\(invalid)")
        #expect(invalid[1].contains("api-3") && invalid[1].contains("/run/api/api.sock"), "\(invalid)")
    }

    @Test("null Tags, Meta, Weights and node fields are empty, not an error")
    func nulls() throws {
        let entries = try decode(HealthServiceFixtures.nulls)
        let entry = try #require(entries.first)
        #expect(entry.tags.isEmpty && entry.meta.isEmpty && entry.passingWeight == nil && entry.warningWeight == nil)
        let (instances, invalid) = ConsulServiceEntry.instances(from: entries, tags: [])
        #expect(invalid.isEmpty)
        #expect(instances.map(\.id) == ["10.20.0.4:9100"])
        #expect(instances.first?.weight == 1)
    }

    @Test("unknown fields anywhere, and 64-bit indexes in the body, are ignored")
    func unknownFields() throws {
        let entries = try decode(HealthServiceFixtures.unknownFields)
        #expect(entries.map(\.serviceID) == ["api-5"])
        #expect(entries.first?.passingWeight == 4)
        #expect(entries.first?.port == 9105)
    }

    @Test("a body that is not a list of entries is an invalidResponse error")
    func notEntries() {
        for body in ["", "{}", "[{\"Node\": {}}]", "[1]"] {
            let error = #expect(throws: ConsulError.self) { try decode(body) }
            #expect(error?.code == .invalidResponse)
        }
    }

    @Test("an index above 2^32 is blocked on as it is")
    func largeIndex() {
        var state = BlockingLoopState(wait: .seconds(300))
        #expect(state.answered(index: HealthServiceFixtures.largeIndex, elapsed: .milliseconds(3)) == .progressed)
        #expect(state.blockingIndex == HealthServiceFixtures.largeIndex)
        #expect(state.answered(index: HealthServiceFixtures.largeIndex + 1, elapsed: .milliseconds(3)) == .progressed)
        #expect(state.answered(index: UInt64.max, elapsed: .milliseconds(3)) == .progressed)
        #expect(state.blockingIndex == UInt64.max)
    }

    @Test("an instance's zone: the service's zone meta, else its node's, else none")
    func zones() {
        let service = ConsulServiceEntry(
            node: "n", nodeAddress: "10.0.0.1", serviceID: "a", serviceName: "web", port: 80, meta: ["zone": "eu-1a"],
            nodeMeta: ["zone": "eu-1b"])
        var node = service
        node.serviceID = "b"
        node.meta = [:]
        var none = node
        none.serviceID = "c"
        none.nodeMeta = [:]
        let zones = ConsulServiceEntry.instances(from: [service, node, none], tags: []).instances.map(\.zone)
        #expect(zones == ["eu-1a", "eu-1b", nil])
    }

    @Test("tags match without regard to case, all of them")
    func tagCase() {
        let entry = ConsulServiceEntry(
            node: "n", nodeAddress: "10.0.0.1", serviceID: "a", serviceName: "web", port: 80, tags: ["Primary", "EU"])
        #expect(ConsulServiceEntry.instances(from: [entry], tags: ["primary", "eu"]).instances.count == 1)
        #expect(ConsulServiceEntry.instances(from: [entry], tags: ["PRIMARY"]).instances.count == 1)
        #expect(ConsulServiceEntry.instances(from: [entry], tags: ["primary", "us"]).instances.isEmpty)
    }

    @Test("warning instances: left out by default; with includeWarning, weighted by Weights.Warning")
    func warning() throws {
        let passing = ConsulServiceEntry(
            node: "n", nodeAddress: "10.0.0.1", serviceID: "a", serviceName: "web", port: 80,
            passingWeight: 10, warningWeight: 2, checkStatuses: ["passing", "passing"]
        )
        var warning = passing
        warning.serviceID = "b"
        warning.serviceAddress = "10.0.0.2"
        warning.checkStatuses = ["passing", "warning"]
        var critical = passing
        critical.serviceID = "c"
        critical.serviceAddress = "10.0.0.3"
        critical.checkStatuses = ["warning", "critical"]
        let entries = [passing, warning, critical]
        #expect(ConsulServiceEntry.instances(from: entries, tags: []).instances.map(\.id) == ["10.0.0.1:80"])
        let both = ConsulServiceEntry.instances(from: entries, tags: [], includeWarning: true).instances
        #expect(both.map(\.id) == ["10.0.0.1:80", "10.0.0.2:80"])
        #expect(both.map(\.weight) == [10, 2])
        #expect(both[1].metadata["consul.status"] == "warning")
        #expect(both[0].metadata["consul.status"] == nil)
    }

    @Test("stalls: an idle return cut short by the agent's max_query_time is not one; an immediate one is")
    func stalls() {
        // The agent's max_query_time (60 s) is below wait/2 (150 s).
        var state = BlockingLoopState(wait: .seconds(300))
        #expect(state.answered(index: 7, elapsed: .milliseconds(2)) == .progressed)
        for _ in 0..<5 {
            #expect(state.answered(index: 7, elapsed: .seconds(60)) == .progressed)
        }
        #expect(state.stalls == 0)
        // A wait over 20 minutes, capped by the agent at 10.
        var long = BlockingLoopState(wait: .seconds(25 * 60))
        _ = long.answered(index: 7, elapsed: .milliseconds(2))
        #expect(long.answered(index: 7, elapsed: .seconds(600)) == .progressed)
        // Back at once without a change: a stall, whatever the wait.
        #expect(long.answered(index: 7, elapsed: .milliseconds(30)) == .stalled)
        // A short wait: half of it is the threshold.
        var short = BlockingLoopState(wait: .milliseconds(300))
        _ = short.answered(index: 7, elapsed: .milliseconds(2))
        #expect(short.answered(index: 7, elapsed: .milliseconds(160)) == .progressed)
        #expect(short.answered(index: 7, elapsed: .milliseconds(100)) == .stalled)
    }

    @Test("the token bucket: a burst at once, then the rate")
    func tokenBucket() {
        let start = ContinuousClock.now
        var bucket = TokenBucket(.init(requestsPerSecond: 2, burst: 3), now: start)
        #expect(bucket.take(now: start) == .zero)
        #expect(bucket.take(now: start) == .zero)
        #expect(bucket.take(now: start) == .zero)
        // Empty: the fourth waits half a second (2 a second), the fifth a second.
        #expect(bucket.take(now: start) == .milliseconds(500))
        #expect(bucket.take(now: start) == .seconds(1))
        // Callers that waited: at start + 1 s the debt is paid, the next waits 500 ms again.
        #expect(bucket.take(now: start + .seconds(1)) == .milliseconds(500))
        // A long quiet spell refills to the burst, no more.
        let later = start + .seconds(60)
        #expect(bucket.take(now: later) == .zero)
        #expect(bucket.take(now: later) == .zero)
        #expect(bucket.take(now: later) == .zero)
        #expect(bucket.take(now: later) > .zero)
        // Over 10 s, at most burst + 10 × rate requests start without waiting.
        var counting = TokenBucket(.init(requestsPerSecond: 1, burst: 5), now: start)
        var now = start
        var started = 0
        while now < start + .seconds(10) {
            let pause = counting.take(now: now)
            now += pause
            if now < start + .seconds(10) { started += 1 }
        }
        #expect(started <= 15, "\(started)")
        #expect(started >= 14, "\(started)")
    }

    @Test("a publisher configuration it cannot work with is an error from run()")
    func badPublisherConfiguration() async {
        let client = ConsulClient(configuration: .init(port: 1))
        for limit in [
            ConsulPublisher.RateLimit(requestsPerSecond: 0, burst: 1), .init(requestsPerSecond: .nan, burst: 1),
            .init(requestsPerSecond: 1, burst: 0),
        ] {
            let publisher = ConsulPublisher(service: "web", client: client, configuration: .init(rateLimit: limit))
            await #expect(throws: ConsulError.self) { try await publisher.run() }
        }
    }

    @Test("registrations: a passing weight or port outside 1...65535, a warning weight outside 0...65535, are rejected")
    func registrationValidation() {
        func registration(passing: Int = 1, warning: Int = 1, port: Int = 80) -> ConsulServiceRegistration {
            ConsulServiceRegistration(
                id: "a", name: "web", port: port, passingWeight: passing, warningWeight: warning, check: .init(ttl: .seconds(10))
            )
        }
        #expect(throws: Never.self) { try registration(passing: 65535, warning: 65535).validate() }
        // Warning 0 is Consul's "no traffic while warning".
        #expect(throws: Never.self) { try registration(passing: 1, warning: 0).validate() }
        for bad in [
            registration(passing: 0), registration(passing: 65536), registration(warning: 65536), registration(warning: -1),
            registration(port: 0),
        ] {
            let error = #expect(throws: ConsulError.self) { try bad.validate() }
            #expect(error?.code == .invalidArgument)
        }
    }

    @Test("Retry-After: seconds are honoured, anything else is not")
    func retryAfter() {
        #expect(ConsulClient.parseRetryAfter("3") == .seconds(3))
        #expect(ConsulClient.parseRetryAfter(" 0 ") == .zero)
        #expect(ConsulClient.parseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT") == nil)
        #expect(ConsulClient.parseRetryAfter("-1") == nil)
        #expect(ConsulClient.parseRetryAfter("999999") == .seconds(3600))
    }

    @Test("consistency modes become query items")
    func consistency() {
        func items(_ consistency: ConsulClient.Consistency) -> [String] { consistency.queryItems.map(\.0) }
        #expect(items(.default).isEmpty)
        #expect(items(.stale) == ["stale"])
        #expect(items(.consistent) == ["consistent"])
        #expect(items(.cached) == ["cached"])
        #expect("\(ConsulClient.Consistency.cached)" == "cached")
    }
}

@Suite("ConsulConfiguration from CONSUL_* environment variables")
struct ConsulEnvironmentTests {
    typealias Configuration = ConsulConfiguration

    @Test("nothing set: the local agent over HTTP on 8500")
    func defaults() throws {
        let configuration = try Configuration(environment: [:])
        #expect(configuration.baseURL == "http://127.0.0.1:8500")
        #expect(configuration.token == nil && configuration.datacenter == nil && configuration.caCertificatePath == nil)
        // Empty variables count as unset.
        let empty = try Configuration(environment: ["CONSUL_HTTP_ADDR": "", "CONSUL_HTTP_TOKEN": "", "CONSUL_HTTP_SSL": ""])
        #expect(empty == configuration)
    }

    @Test(
        "https defaults to port 8501",
        arguments: [
            (["CONSUL_HTTP_ADDR": "https://consul.internal"], "https://consul.internal:8501"),
            (["CONSUL_HTTP_ADDR": "consul.internal", "CONSUL_HTTP_SSL": "true"], "https://consul.internal:8501"),
            (["CONSUL_HTTP_ADDR": "http://consul.internal:8500", "CONSUL_HTTP_SSL": "1"], "https://consul.internal:8500"),
            (["CONSUL_HTTP_ADDR": "consul.internal:9500", "CONSUL_HTTP_SSL": "false"], "http://consul.internal:9500"),
            (["CONSUL_HTTP_ADDR": "[::1]:8600"], "http://[::1]:8600"),
            (["CONSUL_HTTP_ADDR": "http://10.1.2.3/"], "http://10.1.2.3:8500"),
            (["CONSUL_HTTP_SSL": "T"], "https://127.0.0.1:8501"),
        ])
    func addresses(environment: [String: String], url: String) throws {
        #expect(try Configuration(environment: environment).baseURL == url)
    }

    @Test("token, CA file and datacenter are read")
    func others() throws {
        let configuration = try Configuration(environment: [
            "CONSUL_HTTP_TOKEN": "3f1c-secret", "CONSUL_CACERT": "/etc/consul/ca.pem", "CONSUL_DATACENTER": "eu-west",
        ])
        #expect(configuration.token == "3f1c-secret")
        #expect(configuration.caCertificatePath == "/etc/consul/ca.pem")
        #expect(configuration.datacenter == "eu-west")
    }

    @Test("explicit configuration wins over the environment")
    func explicitWins() throws {
        let environment = [
            "CONSUL_HTTP_ADDR": "https://env.example:9501", "CONSUL_HTTP_TOKEN": "env-token", "CONSUL_HTTP_SSL": "true",
            "CONSUL_CACERT": "/env/ca.pem", "CONSUL_DATACENTER": "env-dc",
        ]
        let configuration = try Configuration(
            environment: environment,
            host: "10.0.0.9",
            port: 8500,
            tls: false,
            caCertificatePath: "/explicit/ca.pem",
            datacenter: "dc1",
            token: "explicit-token"
        )
        #expect(configuration.baseURL == "http://10.0.0.9:8500")
        #expect(configuration.token == "explicit-token")
        #expect(configuration.datacenter == "dc1")
        #expect(configuration.caCertificatePath == "/explicit/ca.pem")
        // Only the host given: the port still comes from the environment.
        let partly = try Configuration(environment: environment, host: "10.0.0.9")
        #expect(partly.baseURL == "https://10.0.0.9:9501")
    }

    @Test(
        "malformed values are clear errors",
        arguments: [
            ["CONSUL_HTTP_ADDR": "unix:///var/run/consul.sock"],
            ["CONSUL_HTTP_ADDR": "ftp://consul.internal"],
            ["CONSUL_HTTP_ADDR": "consul.internal:http"],
            ["CONSUL_HTTP_ADDR": "consul.internal:70000"],
            ["CONSUL_HTTP_ADDR": "consul.internal:8500/v1"],
            ["CONSUL_HTTP_ADDR": "[::1:8500"],
            ["CONSUL_HTTP_ADDR": "http://"],
            ["CONSUL_HTTP_SSL": "yes"],
        ])
    func malformed(environment: [String: String]) {
        let error = #expect(throws: ConsulError.self) { try Configuration(environment: environment) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("CONSUL_") == true, "\(String(describing: error))")
    }

    @Test("an explicit port survives turning TLS on; the default follows it")
    func portFollowsTLS() {
        var configuration = Configuration(host: "a")
        #expect(configuration.port == 8500)
        configuration.tls = true
        #expect(configuration.port == 8501)
        configuration.port = 9000
        configuration.tls = false
        #expect(configuration.port == 9000)
    }
}
