import ArgumentParser
import Foundation
import LoadBalancer
import ServiceLifecycle

/// `lbctl resolve SOURCE [--json] [--watch]`
struct ResolveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resolve",
        abstract: "Print the instances a source publishes.",
        discussion: SourceSpec.help
    )

    @Argument(help: "Where the instances come from (see below).")
    var source: String

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Flag(
        help: """
            Keep watching and print every change (added / removed, with a timestamp) until interrupted, \
            and the discovery state (ready, stale since when, the last error and when) whenever it changes.
            """
    )
    var watch = false

    func run() async throws {
        let spec = try SourceSpec(parsing: source)
        let publisher = try spec.makePublisher()
        // A publisher with a loop (DNS, etcd, ...) runs beside the reader until the reader is done.
        await withTaskGroup(of: Void.self) { group in
            if let service = publisher as? any Service {
                group.addTask { try? await service.run() }
            }
            await read(publisher)
            group.cancelAll()
        }
    }

    private func read(_ publisher: any InstancePublisher) async {
        var previous: [Instance]?
        var status = DiscoveryStatus()
        for await update in publisher.updates() {
            if let error = update.error { Output.error("lbctl: registry error: \(error)") }
            let wasStale = status.isStale
            status.record(update, at: .now)
            if let old = previous {
                printChanges(from: old, to: update.instances)
            } else {
                print(json ? Self.json(update.instances) : Self.table(update.instances))
                Output.flush()
                if !watch { return }
            }
            // The state line: at the start, at each failure, and when the registry answers again.
            if previous == nil || update.error != nil || wasStale {
                let stamp = Date().ISO8601Format(.iso8601.time(includingFractionalSeconds: true))
                print("\(stamp) \(Self.statusLine(status))")
                Output.flush()
            }
            previous = update.instances
        }
    }

    /// `discovery: ready, stale since 10:00:01.250Z (3 failures), last error at 10:00:04.100Z: ...`,
    /// with wall-clock times.
    static func statusLine(_ status: DiscoveryStatus, now: ContinuousClock.Instant = .now, wallNow: Date = Date()) -> String {
        func wall(_ instant: ContinuousClock.Instant) -> String {
            let ago = now - instant
            let seconds = ago.secondsValue
            return wallNow.addingTimeInterval(-seconds).ISO8601Format(.iso8601.time(includingFractionalSeconds: true))
        }
        var parts = ["discovery: \(status.isReady ? "ready" : "not ready")"]
        if let since = status.staleSince {
            let failures = "\(status.consecutiveFailures) failure\(status.consecutiveFailures == 1 ? "" : "s")"
            parts.append("stale since \(wall(since)) (\(failures)\(status.isInvalidated ? ", set invalidated" : ""))")
        } else {
            parts.append("fresh")
        }
        if let error = status.lastError, let at = status.lastErrorAt {
            parts.append("last error at \(wall(at)): \(error)")
        }
        return parts.joined(separator: ", ")
    }

    private func printChanges(from old: [Instance], to new: [Instance]) {
        let oldByID = Dictionary(uniqueKeysWithValues: old.map { ($0.id, $0) })
        let newByID = Dictionary(uniqueKeysWithValues: new.map { ($0.id, $0) })
        let stamp = Date().ISO8601Format(.iso8601.time(includingFractionalSeconds: true))
        for instance in new where oldByID[instance.id] == nil {
            print("\(stamp) added   \(instance)")
        }
        for instance in old where newByID[instance.id] == nil {
            print("\(stamp) removed \(instance)")
        }
        for instance in new where oldByID[instance.id].map({ $0 != instance }) ?? false {
            print("\(stamp) changed \(instance)")
        }
        Output.flush()
    }

    static func table(_ instances: [Instance]) -> String {
        let rows = instances.map { instance -> [String] in
            var metadata = instance.metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            if !instance.tags.isEmpty { metadata.insert("tags=\(instance.tags.joined(separator: ","))", at: 0) }
            return [
                instance.id, instance.host, "\(instance.port)", "\(instance.weight)", "\(instance.priority)",
                metadata.joined(separator: " "),
            ]
        }
        return Output.table(["ID", "HOST", "PORT", "WEIGHT", "PRIORITY", "METADATA"], rows, rightAligned: [2, 3, 4])
    }

    struct JSONInstance: Encodable {
        var id: String
        var host: String
        var port: Int
        var weight: Int
        var priority: Int
        var tags: [String]
        var metadata: [String: String]
    }

    static func json(_ instances: [Instance]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let values = instances.map {
            JSONInstance(
                id: $0.id, host: $0.host, port: $0.port, weight: $0.weight, priority: $0.priority, tags: $0.tags, metadata: $0.metadata)
        }
        return String(decoding: (try? encoder.encode(values)) ?? Data("[]".utf8), as: UTF8.self)
    }
}
