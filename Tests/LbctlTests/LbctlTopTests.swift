import Foundation
import LoadBalancerLocalBackends
import LoadBalancerTestKit
import LoadBalancerTestServers
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// tmux, for driving `lbctl top` on a real (pseudo) terminal: the first of the usual places.
private let tmuxPath: String? = ["/usr/bin/tmux", "/usr/local/bin/tmux", "/opt/homebrew/bin/tmux"].first {
    FileManager.default.isExecutableFile(atPath: $0)
}

/// A tmux server of its own (its own socket), with one session running a shell command.
private struct TmuxSession {
    let tmux: String
    let socket = "lbctl-top-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"

    /// Runs `tmux -L socket arguments...` to its end; returns its standard output.
    @discardableResult
    func run(_ arguments: [String]) async throws -> String {
        let process = try ChildProcess(program: tmux, ["-L", socket, "-f", "/dev/null"] + arguments)
        let status = try await process.exitStatus(timeout: .seconds(20))
        guard status == 0 else { throw ClusterError("tmux \(arguments.first ?? "") exited with \(status): \(process.stderr)") }
        return process.stdout
    }

    /// Starts a detached session running `command` in a 200 x 50 terminal. The pane stays on
    /// screen after the command ends (`remain-on-exit`, set before the session starts), with no
    /// process left behind it.
    func start(_ command: String) async throws {
        try await run([
            "start-server", ";", "set-option", "-g", "remain-on-exit", "on", ";",
            "new-session", "-d", "-s", "top", "-x", "200", "-y", "50", command,
        ])
    }

    /// The screen's text now (`escapes`: with the colour sequences).
    func screen(escapes: Bool = false) async throws -> String {
        try await run(["capture-pane", "-p", "-t", "top"] + (escapes ? ["-e"] : []))
    }

    /// Waits (bounded, polling) until the screen satisfies `condition`; returns that screen.
    func waitForScreen(_ what: String, escapes: Bool = false, _ condition: (String) -> Bool) async throws -> String {
        let deadline = ContinuousClock.now + TestTimeScale.scaled(.seconds(40))
        var last = ""
        while ContinuousClock.now < deadline {
            last = try await screen(escapes: escapes)
            if condition(last) { return last }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ClusterError("the screen never showed \(what); it shows:\n\(last)")
    }

    /// Ends the session: the pane's processes first (killed, should lbctl still run), then the server.
    func kill() async {
        if let pids = try? await run(["list-panes", "-a", "-F", "#{pane_pid} #{pane_dead}"]) {
            for line in pids.split(separator: "\n") {
                let fields = line.split(separator: " ")
                guard fields.count == 2, fields[1] == "0", let pid = Int32(fields[0]) else { continue }
                killProcessGroup(pid)
            }
        }
        // The server, by its pid: it inherits the test process's blocked signals, SIGTERM among
        // them, and `kill-server` asks it to end with SIGTERM.
        if let pid = try? await run(["display-message", "-p", "-t", "top", "#{pid}"]).trimmingCharacters(in: .whitespacesAndNewlines),
            let server = Int32(pid)
        {
            killProcess(server)
        }
    }
}

/// Kills `pid` and its process group (a pane's shell and what it runs).
private func killProcessGroup(_ pid: Int32) {
    _ = kill(-pid, SIGKILL)
    _ = kill(pid, SIGKILL)
}

/// Kills `pid` (SIGKILL).
private func killProcess(_ pid: Int32) {
    _ = kill(pid, SIGKILL)
}

/// The shell command of a session: lbctl top, then its exit status and the terminal's settings.
private func topCommand(_ arguments: [String]) -> String {
    let quoted = ([LbctlProcess.executable.path, "top"] + arguments).map { "'\($0)'" }.joined(separator: " ")
    return "\(quoted); echo lbctl-exit=$?; stty -a"
}

/// Whether `stty -a`'s output on `screen` shows canonical mode and echo on (the terminal restored).
private func terminalRestored(_ screen: String) -> Bool {
    let words = Set(screen.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == ";" }).map(String.init))
    return words.contains("icanon") && words.contains("echo") && !words.contains("-icanon") && !words.contains("-echo")
}

@Suite("lbctl top", .serialized)
struct LbctlTopTests {
    /// Three backends: two healthy, one failing every request.
    private func backends() async throws -> (source: String, servers: [LocalHTTPBackend]) {
        let servers = [
            try await LocalHTTPBackend.start(.init(latency: .milliseconds(1))),
            try await LocalHTTPBackend.start(.init(latency: .milliseconds(1))),
            try await LocalHTTPBackend.start(.init(latency: .milliseconds(1), failureRate: 1)),
        ]
        return ("static://" + servers.map { "127.0.0.1:\($0.port)" }.joined(separator: ","), servers)
    }

    private func stop(_ servers: [LocalHTTPBackend]) async {
        for server in servers { try? await server.stop() }
    }

    /// Runs `body` with a tmux session, then kills the session and stops `servers`, whether `body`
    /// threw or not.
    private func withSession(tmux: String, servers: [LocalHTTPBackend], _ body: (TmuxSession) async throws -> Void) async throws {
        let session = TmuxSession(tmux: tmux)
        do {
            try await body(session)
        } catch {
            await session.kill()
            await stop(servers)
            throw error
        }
        await session.kill()
        await stop(servers)
    }

    @Test(
        "on a terminal: a refreshing table of every instance, the ejected one in red; q quits and restores the terminal",
        .enabled(
            if: tmuxPath != nil || !TestTier.isFast,
            "tmux is not installed: the terminal test of lbctl top is skipped in the fast tier (scripts/test.sh installs tmux)")
    )
    func terminal() async throws {
        let tmux = try #require(tmuxPath, "tmux is needed to test lbctl top on a terminal (scripts/test.sh installs it)")
        let (source, servers) = try await backends()
        try await withSession(tmux: tmux, servers: servers) { session in
            try await session.start(
                topCommand([source, "--balancer", "round-robin", "--ejection", "--interval", "0.2", "--concurrency", "2", "--rate", "100"]))
            let ids = servers.map { "127.0.0.1:\($0.port)" }
            let failing = ids[2]
            // Rows for every instance, the header of totals, and the failing instance ejected.
            let screen = try await session.waitForScreen("a row per instance with the failing one ejected") { screen in
                ids.allSatisfy(screen.contains) && screen.contains("INSTANCE") && screen.contains("instances 3 (1 ejected")
            }
            let rows = screen.split(separator: "\n").filter { line in ids.contains { line.hasPrefix($0) } }
            #expect(rows.count == 3, "\(screen)")
            let ejectedRow = try #require(rows.first { $0.hasPrefix(failing) })
            #expect(ejectedRow.contains("ejected (consecutive failures"), "\(screen)")
            #expect(screen.contains("q: quit"))
            // The ejected row is red (SGR 31), the header inverse.
            let coloured = try await session.screen(escapes: true)
            #expect(
                coloured.split(separator: "\n").contains { $0.contains("\u{1B}[31m") && $0.contains(failing) }, "\(coloured)")

            try await session.run(["send-keys", "-t", "top", "q"])
            let after = try await session.waitForScreen("lbctl's exit") { $0.contains("lbctl-exit=") }
            #expect(after.contains("lbctl-exit=0"), "\(after)")
            #expect(terminalRestored(after), "raw mode left on:\n\(after)")
        }
    }

    @Test(
        "on a terminal: Ctrl-C quits as q does and restores the terminal",
        .enabled(
            if: tmuxPath != nil || !TestTier.isFast,
            "tmux is not installed: the terminal test of lbctl top is skipped in the fast tier (scripts/test.sh installs tmux)")
    )
    func interrupt() async throws {
        let tmux = try #require(tmuxPath, "tmux is needed to test lbctl top on a terminal (scripts/test.sh installs it)")
        let (source, servers) = try await backends()
        try await withSession(tmux: tmux, servers: servers) { session in
            try await session.start(topCommand([source, "--balancer", "p2c-peak-ewma", "--no-load", "--interval", "0.2"]))
            let ids = servers.map { "127.0.0.1:\($0.port)" }
            _ = try await session.waitForScreen("a row per instance") { screen in ids.allSatisfy(screen.contains) }
            try await session.run(["send-keys", "-t", "top", "C-c"])
            let after = try await session.waitForScreen("lbctl's exit") { $0.contains("lbctl-exit=") }
            #expect(after.contains("lbctl-exit=0"), "\(after)")
            #expect(terminalRestored(after), "raw mode left on:\n\(after)")
            #expect(servers.allSatisfy { $0.served.total == 0 }, "--no-load sends nothing")
        }
    }

    private struct Frame: Decodable {
        struct Row: Decodable {
            var id: String
            var picks: Int
            var share: Double
            var requests: Int
            var failures: Int
            var inFlight: Int?
            var latencyEstimateMs: Double?
            var usable: Bool
            var health: String
            var state: String
        }
        var balancer: String
        var interval: Double
        var picks: Int
        var requests: Int
        var instances: [Row]
        var explanations: [String]?
    }

    @Test("--json: one frame per interval, each instance's picks, share and load")
    func json() async throws {
        let (source, servers) = try await backends()
        defer { Task { for server in servers { try? await server.stop() } } }
        let result = try await Lbctl.run([
            // Frames of a second: with shorter ones, a loaded machine (a full test run) left some runs'
            // frames without a request to the failing instance.
            "top", source, "--balancer", "p2c-least-outstanding", "--json", "--frames", "3", "--interval", "1", "--concurrency", "2",
            "--rate", "100",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.count == 3, "\(result.stdout)")
        let frames = try lines.map { try JSONDecoder().decode(Frame.self, from: Data($0.utf8)) }
        let ids = Set(servers.map { "127.0.0.1:\($0.port)" })
        for frame in frames {
            #expect(frame.balancer == "P2CBalancer")
            #expect(Set(frame.instances.map(\.id)) == ids)
            #expect(frame.picks == frame.instances.reduce(0) { $0 + $1.picks })
            #expect(frame.instances.allSatisfy { $0.inFlight != nil && $0.health == "notChecked" })
            #expect(frame.interval > 0.8 && frame.interval < 5, "\(frame.interval)")
            if frame.picks > 0 { #expect(abs(frame.instances.reduce(0) { $0 + $1.share } - 1) < 1e-6) }
            #expect(frame.explanations == nil)
        }
        #expect(frames.contains { $0.picks > 0 && $0.requests > 0 }, "\(result.stdout)")
        let failing = "127.0.0.1:\(servers[2].port)"
        #expect(frames.contains { frame in frame.instances.contains { $0.id == failing && $0.failures > 0 } })
    }

    @Test("--explain: P2C's candidates and costs in every frame")
    func explain() async throws {
        let (source, servers) = try await backends()
        defer { Task { for server in servers { try? await server.stop() } } }
        let result = try await Lbctl.run([
            // Frames of a second (of 0.3 s, a loaded machine once sent no request in both).
            "top", source, "--balancer", "p2c-peak-ewma", "--json", "--explain", "--explain-every", "5", "--frames", "2", "--interval",
            "1", "--rate", "100",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let frames = try result.stdout.split(separator: "\n").map { try JSONDecoder().decode(Frame.self, from: Data($0.utf8)) }
        #expect(frames.count == 2)
        let explanations = frames.flatMap { $0.explanations ?? [] }
        #expect(!explanations.isEmpty, "\(result.stdout)")
        #expect(explanations.allSatisfy { $0.contains(" <- p2c ") && $0.contains(" vs ") && $0.contains("cost") }, "\(explanations)")
    }

    @Test("not a terminal: plain lines per interval, no escape sequences; --no-load sends nothing")
    func plain() async throws {
        let (source, servers) = try await backends()
        defer { Task { for server in servers { try? await server.stop() } } }
        let result = try await Lbctl.run(["top", source, "--frames", "2", "--interval", "0.2", "--rate", "100"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(!result.stdout.contains("\u{1B}"))
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.filter { $0.hasPrefix("lbctl top") }.count == 2, "\(result.stdout)")
        for server in servers {
            #expect(lines.filter { $0.hasPrefix("  instance=127.0.0.1:\(server.port) ") }.count == 2, "\(result.stdout)")
        }

        // Fresh backends for --no-load: requests still in flight when the run above ended may
        // reach its backends after it.
        let (idleSource, idleServers) = try await backends()
        defer { Task { for server in idleServers { try? await server.stop() } } }
        let idle = try await Lbctl.run(["top", idleSource, "--no-load", "--json", "--frames", "2", "--interval", "0.2"])
        #expect(idle.status == 0, "\(idle.stderr)")
        let frames = try idle.stdout.split(separator: "\n").map { try JSONDecoder().decode(Frame.self, from: Data($0.utf8)) }
        #expect(frames.count == 2 && frames.allSatisfy { $0.picks == 0 && $0.requests == 0 && $0.instances.count == 3 })
        #expect(idleServers.allSatisfy { $0.served.total == 0 })
    }

    @Test("--health-check: the instance failing its check is shown failing and out of picks, the others passing")
    func healthChecks() async throws {
        let (source, servers) = try await backends()
        defer { Task { for server in servers { try? await server.stop() } } }
        servers[1].setHealthy(false)
        let result = try await Lbctl.run([
            "top", source, "--no-load", "--json", "--health-check", "http", "--health-check-interval", "0.2", "--frames", "6",
            "--interval", "0.3",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let frames = try result.stdout.split(separator: "\n").map { try JSONDecoder().decode(Frame.self, from: Data($0.utf8)) }
        #expect(frames.count == 6)
        let unhealthy = "127.0.0.1:\(servers[1].port)"
        let last = try #require(frames.last)
        let row = try #require(last.instances.first { $0.id == unhealthy })
        #expect(row.health == "failing" && !row.usable && row.state.contains("failing check"), "\(result.stdout)")
        // Each healthy backend passes its check in some frame (a check may time out on a busy machine).
        for server in [servers[0], servers[2]] {
            let id = "127.0.0.1:\(server.port)"
            #expect(frames.contains { $0.instances.contains { $0.id == id && $0.health == "passing" && $0.usable } }, "\(result.stdout)")
        }
        #expect(servers.allSatisfy { $0.served.total == 0 } && servers[1].healthChecksServed > 0)
    }

    @Test("--health-check takes bench's timeout and thresholds")
    func healthCheckSettings() async throws {
        let (source, servers) = try await backends()
        defer { Task { for server in servers { try? await server.stop() } } }
        let result = try await Lbctl.run([
            "top", source, "--no-load", "--json", "--health-check", "http", "--health-check-interval", "0.2", "--health-check-timeout",
            "0.5",
            // Ten frames (3 s): every server's first check (within the 0.2 s jitter) is in by then
            // even on a loaded machine; two frames (0.6 s) missed one in a CI run.
            "--healthy-threshold", "1", "--unhealthy-threshold", "1", "--frames", "10", "--interval", "0.3",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let frames = try result.stdout.split(separator: "\n").map { try JSONDecoder().decode(Frame.self, from: Data($0.utf8)) }
        #expect(frames.count == 10 && frames.allSatisfy { $0.instances.count == 3 }, "\(result.stdout)")
        #expect(result.stdout.contains(#""label":"round-robin + http health checks (no load)""#), "\(result.stdout)")
        #expect(servers.allSatisfy { $0.served.total == 0 } && servers.allSatisfy { $0.healthChecksServed > 0 })
    }

    @Test(
        "bad top arguments: one line on stderr, exit status 2",
        arguments: [
            (["top", "static://127.0.0.1:1", "--interval", "0"], "--interval must be between 0.05 and 3600 seconds"),
            (["top", "static://127.0.0.1:1", "--frames", "0"], "--frames must be at least 1"),
            (["top", "static://127.0.0.1:1", "--no-load", "/x"], "PATH is for the load"),
            (["top", "static://127.0.0.1:1", "--explain-every", "0"], "--explain-every must be at least 1"),
            (["top", "static://127.0.0.1:1", "--health-check", "grpc"], "checks with http or tcp"),
            (["top", "static://127.0.0.1:1", "--health-check", "grpc", "--health-check-service", "x"], "checks with http or tcp"),
            (["top", "static://127.0.0.1:1", "--health-check-service", "x"], "grpc health checks are lbctl bench's"),
            (["top", "static://127.0.0.1:1", "--health-check-timeout", "1"], "--health-check-timeout needs --health-check"),
            (
                ["top", "static://127.0.0.1:1", "--health-check", "tcp", "--health-check-path", "/up"],
                "--health-check-path is for --health-check http"
            ),
            (
                ["top", "static://127.0.0.1:1", "--health-check", "http", "--unhealthy-threshold", "0"],
                "--unhealthy-threshold must be at least 1"
            ),
            (["top", "static://127.0.0.1:1", "--concurrency", "0"], "--concurrency must be at least 1"),
            (["top", "static://127.0.0.1:1", "--timeout", "0"], "--timeout must be a positive number of seconds"),
            (["top", "static://127.0.0.1:1", "--sort", "size"], "'size' is invalid for '--sort"),
            (["top", "static://nope"], "invalid instance \"nope\""),
        ]
    )
    func badInput(arguments: [String], message: String) async throws {
        let result = try await Lbctl.run(arguments)
        #expect(result.status == 2, "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
    }

    @Test("top's help offers the health-check options it takes, not bench's gRPC service")
    func healthCheckHelp() async throws {
        let top = try await Lbctl.run(["top", "--help"])
        #expect(top.status == 0, "\(top.stderr)")
        #expect(top.stdout.contains("--health-check-timeout"), "\(top.stdout)")
        #expect(!top.stdout.contains("--health-check-service"), "\(top.stdout)")
        let bench = try await Lbctl.run(["bench", "--help"])
        #expect(bench.stdout.contains("--health-check-service <health-check-service>"), "\(bench.stdout)")
    }
}
