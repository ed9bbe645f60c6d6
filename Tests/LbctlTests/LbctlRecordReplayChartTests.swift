import Foundation
import LoadBalancerLocalBackends
import LoadBalancerTestServers
import Testing

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// A fresh file name in the temporary directory.
private func temporaryPath(_ name: String) -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("lbctl-\(UUID().uuidString)-\(name)").path
}

/// The recording's lines as JSON objects.
private func jsonLines(_ path: String) throws -> [[String: Any]] {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    return try text.split(separator: "\n").map { line in
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
        return try #require(object as? [String: Any], "\(line)")
    }
}

/// Three loopback backends: two answering in 1 ms, one in 100 ms (far above the noise of a busy
/// machine: connection setup, scheduling).
private func slowAndFastBackends() async throws -> (fast: [LocalHTTPBackend], slow: LocalHTTPBackend) {
    let fast = [
        try await LocalHTTPBackend.start(.init(latency: .milliseconds(1))),
        try await LocalHTTPBackend.start(.init(latency: .milliseconds(1))),
    ]
    let slow = try await LocalHTTPBackend.start(.init(latency: .milliseconds(100)))
    return (fast, slow)
}

/// A recording of the bench below (two backends answering in 1 ms, one in 100 ms; 300 requests, 6
/// in flight), made on a quiet machine: the slow instance is 127.0.0.1:38293.
private let slowRunFixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/Recordings/slow-instance-round-robin.jsonl").path

/// Records a round-robin bench of 300 requests over two fast backends and a slow one; returns the
/// recording's path and the slow backend's id.
private func recordSlowRun() async throws -> (path: String, slow: String, fast: [String]) {
    let (fast, slow) = try await slowAndFastBackends()
    let servers = fast + [slow]
    defer { Task { for server in servers { try? await server.stop() } } }
    let source = "static://" + servers.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
    let path = temporaryPath("run.jsonl")
    let result = try await Lbctl.run([
        "bench", source, "--balancer", "round-robin", "--requests", "300", "--concurrency", "6", "--record", path, "/",
    ])
    try #require(result.status == 0, "\(result.stderr)")
    return (path, "127.0.0.1:\(slow.port)", fast.map { "127.0.0.1:\($0.port)" })
}

@Suite("lbctl bench --record and lbctl replay", .serialized)
struct LbctlRecordReplayTests {
    @Test("bench --record writes the header, the set and every call as JSON lines")
    func record() async throws {
        let (path, slow, fast) = try await recordSlowRun()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let lines = try jsonLines(path)
        let header = try #require(lines.first)
        #expect(header["type"] as? String == "header")
        #expect(header["version"] as? Int == 1)
        #expect(header["balancer"] as? String == "round-robin")
        #expect(header["started"] is String)
        let options = try #require(header["options"] as? [String: Any])
        #expect(options["requests"] as? Int == 300)
        #expect(options["concurrency"] as? Int == 6)
        #expect(options["protocol"] as? String == "http")

        let sets = lines.filter { $0["type"] as? String == "set" }
        #expect(sets.count == 1)
        #expect(sets.first?["at"] as? Double == 0)
        let ids = (sets.first?["instances"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
        #expect(Set(ids ?? []) == Set(fast + [slow]))

        let calls = lines.filter { $0["type"] as? String == "call" }
        #expect(calls.count == 300)
        #expect(lines.count == 1 + sets.count + calls.count)
        #expect(calls.allSatisfy { $0["outcome"] as? String == "success" })
        #expect(calls.allSatisfy { ($0["start"] as? Double ?? -1) >= 0 && ($0["latency"] as? Double ?? -1) > 0 })
        // Round robin (exact rotation): 100 calls each.
        var perInstance: [String: [Double]] = [:]
        for call in calls {
            perInstance[call["instance"] as? String ?? "?", default: []].append(call["latency"] as? Double ?? 0)
        }
        #expect(perInstance.keys.sorted() == (fast + [slow]).sorted())
        #expect(perInstance.values.allSatisfy { $0.count == 100 })
        // The slow backend answers after 100 ms: every call to it took at least that long, and
        // longer than most calls to the fast ones.
        let slowLatencies = perInstance[slow] ?? []
        #expect(slowLatencies.allSatisfy { $0 >= 0.1 }, "\(slowLatencies.min() ?? 0)")
        for id in fast {
            let sorted = (perInstance[id] ?? []).sorted()
            #expect(sorted[sorted.count / 2] < slowLatencies.min() ?? 0)
        }
        // The calls span the run: the last one starts after the first by at least the time
        // 100 calls to the slow backend take, 6 in flight and a third of them there.
        let starts = calls.compactMap { $0["start"] as? Double }
        #expect((starts.max() ?? 0) - (starts.min() ?? 0) >= 0.2)
    }

    @Test("bench --protocol grpc --record writes every attempt, retries included, with its instance and outcome")
    func recordGRPC() async throws {
        try await LocalGRPCHealthBackend.withBackends([
            .init(latency: .milliseconds(1)), .init(latency: .milliseconds(1)), .init(latency: .milliseconds(1), failureRate: 1),
        ]) { backends in
            let source = "static://" + backends.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
            let path = temporaryPath("grpc.jsonl")
            defer { try? FileManager.default.removeItem(atPath: path) }
            let result = try await Lbctl.run([
                "bench", source, "--protocol", "grpc", "--balancer", "round-robin", "--requests", "60", "--concurrency", "1",
                "--retries", "2", "--record", path,
            ])
            try #require(result.status == 0, "\(result.stderr)")
            let lines = try jsonLines(path)
            #expect((lines.first?["options"] as? [String: Any])?["protocol"] as? String == "grpc")
            let calls = lines.filter { $0["type"] as? String == "call" }
            // One line per attempt: the requests and their retries, as the report counts them.
            let report = try #require(BenchReport(result.stdout), "\(result.stdout)")
            #expect(calls.count == report.rows.values.map(\.attempts).reduce(0, +))
            #expect(calls.count == 60 + report.retries)
            let failing = "127.0.0.1:\(backends[2].port)"
            for call in calls {
                let instance = try #require(call["instance"] as? String)
                #expect(call["outcome"] as? String == (instance == failing ? "failure" : "success"), "\(call)")
                #expect((call["latency"] as? Double ?? -1) >= 0)
            }
            #expect(calls.filter { $0["instance"] as? String == failing }.count == backends[2].served.total)
        }
    }

    @Test("replay: the same seed prints the same bytes; P2C sends the recorded slow instance less than round robin")
    func replay() async throws {
        // A recording of `recordSlowRun()`'s bench made on a quiet machine (Tests/Fixtures/Recordings):
        // a recording made while the whole suite loads the machine can hold fast instances' calls
        // as slow as the slow one's, and what P2C learns from it then varies from run to run (the
        // live recording is tested above).
        let (path, slow) = (slowRunFixture, "127.0.0.1:38293")
        let chart = temporaryPath("replay.svg")
        let otherChart = temporaryPath("replay-again.svg")
        defer { for file in [chart, otherChart] { try? FileManager.default.removeItem(atPath: file) } }
        // Every balancer (the default), each also with ejection: all of them repeat.
        let balancers = ["--ejection"]
        let first = try await Lbctl.run(["replay", path] + balancers + ["--seed", "3", "--chart", chart])
        try #require(first.status == 0, "\(first.stderr)")
        let second = try await Lbctl.run(["replay", path] + balancers + ["--seed", "3", "--chart", otherChart])
        try #require(second.status == 0, "\(second.stderr)")
        // Byte for byte, but for the line naming the chart's file.
        #expect(
            first.stdout.replacingOccurrences(of: chart, with: "FILE") == second.stdout.replacingOccurrences(of: otherChart, with: "FILE"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: chart)) == Data(contentsOf: URL(fileURLWithPath: otherChart)))
        let reseeded = try await Lbctl.run(["replay", path] + balancers + ["--seed", "4"])
        #expect(reseeded.status == 0, "\(reseeded.stderr)")
        // Another seed draws other latencies (the lines naming the seed and the chart aside).
        func tables(_ output: String) -> [Substring] {
            output.split(separator: "\n").filter { !$0.contains("seed") && !$0.hasPrefix("Chart written") }
        }
        #expect(tables(reseeded.stdout) != tables(first.stdout))

        // The simulation's table, with the oracle.
        let output = first.stdout
        #expect(output.contains("Recorded with round-robin: 300 calls to 3 instances"), "\(output)")
        #expect(row(output, "POLICY") == ["P50", "P99", "P99.9", "ERRORS", "P99.9/ORACLE"])
        for policy in ["oracle", "round-robin", "consistent-hash", "p2c-peak-ewma", "p2c-least-outstanding", "random+ejection"] {
            // "0.9 ms  20.6 ms  21.1 ms  0.0%  1.02x"
            #expect(row(output, policy + " ").count == 8, "\(policy): \(output)")
        }
        // The share table: a column per instance.
        let header = output.split(separator: "\n").last { $0.hasPrefix("POLICY") && $0.contains(slow) }
        let columns = try #require(header).split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        let slowColumn = try #require(columns.firstIndex(of: slow))
        func slowShare(_ policy: String) -> Double {
            let cells =
                output.split(separator: "\n").last { $0.hasPrefix(policy + " ") }?
                .split(separator: " ", omittingEmptySubsequences: true).map(String.init) ?? []
            return slowColumn < cells.count ? Double(cells[slowColumn].dropLast()) ?? -1 : -1
        }
        // Round robin replays its exact third; P2C learns the slow instance and sends it less
        // (peak-EWMA far less).
        #expect(abs(slowShare("round-robin") - 33.3) <= 0.5, "\(output)")
        #expect(slowShare("p2c-peak-ewma") >= 0)
        #expect(slowShare("p2c-peak-ewma") < slowShare("round-robin") - 10, "\(output)")
        #expect(slowShare("p2c-least-outstanding") >= 0)
        #expect(slowShare("p2c-least-outstanding") < slowShare("round-robin"), "\(output)")
        // Round robin's p99 is the slow instance's: a third of its calls took 100 ms or more.
        let roundRobin = row(output, "round-robin ")
        #expect(roundRobin.count > 2 && Double(roundRobin[2]) ?? 0 >= 100, "\(output)")
    }

    @Test(
        "malformed recordings: one line naming the file and line, exit status 1",
        arguments: [
            ("", "is empty: expected a header line"),
            ("not json\n", ":1: not a JSON object"),
            (#"{"type":"call","instance":"a","start":0,"latency":0.01,"outcome":"success"}"#, ":1: expected the header line"),
            (#"{"type":"header","version":2}"#, ":1: recording version 2 is not supported"),
            (#"{"type":"header"}"#, ":1: the header has no \"version\""),
            (
                #"{"type":"header","version":1}"# + "\n" + #"{"type":"call","instance":"a","start":0,"outcome":"success"}"#,
                ":2: a call needs \"latency\""
            ),
            (
                #"{"type":"header","version":1}"# + "\n\n"
                    + #"{"type":"call","instance":"a","start":"soon","latency":1,"outcome":"success"}"#, ":3: \"start\" must be a number"
            ),
            (
                #"{"type":"header","version":1}"# + "\n" + #"{"type":"call","instance":"a","start":0,"latency":-1,"outcome":"success"}"#,
                ":2: \"latency\" must be a finite number"
            ),
            (
                #"{"type":"header","version":1}"# + "\n" + #"{"type":"call","instance":"a","start":0,"latency":1,"outcome":"ok"}"#,
                ":2: \"outcome\" must be success, failure or cancelled, not \"ok\""
            ),
            (#"{"type":"header","version":1}"# + "\n" + #"{"type":"pause","at":1}"#, ":2: unknown line type \"pause\""),
            (
                #"{"type":"header","version":1}"# + "\n" + #"{"type":"set","at":1,"instances":[{"id":"a"},{"id":"a"}]}"#,
                ":2: instance \"a\" is twice in the set"
            ),
            (
                #"{"type":"header","version":1}"# + "\n" + #"{"type":"set","at":1,"instances":[{"id":"a"}]}"#,
                "records no calls: nothing to replay"
            ),
            (
                #"{"type":"header","version":1}"# + "\n" + #"{"type":"call","instance":"a","start":0,"latency":1,"outcome":"success"}"#
                    + "\n{\"type\":", ":3: not a JSON object"
            ),
        ]
    )
    func malformed(contents: String, message: String) async throws {
        let path = temporaryPath("bad.jsonl")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(contents.utf8).write(to: URL(fileURLWithPath: path))
        let result = try await Lbctl.run(["replay", path, "--balancer", "round-robin"])
        #expect(result.status == 1)
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(result.stderr.hasPrefix("lbctl: "), "\(result.stderr)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(message.hasPrefix(":") == result.stderr.contains(path + ":"), "\(result.stderr)")
    }

    @Test("a recording naming more instances than a replay gives ports to is refused with an error, not a crash")
    func tooManyInstances() async throws {
        try await malformed(contents: tooManyInstancesRecording, message: "names 45536 instances: a replay takes at most 45535")
    }

    @Test(
        "bad replay and record arguments: one line on stderr",
        arguments: [
            (["replay", "/nonexistent/run.jsonl"], 1, "cannot read /nonexistent/run.jsonl"),
            (["replay", "run.jsonl", "--window", "0"], 2, "--window must be a positive number of seconds"),
            (["replay", "run.jsonl", "--instance-concurrency", "0"], 2, "--instance-concurrency must be at least 1"),
            (["replay", "run.jsonl", "--balancer", "fastest"], 2, "'fastest' is invalid for '--balancer"),
            (["replay", "run.jsonl", "--seed", "x"], 2, "'x' is invalid for '--seed"),
            (["replay"], 2, "Missing expected argument '<file>'"),
            (
                ["bench", "static://127.0.0.1:1", "--record", "/nonexistent/dir/run.jsonl"], 2,
                "--record: cannot create /nonexistent/dir/run.jsonl"
            ),
            (["demo", "--simulated-seconds", "0", "--chart", "x.svg"], 2, "--chart charts the tail-latency simulation"),
        ]
    )
    func badArguments(arguments: [String], status: Int32, message: String) async throws {
        let result = try await Lbctl.run(arguments)
        #expect(result.status == status, "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
    }
}

/// The elements of an SVG document, each with its attributes and the `data-name` of the
/// `g.share-panel` it is in, if any.
final class SVGElements: NSObject, XMLParserDelegate {
    struct Element {
        var name: String
        var attributes: [String: String]
        var panel: String?
    }

    private(set) var elements: [Element] = []
    private var stack: [Element] = []

    static func parse(_ path: String) throws -> SVGElements {
        let parser = try #require(XMLParser(contentsOf: URL(fileURLWithPath: path)))
        let elements = SVGElements()
        parser.delegate = elements
        try #require(parser.parse(), "\(parser.parserError.map { "\($0)" } ?? "")")
        return elements
    }

    func parser(
        _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName qName: String?,
        attributes attributeDict: [String: String] = [:]
    ) {
        let panel = stack.last { $0.attributes["class"] == "share-panel" }?.attributes["data-name"]
        let element = Element(name: elementName, attributes: attributeDict, panel: panel)
        stack.append(element)
        elements.append(element)
    }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName qName: String?) {
        stack.removeLast()
    }

    func withClass(_ name: String) -> [Element] { elements.filter { $0.attributes["class"] == name } }
}

private func numbers(_ attribute: String?) -> [Double] {
    (attribute ?? "").split(separator: " ").compactMap { Double($0) }
}

/// Milliseconds as `Output.milliseconds` prints them, back to a number.
private func milliseconds(_ cell: String?) -> Double? {
    cell.flatMap { Double($0) }
}

@Suite("lbctl --chart", .serialized)
struct LbctlChartTests {
    @Test("demo --chart: an SVG with each simulated policy's latency CDF and the backends' shares over time")
    func demoChart() async throws {
        let path = temporaryPath("demo.svg")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try await Lbctl.run(["demo", "--requests", "50", "--simulated-seconds", "15", "--chart", path])
        try #require(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("Chart written to \(path)."))
        let svg = try SVGElements.parse(path)
        #expect(svg.elements.first?.name == "svg")

        // The CDF: one series per row of the simulation's table, in order, matching its numbers.
        let lines = result.stdout.split(separator: "\n").map(String.init)
        let tableStart = try #require(lines.lastIndex { $0.hasPrefix("POLICY") })
        let rows = lines[(tableStart + 1)...].prefix { !$0.isEmpty && !$0.hasPrefix("Chart") }
            .map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        let series = svg.withClass("cdf-series")
        #expect(series.map { $0.attributes["data-name"] ?? "" } == rows.map { $0[0] })
        #expect(series.count == 14)
        let probabilities = numbers(svg.withClass("cdf-panel").first?.attributes["data-probabilities"])
        #expect(probabilities.count == 102)
        let p50 = try #require(probabilities.firstIndex(of: 0.5))
        let p99 = try #require(probabilities.firstIndex(of: 0.99))
        for (element, cells) in zip(series, rows) {
            let latencies = numbers(element.attributes["data-latencies-ms"])
            #expect(latencies.count == probabilities.count)
            #expect(zip(latencies, latencies.dropFirst()).allSatisfy { $0 <= $1 }, "\(cells[0]) is not a CDF")
            // The table prints milliseconds to 0.1 (to 1 from 100 ms).
            for (index, cell) in [(p50, cells[1]), (p99, cells[3])] {
                let printed = try #require(milliseconds(cell))
                #expect(
                    abs(latencies[index] - printed) <= (printed >= 100 ? 0.51 : 0.051), "\(cells[0]): \(latencies[index]) vs \(printed)")
            }
        }
        // Each series is drawn.
        #expect(svg.elements.filter { $0.name == "polyline" }.count == 14)

        // The shares: round robin and P2C peak-EWMA, ten backends, 50 spans each.
        let panels = svg.withClass("share-panel")
        #expect(panels.map { $0.attributes["data-name"] ?? "" } == ["round-robin", "p2c-peak-ewma"])
        func requests(_ panel: String) -> [[Double]] {
            svg.withClass("share-area").filter { $0.panel == panel }.map { numbers($0.attributes["data-requests"]) }
        }
        for panel in ["round-robin", "p2c-peak-ewma"] {
            let areas = svg.withClass("share-area").filter { $0.panel == panel }
            #expect(areas.map { $0.attributes["data-instance"] ?? "" } == (0..<10).map { "backend \($0)" })
            #expect(requests(panel).allSatisfy { $0.count == 50 })
        }
        // Backend 0 is slow in the middle third (spans 17...32 of 50): round robin keeps sending it
        // a tenth; P2C peak-EWMA learns and sends it much less.
        func middleShare(_ panel: String) -> Double {
            let counts = requests(panel)
            let middle = 18..<32
            let total = counts.map { $0[middle].reduce(0, +) }.reduce(0, +)
            return counts[0][middle].reduce(0, +) / max(1, total)
        }
        #expect(abs(middleShare("round-robin") - 0.1) < 0.02)
        #expect(middleShare("p2c-peak-ewma") < 0.05)
    }

    @Test("bench --chart: the run's latency CDF and each instance's attempts over time, matching the report")
    func benchChart() async throws {
        let (fast, slow) = try await slowAndFastBackends()
        let servers = fast + [slow]
        defer { Task { for server in servers { try? await server.stop() } } }
        let source = "static://" + servers.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
        let path = temporaryPath("bench.svg")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try await Lbctl.run([
            "bench", source, "--balancer", "p2c-least-outstanding", "--requests", "300", "--concurrency", "4", "--chart", path, "/",
        ])
        try #require(result.status == 0, "\(result.stderr)")
        let svg = try SVGElements.parse(path)

        let series = svg.withClass("cdf-series")
        #expect(series.map { $0.attributes["data-name"] ?? "" } == ["p2c-least-outstanding"])
        let probabilities = numbers(svg.withClass("cdf-panel").first?.attributes["data-probabilities"])
        let latencies = numbers(series.first?.attributes["data-latencies-ms"])
        #expect(latencies.count == probabilities.count)
        #expect(zip(latencies, latencies.dropFirst()).allSatisfy { $0 <= $1 })
        // The report's p50 and p99 are the same histogram's.
        // "p50  p90  p99  p99.9  max" above "1.2 ms  1.5 ms ...": every other cell is a number.
        let lines = result.stdout.split(separator: "\n").map(String.init)
        let header = try #require(lines.firstIndex { $0.trimmingCharacters(in: .whitespaces).hasPrefix("p50") })
        let percentiles = header + 1 < lines.count ? lines[header + 1].split(separator: " ").map(String.init) : []
        let printed = stride(from: 0, to: percentiles.count, by: 2).compactMap { milliseconds(percentiles[$0]) }
        #expect(printed.count == 5, "\(result.stdout)")
        if printed.count == 5 {
            let p50 = try #require(probabilities.firstIndex(of: 0.5))
            let p99 = try #require(probabilities.firstIndex(of: 0.99))
            // The report prints one decimal below 100 ms and whole milliseconds from 100 ms up.
            #expect(abs(latencies[p50] - printed[0]) <= (printed[0] >= 100 ? 0.51 : 0.051), "\(latencies[p50]) vs \(printed[0])")
            #expect(abs(latencies[p99] - printed[2]) <= (printed[2] >= 100 ? 0.51 : 0.051), "\(latencies[p99]) vs \(printed[2])")
        }

        // The shares: one panel, an area per instance, whose attempts add up to the report's.
        let panels = svg.withClass("share-panel")
        #expect(panels.map { $0.attributes["data-name"] ?? "" } == ["p2c-least-outstanding"])
        let areas = svg.withClass("share-area")
        #expect(Set(areas.compactMap { $0.attributes["data-instance"] }) == Set(servers.map { "127.0.0.1:\($0.port)" }))
        let buckets = numbers(panels.first?.attributes["data-bucket-starts"]).count
        #expect(buckets >= 1 && buckets <= 50)
        var total = 0.0
        for area in areas {
            let id = try #require(area.attributes["data-instance"])
            let counts = numbers(area.attributes["data-requests"])
            #expect(counts.count == buckets)
            #expect(counts.reduce(0, +) == Double(row(result.stdout, id).first ?? ""), "\(id)")
            total += counts.reduce(0, +)
        }
        #expect(total == 300)
        // P2C least-outstanding sends the slow backend less than a third.
        let slowCounts = numbers(areas.first { $0.attributes["data-instance"] == "127.0.0.1:\(slow.port)" }?.attributes["data-requests"])
        #expect(slowCounts.reduce(0, +) < 100)
    }
}

/// A recording naming more instances than a replay gives ports to (refused with an error, not a crash).
let tooManyInstancesRecording: String = {
    let members = (0...45_535).map { #"{"id":"i\#($0)"}"# }.joined(separator: ",")
    let header = #"{"type":"header","version":1}"#
    let set = #"{"type":"set","at":0,"instances":["# + members + "]}"
    let call = #"{"type":"call","instance":"i0","start":0,"latency":1,"outcome":"success"}"#
    return [header, set, call].joined(separator: "\n")
}()
