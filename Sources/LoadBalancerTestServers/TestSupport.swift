import Foundation
import LoadBalancer
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Helpers the integration suites share: bounded waiting, recording a publisher's updates, and
// running the built `lbctl`.

/// Waits, by bounded polling, until `condition` holds; throws when `timeout` passes first.
public func eventually(_ what: String, timeout: Duration = .seconds(20), _ condition: () async -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !(await condition()) {
        guard ContinuousClock.now < deadline else { throw ClusterError("\(what) not met within \(timeout)") }
        try await Task.sleep(for: .milliseconds(10))
    }
}

/// Every update of a publisher, recorded by a background reader.
public final class Recorder: Sendable {
    private let updates = Mutex<[InstanceUpdate]>([])
    public init() {}
    public var all: [InstanceUpdate] { updates.withLock { $0 } }
    public var latest: InstanceUpdate? { updates.withLock { $0.last } }
    public var ids: [String] { latest?.instances.map(\.id) ?? [] }
    /// Whether the set stayed non-empty from the first non-empty update on.
    public var neverEmptiedOnceFilled: Bool {
        all.drop(while: { $0.instances.isEmpty }).allSatisfy { !$0.instances.isEmpty }
    }
    public func record(_ update: InstanceUpdate) { updates.withLock { $0.append(update) } }

    /// A task body that records `publisher`'s updates until cancelled.
    public func recording(_ publisher: some InstancePublisher) -> @Sendable () async -> Void {
        { for await update in publisher.updates() { self.record(update) } }
    }
}

/// Runs `body` with `services` running beside it; cancels them when it returns.
@discardableResult
public func withRunning<T: Sendable>(_ services: [@Sendable () async -> Void], _ body: () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for service in services { group.addTask { await service() } }
        defer { group.cancelAll() }
        return try await body()
    }
}

/// The built `lbctl`, run as a child process.
public enum Lbctl {
    public static var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("lbctl")
    }

    /// Runs lbctl to completion (bounded by the test's time limit) and returns its status and output.
    public static func run(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        async let stdout = Task.detached { out.fileHandleForReading.readDataToEndOfFile() }.value
        async let stderr = Task.detached { err.fileHandleForReading.readDataToEndOfFile() }.value
        let output = String(decoding: await stdout, as: UTF8.self)
        let errors = String(decoding: await stderr, as: UTF8.self)
        return (try await reap(process), output, errors)
    }

    /// Waits (bounded) for an exiting process and returns its exit status.
    public static func reap(_ process: Process) async throws -> Int32 {
        let pid = process.processIdentifier
        for _ in 0..<2_000 {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid { return (status >> 8) & 0xFF }
            if result == -1 { break }
            try await Task.sleep(for: .milliseconds(5))
        }
        for _ in 0..<200 where process.isRunning { try await Task.sleep(for: .milliseconds(10)) }
        return process.isRunning ? -1 : process.terminationStatus
    }
}

/// An lbctl that keeps running (`resolve --watch`), its output collected as it comes.
public final class RunningLbctl: Sendable {
    public let process: Process
    private let output = Mutex("")
    public var stdout: String { output.withLock { $0 } }

    public init(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = Lbctl.binary
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        self.process = process
        try process.run()
        let handle = out.fileHandleForReading
        Thread.detachNewThread { [self] in
            while true {
                let data = handle.availableData
                if data.isEmpty { return }  // end of file: lbctl exited
                output.withLock { $0 += String(decoding: data, as: UTF8.self) }
            }
        }
    }

    public func stop() async throws {
        _ = kill(process.processIdentifier, SIGKILL)
        _ = try await Lbctl.reap(process)
    }
}

