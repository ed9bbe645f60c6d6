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

    @Flag(help: "Keep watching and print every change (added / removed, with a timestamp) until interrupted.")
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
        for await update in publisher.updates() {
            if let error = update.error { Output.error("lbctl: registry error: \(error)") }
            if let old = previous {
                printChanges(from: old, to: update.instances)
            } else {
                print(json ? Self.json(update.instances) : Self.table(update.instances))
                Output.flush()
                if !watch { return }
            }
            previous = update.instances
        }
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
            JSONInstance(id: $0.id, host: $0.host, port: $0.port, weight: $0.weight, priority: $0.priority, tags: $0.tags, metadata: $0.metadata)
        }
        return String(decoding: (try? encoder.encode(values)) ?? Data("[]".utf8), as: UTF8.self)
    }
}
