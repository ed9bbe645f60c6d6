import LoadBalancerLocalBackends
import LoadBalancerTestServers
import Testing

@Suite("lbctl bench --protocol grpc")
struct LbctlGRPCBenchTests {
    @Test(
        "bad gRPC arguments: one line on stderr, exit status 2",
        arguments: [
            (["bench", "static://127.0.0.1:1", "--protocol", "ftp"], "'ftp' is invalid for '--protocol"),
            (
                ["bench", "static://127.0.0.1:1", "--protocol", "grpc", "--balancer", "priority"],
                "--balancer priority has no gRPC equivalent"
            ),
            (["bench", "static://127.0.0.1:1", "--protocol", "grpc", "/health"], "PATH ('/health') is for HTTP"),
            (["bench", "static://127.0.0.1:1", "--protocol", "grpc", "--retries", "5"], "--retries is at most 4 with --protocol grpc"),
            (["bench", "static://127.0.0.1:1", "--service", "users"], "--service is for --protocol grpc"),
        ]
    )
    func badInput(arguments: [String], message: String) async throws {
        let result = try await Lbctl.run(arguments)
        #expect(result.status == 2)
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(result.stderr.hasPrefix("lbctl: "))
    }

    @Test("bench calls Health/Check on every instance, and attributes a failing server's errors to it")
    func benchAttributesFailures() async throws {
        try await LocalGRPCHealthBackend.withBackends([
            .init(latency: .milliseconds(1)), .init(latency: .milliseconds(1)), .init(latency: .milliseconds(1), failureRate: 1),
        ]) { backends in
            let failing = backends[2]
            let source = "static://" + backends.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")

            // No retries: one attempt per request.
            let plain = try await Lbctl.run([
                "bench", source, "--protocol", "grpc", "--balancer", "round-robin", "--requests", "300", "--concurrency", "3",
            ])
            #expect(plain.status == 0, "\(plain.stderr)")
            let report = try #require(BenchReport(plain.stdout), "\(plain.stdout)")
            #expect(report.requests == 300)
            #expect(report.succeeded + report.failed == 300)
            #expect(report.retries == 0)
            #expect(report.rows.keys.sorted() == backends.map { "127.0.0.1:\($0.port)" }.sorted(), "\(plain.stdout)")
            #expect(report.rows.values.map(\.attempts).reduce(0, +) == 300)
            let failingRow = try #require(report.rows["127.0.0.1:\(failing.port)"])
            // Every call the failing server got is a failed attempt of its row, and the only failures.
            #expect(failingRow.attempts > 0)
            #expect(failingRow.failed == failingRow.attempts)
            #expect(failingRow.attempts == failing.served.total)
            #expect(report.failed == failingRow.attempts)
            for backend in backends.dropLast() {
                let row = try #require(report.rows["127.0.0.1:\(backend.port)"])
                #expect(row.attempts > 0)
                #expect(row.failed == 0)
                #expect(row.attempts == backend.served.total)
            }
            #expect(row(plain.stdout, "gRPC unavailable") == ["unavailable", "\(report.failed)"], "\(plain.stdout)")
            #expect(plain.stdout.contains("p99.9"))

            // With retries (grpc-swift's retry policy): each failed attempt is retried on a fresh pick
            // or was the last of a failed request, and only the failing server fails.
            let retried = try await Lbctl.run([
                "bench", source, "--protocol", "grpc", "--balancer", "round-robin", "--requests", "300", "--concurrency", "3",
                "--retries", "4",
            ])
            #expect(retried.status == 0, "\(retried.stderr)")
            let withRetries = try #require(BenchReport(retried.stdout), "\(retried.stdout)")
            #expect(withRetries.succeeded + withRetries.failed == 300)
            let attempts = withRetries.rows.values.map(\.attempts).reduce(0, +)
            #expect(attempts == 300 + withRetries.retries)
            #expect(withRetries.retries > 0)
            let failingAttempts = try #require(withRetries.rows["127.0.0.1:\(failing.port)"])
            #expect(failingAttempts.failed == failingAttempts.attempts)
            #expect(failingAttempts.attempts == withRetries.retries + withRetries.failed, "\(retried.stdout)")
            #expect(withRetries.rows.values.map(\.failed).reduce(0, +) == failingAttempts.failed)
            // Five attempts per request: a request fails only when all five meet the failing server.
            #expect(withRetries.succeeded >= 250, "\(retried.stdout)")
        }
    }

    @Test("an answer other than SERVING is a failure of its instance; --service names the service asked about")
    func benchServingStatus() async throws {
        try await LocalGRPCHealthBackend.withBackends([
            .init(latency: .zero, services: ["users"]), .init(latency: .zero, services: ["users"]),
        ]) { backends in
            let source = "static://" + backends.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
            backends[1].setStatus(.notServing)
            let result = try await Lbctl.run(["bench", source, "--protocol", "grpc", "--requests", "60", "--concurrency", "2"])
            #expect(result.status == 0, "\(result.stderr)")
            let report = try #require(BenchReport(result.stdout), "\(result.stdout)")
            let notServing = try #require(report.rows["127.0.0.1:\(backends[1].port)"])
            let serving = try #require(report.rows["127.0.0.1:\(backends[0].port)"])
            #expect(notServing.attempts > 0)
            #expect(notServing.failed == notServing.attempts)
            #expect(serving.failed == 0)
            #expect(report.failed == notServing.attempts)
            #expect(report.succeeded == serving.attempts)
            #expect(row(result.stdout, "status NOT_SERVING") == ["NOT_SERVING", "\(report.failed)"], "\(result.stdout)")

            backends[1].setStatus(.serving)
            let known = try await Lbctl.run([
                "bench", source, "--protocol", "grpc", "--service", "users", "--requests", "20", "--concurrency", "2",
            ])
            #expect(known.status == 0, "\(known.stderr)")
            #expect(known.stdout.contains("20 succeeded, 0 failed"), "\(known.stdout)")

            let unknown = try await Lbctl.run([
                "bench", source, "--protocol", "grpc", "--service", "orders", "--requests", "20", "--concurrency", "2",
            ])
            #expect(unknown.status == 0, "\(unknown.stderr)")
            #expect(unknown.stdout.contains("0 succeeded, 20 failed"), "\(unknown.stdout)")
            #expect(row(unknown.stdout, "gRPC notFound") == ["notFound", "20"], "\(unknown.stdout)")
        }
    }

    @Test("--health-check grpc keeps a NOT_SERVING server out of the transport's picks; --per-second reports the shares")
    func benchHealthChecks() async throws {
        try await LocalGRPCHealthBackend.withBackends([
            .init(latency: .zero), .init(latency: .zero), .init(latency: .zero),
        ]) { backends in
            let ids = backends.map { "127.0.0.1:\($0.port)" }
            backends[2].setStatus(.notServing)
            // Checks may take 5 s: a first check (a new connection) that outlasts the default 1 s
            // on a loaded machine fails a SERVING server at once, and with two of three failing
            // the detector's panic rightly sends calls to all three, the NOT_SERVING one too (two
            // fresh-clone CI runs sent it 2 calls so).
            let result = try await Lbctl.run([
                "bench", "static://" + ids.joined(separator: ","), "--protocol", "grpc", "--balancer", "round-robin",
                "--requests", "100", "--concurrency", "2", "--health-check", "grpc", "--health-check-interval", "0.2",
                "--health-check-timeout", "5", "--per-second",
            ])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("round-robin + grpc health checks: 100 requests"), "\(result.stdout)")
            // The load starts once every server had its first check: the NOT_SERVING one takes none.
            let report = try #require(BenchReport(result.stdout), "\(result.stdout)")
            #expect(report.succeeded == 100, "\(result.stdout)")
            #expect(report.rows[ids[2]] == nil, "\(result.stdout)")
            #expect(result.stdout.contains("health checks (grpc Health/Check '' every 0.2 s)"), "\(result.stdout)")
            #expect(result.stdout.contains("not passing at the start: \(ids[2]); not passing at the end: \(ids[2])"), "\(result.stdout)")
            let table = try #require(PerSecondTable(result.stdout), "\(result.stdout)")
            #expect(Set(table.ids) == Set(ids.prefix(2)), "\(result.stdout)")
        }
    }

    @Test("a dead instance: every request fails, counted as attempts that opened no stream, and the run ends")
    func benchDeadInstance() async throws {
        let port = try await LocalGRPCHealthBackend.withBackend(.init(latency: .zero)) { $0.port }
        let result = try await Lbctl.run([
            "bench", "static://127.0.0.1:\(port)", "--protocol", "grpc", "--requests", "5", "--concurrency", "1", "--timeout", "2",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("0 succeeded, 5 failed"), "\(result.stdout)")
        #expect(row(result.stdout, "(no stream)") == ["stream)", "5", "100.0%", "5"], "\(result.stdout)")
    }
}

/// The figures of a `bench` report.
struct BenchReport {
    var requests: Int
    var succeeded: Int
    var failed: Int
    var retries: Int
    /// Attempts and failed attempts per instance.
    var rows: [String: (attempts: Int, failed: Int)]

    /// Parses the summary line ("...: 300 requests in 0.5 s (600 req/s): 200 succeeded, 100 failed,
    /// 0 retries") and the per-instance table.
    init?(_ output: String) {
        let lines = output.split(separator: "\n").map(String.init)
        guard let summary = lines.first(where: { $0.contains(" requests in ") && $0.hasSuffix(" retries") }) else { return nil }
        func number(before word: String) -> Int? {
            let words = summary.split { $0 == " " || $0 == "," }
            guard let index = words.firstIndex(where: { $0 == word }), index > 0 else { return nil }
            return Int(words[index - 1])
        }
        guard let requests = number(before: "requests"), let succeeded = number(before: "succeeded"),
            let failed = number(before: "failed"), let retries = number(before: "retries")
        else { return nil }
        self.requests = requests
        self.succeeded = succeeded
        self.failed = failed
        self.retries = retries
        rows = [:]
        guard let header = lines.firstIndex(where: { $0.hasPrefix("INSTANCE") }) else { return nil }
        for line in lines[(header + 1)...] {
            let cells = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            // INSTANCE ATTEMPTS SHARE FAILED; the instance may be "(no stream)".
            guard cells.count >= 4, let attempts = Int(cells[cells.count - 3]), let failed = Int(cells[cells.count - 1]) else { break }
            rows[cells.dropLast(3).joined(separator: " ")] = (attempts, failed)
        }
    }
}
