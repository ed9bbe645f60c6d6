import Foundation
import LoadBalancer
import LoadBalancerTestKit
// Helpers the integration suites share: starting and stopping processes, and running the built
// `lbctl`. Bounded waiting, a flag and recording a publisher's updates are in
// LoadBalancerTestSupport (exported from here), which needs no registry module.
@_exported import LoadBalancerTestSupport
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Which suites a run includes. `LB_TEST_TIER=fast` (`scripts/test.sh --fast`) leaves out the
/// suites that start real registry servers (dnsmasq, etcd, ZooKeeper), even where those are
/// installed; the unit, static and in-process suites (the Consul test server, local HTTP backends,
/// gRPC on loopback, lbctl) still run. The full run, CI's, sets the `LB_*_INTEGRATION` variables,
/// which make those suites run and fail when their server is missing.
public enum TestTier {
    /// Whether this is the fast tier.
    public static let isFast = ProcessInfo.processInfo.environment["LB_TEST_TIER"] == "fast"
}

/// Sends SIGKILL to `pid` and waits, by bounded polling that never blocks a thread of the
/// concurrency pool, until it has exited (reaped here, or by Foundation's own process monitor).
public func killAndReap(_ pid: Int32, timeout: Duration = .seconds(10)) async {
    guard pid > 0 else { return }
    killProcess(pid)
    let timeout = TestTimeScale.scaled(timeout)
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        if result == pid || result == -1 { return }
        try? await Task.sleep(for: .milliseconds(5))
    }
}

/// Sends SIGKILL to `pid` and reaps it on a thread of its own (for `deinit` and other places that
/// cannot wait): a process in uninterruptible sleep may take seconds to die, and no caller waits.
public func killAndReapInBackground(_ pid: Int32) {
    guard pid > 0 else { return }
    killProcess(pid)
    Thread.detachNewThread {
        for _ in 0..<2_000 {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid || result == -1 { return }
            usleep(5_000)
        }
    }
}

/// Starts servers on a random base port, trying again on other ports (another test's server may
/// hold one) up to five times; `start` gets the base port and stops what it started if it fails.
func startOnFreePorts<Servers>(what: String, _ start: (_ base: Int) async throws -> Servers) async throws -> Servers {
    var lastError: (any Error)?
    for _ in 0..<5 {
        do {
            return try await start(Int.random(in: 20_000...58_000))
        } catch {
            lastError = error
        }
    }
    throw lastError ?? ClusterError("could not start \(what)")
}

/// The bytes of one pipe, appended as they come by a thread of its own (a blocking read must not
/// hold one of the few threads of Swift's concurrency pool), until end of file.
final class OutputBuffer: Sendable {
    private let state = Mutex((data: Data(), ended: false))

    init(_ pipe: Pipe) {
        let handle = pipe.fileHandleForReading
        Thread.detachNewThread { [self] in
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                state.withLock { $0.data.append(chunk) }
            }
            state.withLock { $0.ended = true }
        }
    }

    var text: String { state.withLock { String(decoding: $0.data, as: UTF8.self) } }
    var ended: Bool { state.withLock { $0.ended } }
    var count: Int { state.withLock { $0.data.count } }
}

/// Marks both ends of `pipe` close-on-exec, so that no other child process started meanwhile (an
/// etcd, a java) inherits them: an inherited write end would keep the pipe from ever reaching end
/// of file. The child the pipe is for still gets it: dup2 onto its stdout clears the flag.
func closeOnExec(_ pipe: Pipe) {
    for descriptor in [pipe.fileHandleForReading.fileDescriptor, pipe.fileHandleForWriting.fileDescriptor] {
        _ = fcntl(descriptor, F_SETFD, fcntl(descriptor, F_GETFD) | FD_CLOEXEC)
    }
}

/// A child process whose output is collected as it comes: the built `lbctl` (it sits next to the
/// test bundle), or another program (a client no one here wrote, such as kazoo or etcdctl).
public final class ChildProcess: Sendable {
    /// The built `lbctl`.
    public static var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("lbctl")
    }

    private let process: Process
    private let name: String
    private let out: OutputBuffer
    private let err: OutputBuffer
    private let input: FileHandle?

    /// Starts `lbctl arguments...`.
    public convenience init(_ arguments: [String]) throws {
        try self.init(program: Self.executable.path, arguments)
    }

    /// Starts `program arguments...`.
    ///
    /// - Parameters:
    ///   - program: The executable's path.
    ///   - arguments: Its arguments.
    ///   - environment: Its environment; `nil` inherits the test's.
    ///   - keepInputOpen: Gives it a standard input that stays open until ``closeInput()`` (a
    ///     program can wait for its end of file); otherwise its input is empty.
    public init(program: String, _ arguments: [String], environment: [String: String]? = nil, keepInputOpen: Bool = false) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let outPipe = Pipe()
        let errPipe = Pipe()
        closeOnExec(outPipe)
        closeOnExec(errPipe)
        process.standardOutput = outPipe
        process.standardError = errPipe
        if keepInputOpen {
            let inPipe = Pipe()
            closeOnExec(inPipe)
            process.standardInput = inPipe
            input = inPipe.fileHandleForWriting
        } else {
            process.standardInput = FileHandle.nullDevice
            input = nil
        }
        out = OutputBuffer(outPipe)
        err = OutputBuffer(errPipe)
        name = URL(fileURLWithPath: program).lastPathComponent
        try process.run()
        self.process = process
    }

    /// Whether the process has not exited yet.
    public var isRunning: Bool { process.isRunning }

    /// Waits (bounded) until the program has printed `text` on stdout; fails early, with what it
    /// printed on stderr, when it exits first.
    public func waitForOutput(_ text: String, timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + TestTimeScale.scaled(timeout)
        while !stdout.contains(text) {
            guard process.isRunning else {
                throw ClusterError("\(name) exited before printing \"\(text)\": \(stderr)")
            }
            guard ContinuousClock.now < deadline else {
                throw ClusterError("\(name) did not print \"\(text)\" within \(timeout): \(stderr)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Closes the standard input (the program sees end of file), when it was kept open.
    public func closeInput() {
        try? input?.close()
    }

    /// What it printed on stdout so far.
    public var stdout: String { out.text }
    /// What it printed on stderr so far.
    public var stderr: String { err.text }

    /// Waits (bounded) for the process to exit on its own and for its output; returns its status.
    ///
    /// The output is complete at end of file on both pipes; should another process hold a pipe's
    /// write end anyway, it is taken as complete once the exited process's bytes stop arriving.
    public func exitStatus(timeout: Duration = .seconds(120)) async throws -> Int32 {
        let pid = process.processIdentifier
        let timeout = TestTimeScale.scaled(timeout)
        let deadline = ContinuousClock.now + timeout
        var status: Int32?
        while ContinuousClock.now < deadline, status == nil {
            var raw: Int32 = 0
            let result = waitpid(pid, &raw, WNOHANG)
            if result == pid {
                status = (raw >> 8) & 0xFF
            } else if result == -1, !process.isRunning {
                status = process.terminationStatus
            } else {
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        guard let status else {
            killProcess(pid)
            throw ClusterError("\(name) did not exit within \(timeout)")
        }
        // Drain: until end of file, or 200 ms without a new byte (bounded by 5 s).
        let drainDeadline = ContinuousClock.now + .seconds(5)
        var seen = -1
        var quietSince = ContinuousClock.now
        while !(out.ended && err.ended), ContinuousClock.now < drainDeadline {
            let now = out.count + err.count
            if now != seen {
                seen = now
                quietSince = .now
            } else if ContinuousClock.now - quietSince > .milliseconds(200) {
                break
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        return status
    }

    /// Kills the process (SIGKILL) and reaps it, bounded.
    public func stop() async throws {
        closeInput()
        killProcess(process.processIdentifier)
        _ = try await exitStatus(timeout: .seconds(10))
    }
}

/// Runs the built `lbctl` to its end.
public enum Lbctl {
    /// Runs `lbctl arguments...` and returns its exit status and output (bounded by `timeout`).
    public static func run(_ arguments: [String], timeout: Duration = .seconds(120)) async throws -> (
        status: Int32, stdout: String, stderr: String
    ) {
        let process = try LbctlProcess(arguments)
        let status = try await process.exitStatus(timeout: timeout)
        return (status, process.stdout, process.stderr)
    }
}

/// The built `lbctl`, as a child process.
public typealias LbctlProcess = ChildProcess

/// An lbctl that keeps running (`resolve --watch`) until stopped.
public typealias RunningLbctl = ChildProcess
