import Foundation
import LoadBalancerLocalBackends
import LoadBalancerTestServers
import Testing

@Suite("lbctl end to end", .serialized)
struct LbctlTests {
    @Test("the binary is built next to the tests")
    func binaryExists() {
        #expect(FileManager.default.isExecutableFile(atPath: LbctlProcess.executable.path), "\(LbctlProcess.executable.path)")
    }

    @Test("resolve prints a static source as a table")
    func resolveTable() async throws {
        let result = try await Lbctl.run(["resolve", "static://127.0.0.1:8081,[::1]:80,svc.example:443"])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 4)
        #expect(
            lines[0].split(separator: " ", omittingEmptySubsequences: true) == ["ID", "HOST", "PORT", "WEIGHT", "PRIORITY", "METADATA"])
        #expect(lines[1].split(separator: " ", omittingEmptySubsequences: true) == ["127.0.0.1:8081", "127.0.0.1", "8081", "1", "0"])
        #expect(lines[2].split(separator: " ", omittingEmptySubsequences: true) == ["[::1]:80", "::1", "80", "1", "0"])
        #expect(lines[3].split(separator: " ", omittingEmptySubsequences: true) == ["svc.example:443", "svc.example", "443", "1", "0"])
    }

    @Test("resolve --json prints the instances as JSON")
    func resolveJSON() async throws {
        let result = try await Lbctl.run(["resolve", "static://127.0.0.1:8082,127.0.0.1:8081", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        struct Item: Decodable, Equatable {
            var id: String
            var host: String
            var port: Int
            var weight: Int
            var priority: Int
            var tags: [String]
            var metadata: [String: String]
        }
        let items = try JSONDecoder().decode([Item].self, from: Data(result.stdout.utf8))
        #expect(items.map(\.id) == ["127.0.0.1:8081", "127.0.0.1:8082"])
        #expect(items[0] == Item(id: "127.0.0.1:8081", host: "127.0.0.1", port: 8081, weight: 1, priority: 0, tags: [], metadata: [:]))
    }

    @Test(
        "bad sources and arguments: one line on stderr, exit status 2",
        arguments: [
            (["resolve", "static://nope"], "invalid instance \"nope\""),
            (["resolve", "static://127.0.0.1:0"], "outside 1...65535"),
            (["resolve", "127.0.0.1:80"], "expected SCHEME://"),
            (["resolve", "gopher://x:1"], "unknown scheme 'gopher'"),
            (["resolve", "etcd://127.0.0.1:2379"], "expected etcd://"),
            (["resolve", "consul://127.0.0.1:8500/web?color=blue"], "unknown query key 'color'"),
            (["resolve", "zk://127.0.0.1:2181/svc?shard=1"], "unknown query key 'shard' (expected endpoint)"),
            (["resolve", "etcd://127.0.0.1:2379/svc/?endpoint="], "malformed query item 'endpoint='"),
            (["resolve", "dns+srv://web.example"], "_service._proto.name"),
            (["bench", "static://127.0.0.1:1", "--requests", "0"], "--requests must be at least 1"),
            (["bench", "static://127.0.0.1:1", "--concurrency", "0"], "--concurrency must be at least 1"),
            (["bench", "static://127.0.0.1:1", "--timeout", "0"], "--timeout must be a positive number of seconds"),
            (["bench", "static://127.0.0.1:1", "--rate", "0"], "--rate must be positive"),
            (["bench", "static://127.0.0.1:1", "--balancer", "fastest"], "'fastest' is invalid for '--balancer"),
            (["bench", "static://127.0.0.1:1", "--concurrency", "many"], "'many' is invalid"),
            (["bench", "static://127.0.0.1:1", "health"], "PATH must start with '/'"),
            (["frobnicate"], "Unexpected argument 'frobnicate'"),
        ]
    )
    func badInput(arguments: [String], message: String) async throws {
        let result = try await Lbctl.run(arguments)
        #expect(result.status == 2)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(result.stderr)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(result.stderr.hasPrefix("lbctl: "))
    }

    @Test("bench sends real HTTP load through the balancer and reports distribution, latency and errors")
    func bench() async throws {
        let healthy = try await LocalHTTPBackend.start(.init(latency: .milliseconds(1)))
        let other = try await LocalHTTPBackend.start(.init(latency: .milliseconds(1)))
        let failing = try await LocalHTTPBackend.start(.init(latency: .milliseconds(1), failureRate: 1))
        let source = "static://" + [healthy, other, failing].map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
        defer { Task { for server in [healthy, other, failing] { try? await server.stop() } } }

        // Round robin, no retries: a third of the requests meet the failing backend.
        let plain = try await Lbctl.run(["bench", source, "--balancer", "round-robin", "--requests", "300", "--concurrency", "3", "/"])
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(plain.stdout.contains("300 requests"))
        #expect(plain.stdout.contains("200 succeeded, 100 failed, 0 retries"), "\(plain.stdout)")
        for server in [healthy, other, failing] {
            #expect(plain.stdout.contains("127.0.0.1:\(server.port)"))
        }
        #expect(row(plain.stdout, "127.0.0.1:\(failing.port)") == ["100", "33.3%", "100"])
        #expect(row(plain.stdout, "HTTP") == ["500", "100"])
        #expect(plain.stdout.contains("p99.9"))
        #expect(failing.served.total == 100)

        // With retries every request succeeds: each failed attempt is retried on a fresh pick (one
        // request at a time, so round robin's next pick is always another instance).
        let retried = try await Lbctl.run([
            "bench", source, "--balancer", "round-robin", "--requests", "300", "--concurrency", "1", "--retries", "2", "/",
        ])
        #expect(retried.status == 0, "\(retried.stderr)")
        #expect(retried.stdout.contains("300 succeeded, 0 failed"), "\(retried.stdout)")
        // Picks cycle through the three instances and every other request meets the failing one
        // first: about 150 retries, depending on where the random start falls.
        let retries = retried.stdout.split(separator: "\n").first { $0.contains(" retries") }
            .flatMap { line in line.split(separator: ",").last?.split(separator: " ").first }
            .flatMap { Int($0) }
        #expect((149...151).contains(retries ?? -1), "\(retried.stdout)")
        #expect(retried.stdout.contains("errors by kind: none"))

        // A dead instance: connection errors are reported by kind, and the run still ends.
        try await other.stop()
        let dead = try await Lbctl.run(["bench", "static://127.0.0.1:\(other.port)", "--requests", "5", "--timeout", "2", "/"])
        #expect(dead.status == 0, "\(dead.stderr)")
        #expect(dead.stdout.contains("0 succeeded, 5 failed"), "\(dead.stdout)")
    }

    @Test("bench paces requests with --rate")
    func benchRate() async throws {
        let server = try await LocalHTTPBackend.start(.init(latency: .milliseconds(1)))
        defer { Task { try? await server.stop() } }
        let start = ContinuousClock.now
        let result = try await Lbctl.run(["bench", "static://127.0.0.1:\(server.port)", "--requests", "40", "--rate", "100", "/"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("40 succeeded"))
        // 40 requests at 100/s take at least 0.39 s.
        #expect(ContinuousClock.now - start >= .milliseconds(390))
    }

    @Test("demo completes and compares every balancer")
    func demo() async throws {
        let result = try await Lbctl.run(["demo", "--requests", "200", "--simulated-seconds", "5"])
        #expect(result.status == 0, "\(result.stderr)")
        for name in [
            "round-robin", "random", "weighted-round-robin", "weighted-random", "priority", "p2c-least-outstanding", "p2c-peak-ewma",
            "consistent-hash", "oracle",
        ] {
            #expect(result.stdout.contains(name), "\(name) missing")
        }
        #expect(result.stdout.contains("FLAKY"))
    }
}

/// The cells after the first of the output line that starts with `prefix`.
func row(_ output: String, _ prefix: String) -> [String] {
    guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) else { return [] }
    return Array(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().map(String.init))
}

@Suite("lbctl bench: slow start, priority failover and active health checks", .serialized)
struct LbctlBenchFeatureTests {
    @Test(
        "bad slow-start, priority and health-check options: one line on stderr, exit status 2",
        arguments: [
            (["--slow-start", "0"], "--slow-start must be a positive number of seconds"),
            (["--slow-start", "inf"], "--slow-start must be a positive number of seconds"),
            (["--slow-start-min-share", "0.2"], "--slow-start-min-share needs --slow-start"),
            (["--slow-start-aggression", "2"], "--slow-start-aggression needs --slow-start"),
            (["--slow-start", "2", "--slow-start-min-share", "1.5"], "--slow-start-min-share must be between 0 and 1"),
            (["--slow-start", "2", "--slow-start-aggression", "0"], "--slow-start-aggression must be a positive number"),
            (["--slow-start", "2", "--protocol", "grpc"], "the gRPC balancing transport (--protocol grpc) has no slow start"),
            (["--overprovisioning-factor", "2"], "--overprovisioning-factor needs --balancer priority"),
            (["--priority-panic-threshold", "0.2"], "--priority-panic-threshold needs --balancer priority"),
            (["--balancer", "priority", "--overprovisioning-factor", "0"], "--overprovisioning-factor must be above 0"),
            (["--balancer", "priority", "--overprovisioning-factor", "nan"], "--overprovisioning-factor must be above 0"),
            (["--balancer", "priority", "--priority-panic-threshold", "2"], "--priority-panic-threshold must be between 0 and 1"),
            (["--health-check", "smtp"], "'smtp' is invalid for '--health-check"),
            (["--health-check-interval", "1"], "--health-check-interval needs --health-check"),
            (["--healthy-threshold", "1"], "--healthy-threshold needs --health-check"),
            (["--health-check-path", "/up"], "--health-check-path needs --health-check http"),
            (["--health-check", "tcp", "--health-check-path", "/up"], "--health-check-path is for --health-check http"),
            (["--health-check", "http", "--health-check-path", "up"], "--health-check-path must start with '/'"),
            (["--health-check", "http", "--health-check-service", "x"], "--health-check-service is for --health-check grpc"),
            (["--health-check", "http", "--health-check-interval=-1"], "--health-check-interval must be a positive number of seconds"),
            (["--health-check", "tcp", "--health-check-timeout", "0"], "--health-check-timeout must be a positive number of seconds"),
            (["--health-check", "grpc", "--unhealthy-threshold", "0"], "--unhealthy-threshold must be at least 1"),
            (["--health-check", "grpc", "--healthy-threshold", "0"], "--healthy-threshold must be at least 1"),
        ]
    )
    func badInput(options: [String], message: String) async throws {
        let result = try await Lbctl.run(["bench", "static://127.0.0.1:1"] + options)
        #expect(result.status == 2)
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(result.stderr.hasPrefix("lbctl: "))
    }

    @Test("--health-check http keeps a backend whose /health fails out of picks, and reports it")
    func httpHealthChecks() async throws {
        let backends = [
            try await LocalHTTPBackend.start(.init(latency: .milliseconds(1))),
            try await LocalHTTPBackend.start(.init(latency: .milliseconds(1))),
            try await LocalHTTPBackend.start(.init(latency: .milliseconds(1))),
        ]
        defer { Task { for backend in backends { try? await backend.stop() } } }
        backends[2].setHealthy(false)
        let ids = backends.map { "127.0.0.1:\($0.port)" }
        let result = try await Lbctl.run([
            "bench", "static://" + ids.joined(separator: ","), "--requests", "200", "--concurrency", "2",
            // Checks may take 5 s: a healthy backend's first check outlasting the default 1 s on a
            // loaded machine would fail it, and with two of three failing the detector's panic
            // would rightly send the failing one calls (as the grpc test saw).
            "--health-check", "http", "--health-check-interval", "0.2", "--health-check-timeout", "5", "--unhealthy-threshold", "1",
            "--per-second", "/",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("round-robin + http health checks: 200 requests"), "\(result.stdout)")
        #expect(result.stdout.contains("200 succeeded, 0 failed"), "\(result.stdout)")
        // The load starts after the first checks: the failing backend takes no request at all.
        #expect(backends[2].served.total == 0)
        #expect(backends[0].served.total == 100 && backends[1].served.total == 100, "\(result.stdout)")
        #expect(backends[2].healthChecksServed >= 1)
        #expect(result.stdout.contains("health checks (http GET /health every 0.2 s)"), "\(result.stdout)")
        #expect(result.stdout.contains("not passing at the start: \(ids[2]); not passing at the end: \(ids[2])"), "\(result.stdout)")
        // --per-second: a table with a column per instance that took attempts.
        let table = try #require(PerSecondTable(result.stdout), "\(result.stdout)")
        #expect(Set(table.ids) == Set(ids.prefix(2)), "\(result.stdout)")
        #expect(table.rows.map(\.attempts).reduce(0, +) == 200)
    }

    @Test("--health-check with two of three failing from the start: the report says the detector's panic had every instance take calls")
    func healthCheckPanicReported() async throws {
        let backends = [
            try await LocalHTTPBackend.start(.init(latency: .milliseconds(1))),
            try await LocalHTTPBackend.start(.init(latency: .milliseconds(1))),
            try await LocalHTTPBackend.start(.init(latency: .milliseconds(1))),
        ]
        defer { Task { for backend in backends { try? await backend.stop() } } }
        backends[1].setHealthy(false)
        backends[2].setHealthy(false)
        let ids = backends.map { "127.0.0.1:\($0.port)" }
        let result = try await Lbctl.run([
            "bench", "static://" + ids.joined(separator: ","), "--requests", "90", "--concurrency", "1",
            // Checks may take 5 s, so that the healthy backend's first check passes on a loaded machine.
            "--health-check", "http", "--health-check-interval", "0.2", "--health-check-timeout", "5", "--unhealthy-threshold", "1", "/",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(
            result.stdout.contains(
                "not passing at the start: \([ids[1], ids[2]].sorted().joined(separator: ", ")) "
                    + "(too few passing: every instance took calls until enough passed)"),
            "\(result.stdout)")
        // One of three passing is below the panic threshold (half): round robin over all three
        // (each a third, within the per-thread rotation's evenness).
        #expect(backends.allSatisfy { (20...40).contains($0.served.total) }, "\(backends.map(\.served.total)) \(result.stdout)")
    }

    @Test("--health-check tcp, priority failover options and slow start run over a static set")
    func otherOptionsRun() async throws {
        let backends = [
            try await LocalHTTPBackend.start(.init(latency: .milliseconds(1))),
            try await LocalHTTPBackend.start(.init(latency: .milliseconds(1))),
        ]
        defer { Task { for backend in backends { try? await backend.stop() } } }
        let source = "static://" + backends.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
        let tcp = try await Lbctl.run([
            "bench", source, "--requests", "100", "--health-check", "tcp", "--health-check-interval", "0.5", "--ejection", "/",
        ])
        #expect(tcp.status == 0, "\(tcp.stderr)")
        #expect(tcp.stdout.contains("round-robin + ejection + tcp health checks"), "\(tcp.stdout)")
        #expect(tcp.stdout.contains("100 succeeded, 0 failed"), "\(tcp.stdout)")
        #expect(tcp.stdout.contains("not passing at the start: none; not passing at the end: none"), "\(tcp.stdout)")

        let priority = try await Lbctl.run([
            "bench", source, "--requests", "100", "--balancer", "priority", "--overprovisioning-factor", "1e9",
            "--priority-panic-threshold", "0.3", "/",
        ])
        #expect(priority.status == 0, "\(priority.stderr)")
        #expect(priority.stdout.contains("100 succeeded, 0 failed"), "\(priority.stdout)")

        // Slow start turns the per-second table on; the first set takes its full share at once.
        let slow = try await Lbctl.run([
            "bench", source, "--requests", "200", "--slow-start", "2", "--slow-start-min-share", "0.2", "--slow-start-aggression", "2", "/",
        ])
        #expect(slow.status == 0, "\(slow.stderr)")
        #expect(slow.stdout.contains("round-robin + slow start 2 s: 200 requests"), "\(slow.stdout)")
        let table = try #require(PerSecondTable(slow.stdout), "\(slow.stdout)")
        #expect(table.ids.count == 2)
        #expect(row(slow.stdout, "127.0.0.1:\(backends[0].port)").first == "100", "\(slow.stdout)")
        let quiet = try await Lbctl.run(["bench", source, "--requests", "20", "--slow-start", "2", "--no-per-second", "/"])
        #expect(quiet.status == 0, "\(quiet.stderr)")
        #expect(PerSecondTable(quiet.stdout) == nil, "\(quiet.stdout)")
    }
}
