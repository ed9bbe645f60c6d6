import Foundation
import LoadBalancer
import LoadBalancerSimulation
import Synchronization

/// The recording `lbctl bench --record FILE` writes and `lbctl replay FILE` reads: JSON lines, a
/// header first, then set changes and calls in the order they happened (calls when they ended).
///
/// ```
/// {"balancer":"round-robin","options":{...},"started":"2026-12-01T10:00:00Z","type":"header","version":1}
/// {"at":0,"instances":[{"id":"127.0.0.1:8081","priority":0,"weight":1}],"type":"set"}
/// {"instance":"127.0.0.1:8081","latency":0.00213,"outcome":"success","start":0.00012,"type":"call"}
/// ```
///
/// Times are seconds: `at` and `start` since the load started, `latency` the call's duration. A
/// set line holds the whole set from then on. A call is one attempt on one instance (a retry is
/// another call); `outcome` is `success`, `failure` (with `error`, its kind) or `cancelled` (a
/// call given up when its request ended, which a replay leaves out).
enum Recording {
    /// The version this lbctl writes and reads.
    static let version = 1

    /// One line of a recording. Which fields are set depends on `type`.
    struct Line: Codable {
        var type: String?
        // header
        var version: Int?
        var started: String?
        var balancer: String?
        var options: Options?
        // set
        var at: Double?
        var instances: [Member]?
        // call
        var instance: String?
        var start: Double?
        var latency: Double?
        var outcome: String?
        var error: String?
    }

    /// The bench options of the recorded run (for the reader's information).
    struct Options: Codable, Equatable {
        var source: String?
        var `protocol`: String?
        var path: String?
        var service: String?
        var ejection: Bool?
        var requests: Int?
        var concurrency: Int?
        var rate: Double?
        var retries: Int?
        var timeout: Double?
        var slowStart: Double?
        var healthCheck: String?
    }

    /// An instance of a set line.
    struct Member: Codable, Equatable {
        var id: String
        var weight: Int?
        var priority: Int?
        var zone: String?
    }

    /// What a call line says about its outcome.
    enum Outcome: String {
        case success, failure, cancelled
    }

    /// A recording, read back.
    struct Contents {
        /// The header's balancer, options and start time.
        var balancer: String
        var options: Options?
        var started: String?
        /// The sets and the calls (cancelled calls left out).
        var run: RecordedRun
        /// Calls recorded as cancelled (left out of `run`).
        var cancelled: Int
    }

    /// Reads the recording at `path`; a malformed line is an error that names it.
    static func read(path: String) throws(LbctlError) -> Contents {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw LbctlError.run("cannot read \(path): \(Self.reason(error))", cause: error)
        }
        return try parse(data, name: path)
    }

    /// Parses a recording; `name` names it in errors.
    static func parse(_ data: Data, name: String) throws(LbctlError) -> Contents {
        guard let text = String(data: data, encoding: .utf8) else { throw LbctlError.run("\(name) is not UTF-8 text") }
        let decoder = JSONDecoder()
        var header: Line?
        var sets: [RecordedRun.SetChange] = []
        var calls: [RecordedRun.Call] = []
        var cancelled = 0
        var lastSetAt = -Double.infinity
        for (offset, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let number = offset + 1
            func fail(_ message: String) -> LbctlError { LbctlError.run("\(name):\(number): \(message)") }
            let content = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if content.isEmpty { continue }
            let line: Line
            do {
                line = try decoder.decode(Line.self, from: Data(content.utf8))
            } catch let error as DecodingError {
                throw fail(Self.describe(error))
            } catch {
                throw fail("not a JSON object")
            }
            guard let type = line.type else { throw fail("no \"type\" (expected header, set or call)") }
            if header == nil {
                guard type == "header" else {
                    throw fail("expected the header line (\"type\":\"header\") first, found \"\(type)\"")
                }
                guard let version = line.version else { throw fail("the header has no \"version\"") }
                guard version == Self.version else {
                    throw fail("recording version \(version) is not supported (this lbctl reads version \(Self.version))")
                }
                header = line
                continue
            }
            switch type {
            case "header":
                throw fail("a second header line")
            case "set":
                guard let at = line.at else { throw fail("a set needs \"at\" (seconds into the run)") }
                guard at.isFinite, at >= 0 else { throw fail("\"at\" must be a finite number of seconds, at least 0") }
                guard at >= lastSetAt else { throw fail("set changes must be in time order (\(at) s after \(lastSetAt) s)") }
                guard let members = line.instances else { throw fail("a set needs \"instances\" (the whole set)") }
                var seen: Set<String> = []
                for member in members {
                    guard !member.id.isEmpty else { throw fail("an instance id is empty") }
                    guard seen.insert(member.id).inserted else { throw fail("instance \"\(member.id)\" is twice in the set") }
                    if let weight = member.weight, weight < 1 { throw fail("instance \"\(member.id)\" has weight \(weight) (at least 1)") }
                }
                lastSetAt = at
                sets.append(
                    RecordedRun.SetChange(
                        at: duration(at),
                        members: members.map {
                            RecordedRun.Member(id: $0.id, weight: $0.weight ?? 1, priority: $0.priority ?? 0, zone: $0.zone)
                        }
                    )
                )
            case "call":
                guard let instance = line.instance, !instance.isEmpty else { throw fail("a call needs \"instance\" (an instance id)") }
                guard let start = line.start else { throw fail("a call needs \"start\" (seconds into the run)") }
                guard start.isFinite, start >= 0 else { throw fail("\"start\" must be a finite number of seconds, at least 0") }
                guard let latency = line.latency else { throw fail("a call needs \"latency\" (seconds)") }
                guard latency.isFinite, latency >= 0 else { throw fail("\"latency\" must be a finite number of seconds, at least 0") }
                guard let outcomeName = line.outcome else { throw fail("a call needs \"outcome\" (success, failure or cancelled)") }
                guard let outcome = Outcome(rawValue: outcomeName) else {
                    throw fail("\"outcome\" must be success, failure or cancelled, not \"\(outcomeName)\"")
                }
                if outcome == .cancelled {
                    cancelled += 1
                } else {
                    calls.append(
                        RecordedRun.Call(
                            instance: instance, start: duration(start), latency: duration(latency), failed: outcome == .failure))
                }
            default:
                throw fail("unknown line type \"\(type)\" (expected set or call)")
            }
        }
        guard let header else { throw LbctlError.run("\(name) is empty: expected a header line") }
        guard !calls.isEmpty else { throw LbctlError.run("\(name) records no calls: nothing to replay") }
        let run = RecordedRun(sets: sets, calls: calls)
        let instanceCount = run.instances.count
        guard instanceCount <= RecordedRun.maximumInstances else {
            throw LbctlError.run(
                "\(name) names \(instanceCount) instances: a replay takes at most \(RecordedRun.maximumInstances)")
        }
        return Contents(
            balancer: header.balancer ?? "unknown",
            options: header.options,
            started: header.started,
            run: run,
            cancelled: cancelled
        )
    }

    static func duration(_ seconds: Double) -> Duration { .nanoseconds(Int64((seconds * 1e9).rounded())) }

    /// A decoding error in a few words: the field and what was wrong.
    static func describe(_ error: DecodingError) -> String {
        func field(_ path: [any CodingKey]) -> String {
            path.isEmpty ? "the line" : "\"" + path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".") + "\""
        }
        switch error {
        case .typeMismatch(let type, let context):
            return "\(field(context.codingPath)) must be \(Self.kind(type))"
        case .valueNotFound(let type, let context):
            return "\(field(context.codingPath)) must be \(Self.kind(type)), not null"
        case .keyNotFound(let key, let context):
            return "\(field(context.codingPath + [key])) is missing"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "not a JSON object" : "\(field(context.codingPath)) is malformed"
        @unknown default:
            return "malformed line"
        }
    }

    private static func kind(_ type: Any.Type) -> String {
        switch type {
        case is Double.Type, is Int.Type: "a number"
        case is String.Type: "a string"
        case is Bool.Type: "true or false"
        case is [Member].Type: "an array"
        default: "an object"
        }
    }

    static func reason(_ error: any Error) -> String {
        let nsError = error as NSError
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain,
            let code = POSIXErrorCode(rawValue: Int32(underlying.code))
        {
            return POSIXError(code).localizedDescription
        }
        return nsError.localizedDescription
    }
}

/// Writes a recording while a bench runs. Every method may be called from any task.
final class Recorder: Sendable {
    private struct State {
        var handle: FileHandle?
        var buffer = Data()
        /// When the load started (offsets count from here); `nil` before.
        var start: ContinuousClock.Instant?
        /// The last set written.
        var set: [Recording.Member]?
        var error: String?
    }

    private let state: Mutex<State>
    private let path: String
    private let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    /// Creates (or truncates) the file at `path` and writes the header.
    init(path: String, balancer: String, options: Recording.Options) throws(LbctlError) {
        self.path = path
        guard FileManager.default.createFile(atPath: path, contents: nil) else {
            throw LbctlError.usage("--record: cannot create \(path)")
        }
        let handle: FileHandle
        do {
            handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        } catch {
            throw LbctlError.usage("--record: cannot write \(path): \(Recording.reason(error))", cause: error)
        }
        state = Mutex(State(handle: handle))
        let started = ISO8601DateFormatter().string(from: Date())
        append(Recording.Line(type: "header", version: Recording.version, started: started, balancer: balancer, options: options))
    }

    /// The load starts now, over `set` (the balancer's set): it is written at 0, and offsets count
    /// from `start`.
    func begin(at start: ContinuousClock.Instant, set: [Instance]) {
        let members = set.map(Self.member)
        state.withLock {
            $0.start = start
            $0.set = members
        }
        append(Recording.Line(type: "set", at: 0, instances: members))
    }

    private static func member(_ instance: Instance) -> Recording.Member {
        Recording.Member(id: instance.id, weight: instance.weight, priority: instance.priority, zone: instance.zone)
    }

    /// The balancer's source published `instances` (written when the set changed).
    func set(_ instances: [Instance]) {
        let members = instances.map(Self.member)
        let at: Double? = state.withLock { state in
            // Before the start, `begin` writes the set the load starts on.
            guard let start = state.start, state.set != members else { return nil }
            state.set = members
            return (ContinuousClock.now - start).secondsValue
        }
        if let at { append(Recording.Line(type: "set", at: Self.rounded(max(0, at)), instances: members)) }
    }

    /// A call to `instance` ran from `began` to `ended` with `outcome` (`error`: the failure's kind).
    func call(
        _ instance: String, began: ContinuousClock.Instant, ended: ContinuousClock.Instant, outcome: Recording.Outcome, error: String? = nil
    ) {
        guard let start = state.withLock({ $0.start }) else { return }
        append(
            Recording.Line(
                type: "call",
                instance: instance,
                start: Self.rounded(max(0, (began - start).secondsValue)),
                latency: Self.rounded(max(0, (ended - began).secondsValue)),
                outcome: outcome.rawValue,
                error: error
            )
        )
    }

    /// Writes what is buffered and closes the file.
    func finish() throws(LbctlError) {
        let failure: String? = state.withLock { state in
            flush(&state, force: true)
            try? state.handle?.close()
            state.handle = nil
            return state.error
        }
        if let failure { throw LbctlError.run("--record: cannot write \(path): \(failure)") }
    }

    /// Seconds to the nanosecond.
    private static func rounded(_ seconds: Double) -> Double { (seconds * 1e9).rounded() / 1e9 }

    private func append(_ line: Recording.Line) {
        guard var data = try? encoder.encode(line) else { return }
        data.append(0x0A)
        state.withLock { state in
            state.buffer.append(data)
            flush(&state, force: false)
        }
    }

    private func flush(_ state: inout State, force: Bool) {
        guard force || state.buffer.count >= 1 << 16, !state.buffer.isEmpty, let handle = state.handle, state.error == nil else { return }
        do {
            try handle.write(contentsOf: state.buffer)
        } catch {
            state.error = Recording.reason(error)
        }
        state.buffer.removeAll(keepingCapacity: true)
    }
}
